// The tile server over real HTTP on loopback: routes, headers, errors, admission, shutdown.
#include "common/loopback_server.hpp"
#include "common/stb_decode.hpp"
#include "web/wire.hpp"

#include <cstdlib>
#include <doctest/doctest.h>
#include <future>
#include <optional>
#include <string>
#include <string_view>

using namespace overdrive;
using overdrive::test::eventually;
using overdrive::test::LoopbackServer;

namespace {

std::vector<std::uint8_t> bytes(const std::string &s) {
  return {s.begin(), s.end()};
}

ServerOptions small(int workers = 2) {
  ServerOptions o;
  o.workers = workers;
  o.io_threads = 16;
  return o;
}

/// The dur of one Server-Timing metric (ms), or nullopt if the header lacks it.
std::optional<double> timing_ms(const std::string &header, std::string_view name) {
  const std::string key = std::string(name) + ";dur=";
  for (std::size_t at = header.find(key); at != std::string::npos; at = header.find(key, at + 1))
    if (at == 0 || header[at - 1] == ' ' || header[at - 1] == ',')
      return std::strtod(header.c_str() + at + key.size(), nullptr);
  return std::nullopt;
}

} // namespace

TEST_CASE("Web.TileIsAPngWithServerTiming" * doctest::timeout(60)) {
  LoopbackServer s(small());
  auto c = s.client();
  auto res = c.Get("/tile/2/1/1.png?iter=300&size=64");
  REQUIRE(res);
  CHECK(res->status == 200);
  CHECK(res->get_header_value("Content-Type") == "image/png");
  const std::string timing = res->get_header_value("Server-Timing");
  for (const char *metric : {"queue;dur=", "render;dur=", "encode;dur=", "io;dur="})
    CHECK_MESSAGE(timing.find(metric) != std::string::npos, timing);
  CHECK(res->get_header_value("X-Overdrive-Executor") == "pool");
  const int worker = std::stoi(res->get_header_value("X-Overdrive-Worker"));
  CHECK(worker >= 0);
  CHECK(worker < 2);
  const auto d = test::decode_png(bytes(res->body));
  CHECK(d.width == 64);
  CHECK(d.height == 64);
}

// cpu and runq are parts of render: CPU time cannot exceed render's wall time on one thread (the
// server does not split here), and a synthetic sleep is in render but not in cpu. runq is there
// exactly when the kernel reports it (absent, never 0, otherwise).
TEST_CASE("Web.TileServerTimingHasCpuAndRunq" * doctest::timeout(60)) {
  ServerOptions o = small();
  o.work = {WorkSpec::Kind::Sleep, 40};
  LoopbackServer s(o);
  auto c = s.client();
  const bool kernel_reports = this_thread_cpu_times().runq_ns.has_value();
  for (const char *ex : {"inline", "tbb", "pool"}) {
    CAPTURE(ex);
    auto res = c.Get(std::string("/tile/2/1/1.png?iter=2000&size=128&executor=") + ex);
    REQUIRE(res);
    REQUIRE(res->status == 200);
    const std::string timing = res->get_header_value("Server-Timing");
    CAPTURE(timing);
    const auto render = timing_ms(timing, wire::timing::render);
    const auto cpu = timing_ms(timing, wire::timing::cpu);
    const auto runq = timing_ms(timing, wire::timing::runq);
    REQUIRE(render);
    REQUIRE(cpu);
    CHECK(*cpu > 0.0);
    CHECK(*cpu <= *render + 0.01); // epsilon: the header's 3 decimals
    CHECK(*render >= 40.0);
    CHECK(*cpu <= *render - 30.0); // the 40 ms sleep is not CPU time
    CHECK(runq.has_value() == kernel_reports);
    if (runq) {
      CHECK(*runq >= 0.0);
      CHECK(*runq <= *render + 0.01);
    }
  }
}

TEST_CASE("Web.TileMatchesTheRenderer" * doctest::timeout(60)) {
  LoopbackServer s(small());
  auto c = s.client();
  auto res = c.Get("/tile/3/2/3.png?iter=200&size=32&palette=fire");
  REQUIRE(res);
  RenderRequest r;
  r.view = tile_viewport({3, 2, 3}, 32);
  r.max_iter = 200;
  r.palette = Palette::Fire;
  CHECK(test::decode_png(bytes(res->body)).pixels == render_image(r).rgb);
}

TEST_CASE("Web.EveryExecutorServesTheSameBytes" * doctest::timeout(60)) {
  LoopbackServer s(small());
  auto c = s.client();
  std::string first;
  for (const char *ex : {"inline", "tbb", "pool"}) {
    CAPTURE(ex);
    auto res = c.Get(std::string("/tile/2/1/2.png?iter=400&size=64&executor=") + ex);
    REQUIRE(res);
    CHECK(res->status == 200);
    CHECK(res->get_header_value("X-Overdrive-Executor") == ex);
    if (first.empty()) first = res->body;
    CHECK(res->body == first);
  }
}

TEST_CASE("Web.BadRequestsGet4xxWithAReason" * doctest::timeout(60)) {
  LoopbackServer s(small());
  auto c = s.client();
  struct Case {
    std::string path;
    int status;
    std::string says;
  };
  const Case cases[] = {
      {"/tile/2/4/0.png", 400, "outside zoom"},
      {"/tile/2/0/4.png", 400, "outside zoom"},
      {"/tile/41/0/0.png", 400, "zoom"},
      {"/tile/64/0/0.png", 400, "zoom"},
      {"/tile/3/1180591620717411303424/0.png", 400, "x"},
      {"/tile/-1/0/0.png", 400, "zoom"},
      {"/tile/a/0/0.png", 400, "zoom"},
      {"/tile/1/0/0", 400, "expected /tile/Z/X/Y.png"},
      {"/tile/1/0.png", 400, "expected /tile/Z/X/Y.png"},
      {"/tile/1/0/0/0.png", 400, "expected /tile/Z/X/Y.png"},
      {"/tile/1/0/0.jpg", 400, "expected"},
      {"/tile/1/0/0.png?iter=0", 400, "iter"},
      {"/tile/1/0/0.png?iter=-5", 400, "iter"},
      {"/tile/1/0/0.png?iter=100001", 400, "iter"},
      {"/tile/1/0/0.png?iter=1e3", 400, "iter"},
      {"/tile/1/0/0.png?size=0", 400, "size"},
      {"/tile/1/0/0.png?size=5000", 400, "size"},
      {"/tile/1/0/0.png?size=1024&iter=100000", 400, "budget"},
      {"/tile/1/0/0.png?palette=plaid", 400, "palette"},
      {"/tile/1/0/0.png?precision=f16", 400, "precision"},
      {"/tile/1/0/0.png?executor=gpu", 400, "inline, tbb, pool"},
      {"/tile/1/0/0.png?bogus=1", 400, "unknown parameter"},
      {"/tile/1/0/0.png?iter=10&iter=20", 400, "more than once"},
      {"/api/trace?since=-1", 400, "since"},
      {"/api/trace?executor=gpu", 400, "executor"},
      {"/no/such/path", 404, "no such path"},
  };
  for (const auto &k : cases) {
    CAPTURE(k.path);
    auto res = c.Get(k.path);
    REQUIRE(res);
    CHECK(res->status == k.status);
    CHECK(res->body.find(k.says) != std::string::npos);
    CHECK(std::count(res->body.begin(), res->body.end(), '\n') == 1); // one line
  }
  auto post = c.Post("/tile/1/0/0.png", "", "text/plain");
  REQUIRE(post);
  CHECK(post->status == 405);
  // And a normal tile right after.
  auto ok = c.Get("/tile/1/0/0.png?iter=50&size=32");
  REQUIRE(ok);
  CHECK(ok->status == 200);
}

TEST_CASE("Web.StatsTraceMetricsAndHealth" * doctest::timeout(60)) {
  LoopbackServer s(small());
  auto c = s.client();
  REQUIRE(c.Get("/tile/1/1/1.png?iter=100&size=32&executor=tbb"));
  auto health = c.Get("/healthz");
  REQUIRE(health);
  CHECK(health->status == 200);
  auto stats = c.Get("/api/stats");
  REQUIRE(stats);
  for (const char *field : {"\"io\"", "\"idle_while_waiting_seconds\"", "\"name\":\"tbb\"",
                            "\"io_threads\":16", "\"completed\":1", "\"accepted\":1",
                            "\"refused\":0", "\"cpu_seconds\":[", "\"runq_seconds\":"})
    CHECK_MESSAGE(stats->body.find(field) != std::string::npos, field);
  const bool kernel_reports = this_thread_cpu_times().runq_ns.has_value();
  CHECK((stats->body.find("\"runq_seconds\":[") != std::string::npos) == kernel_reports);
  auto trace = c.Get("/api/trace?executor=tbb&since=0");
  REQUIRE(trace);
  CHECK(trace->body.find("\"label\":\"1/1/1\"") != std::string::npos);
  CHECK(trace->body.find("\"cpu_ns\":") != std::string::npos);
  CHECK((trace->body.find("\"runq_ns\":null") == std::string::npos) == kernel_reports);
  auto none = c.Get("/api/trace?executor=tbb&since=1");
  REQUIRE(none);
  CHECK(none->body.find("\"events\":[]") != std::string::npos);
  auto metrics = c.Get("/metrics");
  REQUIRE(metrics);
  CHECK(metrics->body.find("overdrive_jobs_completed_total{executor=\"tbb\"} 1") !=
        std::string::npos);
  CHECK(metrics->body.find("# TYPE overdrive_idle_while_waiting_seconds_total counter") !=
        std::string::npos);
  auto page = c.Get("/");
  REQUIRE(page);
  CHECK(page->body.find("Fractal Overdrive") != std::string::npos);
}

TEST_CASE("Web.FullQueueGets429WithRetryAfterAtOnce" * doctest::timeout(60)) {
  ServerOptions o = small(1);
  o.queue_limit = 1;
  o.work = {WorkSpec::Kind::Sleep, 3000};
  LoopbackServer s(o);
  // One tile runs, one waits: the queue is full.
  auto a = std::async(std::launch::async,
                      [&] { return s.client().Get("/tile/0/0/0.png?size=16&iter=10"); });
  REQUIRE(eventually([&] { return s.server.executor(ExecutorKind::Pool).stats().busy == 1; }));
  auto b = std::async(std::launch::async,
                      [&] { return s.client().Get("/tile/0/0/0.png?size=16&iter=11"); });
  REQUIRE(eventually([&] { return s.server.executor(ExecutorKind::Pool).stats().queued == 1; }));
  const auto t0 = std::chrono::steady_clock::now();
  auto c = s.client().Get("/tile/0/0/0.png?size=16&iter=12");
  const auto waited = std::chrono::steady_clock::now() - t0;
  REQUIRE(c);
  CHECK(c->status == 429);
  CHECK(c->has_header("Retry-After"));
  CHECK(std::stoi(c->get_header_value("Retry-After")) >= 1);
  // "At once": well before the running tile could have finished.
  CHECK(waited < std::chrono::milliseconds(2500));
  auto ra = a.get();
  auto rb = b.get();
  REQUIRE(ra);
  REQUIRE(rb);
  CHECK(ra->status == 200);
  CHECK(rb->status == 200);
  CHECK(s.server.executor(ExecutorKind::Pool).stats().refused == 1);
}

TEST_CASE("Web.GracefulStopDeliversTheTileInFlight" * doctest::timeout(60)) {
  ServerOptions o = small(1);
  o.work = {WorkSpec::Kind::Sleep, 800};
  auto s = std::make_unique<LoopbackServer>(o);
  auto inflight =
      std::async(std::launch::async, [&] { return s->client().Get("/tile/0/0/0.png?size=16"); });
  REQUIRE(eventually([&] { return s->server.executor(ExecutorKind::Pool).stats().busy == 1; }));
  s->server.stop();
  auto r = inflight.get();
  REQUIRE(r);
  CHECK(r->status == 200);
  CHECK(test::decode_png(bytes(r->body)).width == 16);
  // After stop the port no longer accepts.
  auto after = s->client().Get("/healthz");
  CHECK_FALSE(after);
}

TEST_CASE("Web.WorkSpecParses") {
  CHECK(parse_work_spec("sleep:2000") == WorkSpec{WorkSpec::Kind::Sleep, 2000});
  CHECK(parse_work_spec("spin:5") == WorkSpec{WorkSpec::Kind::Spin, 5});
  CHECK(parse_work_spec("none") == WorkSpec{});
  CHECK_FALSE(parse_work_spec("sleep:-1"));
  CHECK_FALSE(parse_work_spec("sleep:60001"));
  CHECK_FALSE(parse_work_spec("nap:5"));
  CHECK_FALSE(parse_work_spec("sleep"));
}

TEST_CASE("Web.EveryResponseNamesItsReplica" * doctest::timeout(60)) {
  SUBCASE("default host:port") {
    LoopbackServer s(small());
    auto c = s.client();
    for (const char *path : {"/tile/0/0/0.png?size=16&iter=8", "/healthz", "/no-such-path"}) {
      auto r = c.Get(path);
      REQUIRE(r);
      CHECK_MESSAGE(r->get_header_value("X-Overdrive-Replica") ==
                        "127.0.0.1:" + std::to_string(s.port),
                    path);
    }
  }
  SUBCASE("named") {
    ServerOptions o = small();
    o.replica_id = "r7";
    LoopbackServer s(o);
    auto r = s.client().Get("/api/stats");
    REQUIRE(r);
    CHECK(r->get_header_value("X-Overdrive-Replica") == "r7");
    CHECK(r->body.find("\"replica\":\"r7\"") != std::string::npos);
  }
}
