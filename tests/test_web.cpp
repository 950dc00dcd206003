// The tile server over real HTTP on loopback: routes, headers, errors, admission, shutdown.
#include "common/loopback_server.hpp"
#include "common/stb_decode.hpp"
#include "web/wire.hpp"

#include <cstdio>
#include <cstdlib>
#include <doctest/doctest.h>
#include <future>
#include <optional>
#include <string>
#include <string_view>
#include <unistd.h>

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
      {"/tile/121/0/0.png", 400, "zoom"},
      {"/tile/200/0/0.png", 400, "zoom"},
      {"/tile/70/1180591620717411303424/0.png", 400, "outside zoom"},
      {"/tile/80/01/0.png", 400, "x"},
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
      {"/tile/1/0/0.png?precision=masked:0.99", 400, "masked:E.M (E 2..11, M 1..52)"},
      {"/tile/1/0/0.png?precision=fixed:3.3", 400, "fixed:I.F"},
      {"/tile/1/0/0.png?precision=posit7", 400, "posit8, posit16, posit32"},
      {"/tile/1/0/0.png?ref=2", 400, "ref"},
      // A format's cost bounds iter x size^2: mp at 4096 bits is far slower than f64.
      {"/tile/1/0/0.png?precision=mp:4096&iter=60000&size=256", 400, "per-tile bound"},
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
  // The response can precede the executor's record of the job: submit_task fulfils the promise
  // inside the job, and the executor counts it (and writes its trace event) after the job
  // returns. On a loaded machine that gap spans several requests.
  REQUIRE(eventually([&] { return s.server.executor(ExecutorKind::Tbb).stats().completed == 1; }));
  auto health = c.Get("/healthz");
  REQUIRE(health);
  CHECK(health->status == 200);
  auto stats = c.Get("/api/stats");
  REQUIRE(stats);
  for (const char *field : {"\"io\"", "\"idle_while_waiting_seconds\"", "\"name\":\"tbb\"",
                            "\"io_threads\":16", "\"completed\":1", "\"accepted\":1",
                            "\"refused\":0", "\"cpu_seconds\":[", "\"runq_seconds\":"})
    CHECK_MESSAGE(stats->body.find(field) != std::string::npos,
                  (std::string(field) + " in " + stats->body));
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

// ---- Caching that a tile service needs (issue 13) ----

namespace {

ServerOptions service(int workers = 2) {
  ServerOptions o = small(workers);
  o.cache_bytes = 1 << 20;
  o.coalesce = true;
  return o;
}

/// Tile jobs accepted by all executors together.
std::uint64_t accepted(LoopbackServer &s) {
  std::uint64_t n = 0;
  for (const ExecutorKind k : all_executor_kinds())
    n += s.server.executor(k).stats().accepted;
  return n;
}

/// The integer after "KEY": in a JSON or exposition text, or nullopt.
std::optional<std::uint64_t> number_after(const std::string &text, const std::string &key) {
  const auto at = text.find(key);
  if (at == std::string::npos) return std::nullopt;
  return std::strtoull(text.c_str() + at + key.size(), nullptr, 10);
}

} // namespace

TEST_CASE("Web.TileHasAStrongETagStableAcrossExecutors" * doctest::timeout(60)) {
  LoopbackServer s(small()); // cache and coalescing off: every request renders
  auto c = s.client();
  std::string etag;
  for (const char *ex : {"inline", "tbb", "pool"}) {
    CAPTURE(ex);
    auto r = c.Get(std::string("/tile/2/1/2.png?iter=300&size=32&executor=") + ex);
    REQUIRE(r);
    REQUIRE(r->status == 200);
    CHECK(r->get_header_value("X-Overdrive-Executor") == ex);
    CHECK(r->get_header_value("Cache-Control") == "public, max-age=31536000, immutable");
    const std::string e = r->get_header_value("ETag");
    CHECK(e.size() > 2);
    CHECK(e.front() == '"'); // strong: no W/
    CHECK(e.back() == '"');
    if (etag.empty()) etag = e;
    CHECK(e == etag);
  }
  // Everything that changes the bytes changes the ETag.
  for (const char *other :
       {"/tile/2/1/1.png?iter=300&size=32", "/tile/2/1/2.png?iter=301&size=32",
        "/tile/2/1/2.png?iter=300&size=64", "/tile/2/1/2.png?iter=300&size=32&palette=fire",
        "/tile/2/1/2.png?iter=300&size=32&precision=f32"}) {
    CAPTURE(other);
    auto r = c.Get(other);
    REQUIRE(r);
    CHECK(r->get_header_value("ETag") != etag);
  }
  // Errors carry neither.
  auto bad = c.Get("/tile/2/1/2.png?iter=0");
  REQUIRE(bad);
  CHECK_FALSE(bad->has_header("ETag"));
  CHECK_FALSE(bad->has_header("Cache-Control"));
}

TEST_CASE("Web.IfNoneMatchGets304WithoutAnExecutorJob" * doctest::timeout(60)) {
  LoopbackServer s(small());
  auto c = s.client();
  const std::string path = "/tile/3/2/3.png?iter=200&size=32";
  auto first = c.Get(path);
  REQUIRE(first);
  REQUIRE(first->status == 200);
  const std::string etag = first->get_header_value("ETag");
  REQUIRE_FALSE(etag.empty());
  const std::uint64_t jobs = accepted(s);
  for (const std::string &inm : {etag, "\"other\", W/" + etag, std::string("*")}) {
    for (const char *ex : {"pool", "inline"}) { // inline takes no seat for it either
      CAPTURE(inm);
      CAPTURE(ex);
      auto r = c.Get(path + "&executor=" + ex, {{"If-None-Match", inm}});
      REQUIRE(r);
      CHECK(r->status == 304);
      CHECK(r->body.empty());
      CHECK(r->get_header_value("ETag") == etag);
      CHECK(r->get_header_value("Cache-Control") == "public, max-age=31536000, immutable");
      CHECK(r->get_header_value("X-Overdrive-Cache") == "not-modified");
    }
  }
  CHECK(accepted(s) == jobs);
  // A stale ETag gets the tile, rendered.
  auto stale = c.Get(path, {{"If-None-Match", "\"r0:3/2/3:32:200:classic:f64\""}});
  REQUIRE(stale);
  CHECK(stale->status == 200);
  CHECK(stale->body == first->body);
  CHECK(accepted(s) == jobs + 1);
  auto stats = c.Get("/api/stats");
  REQUIRE(stats);
  CHECK(number_after(stats->body, "\"not_modified\":") == 6);
  auto metrics = c.Get("/metrics");
  REQUIRE(metrics);
  CHECK(number_after(metrics->body, "\noverdrive_tile_not_modified_total ") == 6);
  CHECK(number_after(metrics->body, "overdrive_http_responses_total{code=\"3xx\"} ") == 6);
}

TEST_CASE("Web.NonceBypassesEveryCache" * doctest::timeout(60)) {
  ServerOptions o = service();
  o.work = {WorkSpec::Kind::Sleep, 300};
  LoopbackServer s(o);
  const std::string path = "/tile/1/0/1.png?iter=100&size=16";
  auto plain = s.client().Get(path);
  REQUIRE(plain);
  const std::string etag = plain->get_header_value("ETag");
  const std::uint64_t jobs = accepted(s);
  // Cached, and an If-None-Match that would match: a nonce still renders, every time, and the
  // answer is neither cacheable nor revalidatable.
  for (int i = 0; i < 2; ++i) {
    auto r = s.client().Get(path + "&nonce=lab", {{"If-None-Match", etag}});
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->body == plain->body);
    CHECK_FALSE(r->has_header("ETag"));
    CHECK(r->get_header_value("Cache-Control") == "no-store");
    CHECK(r->get_header_value("X-Overdrive-Cache") == "bypass");
    CHECK(timing_ms(r->get_header_value("Server-Timing"), wire::timing::render).has_value());
  }
  CHECK(accepted(s) == jobs + 2);
  // Concurrent nonce requests for one tile do not coalesce either.
  auto a = std::async(std::launch::async, [&] { return s.client().Get(path + "&nonce=a"); });
  auto b = std::async(std::launch::async, [&] { return s.client().Get(path + "&nonce=a"); });
  REQUIRE(a.get());
  REQUIRE(b.get());
  CHECK(accepted(s) == jobs + 4);
  auto stats = s.client().Get("/api/stats");
  REQUIRE(stats);
  CHECK(number_after(stats->body, "\"coalesced\":") == 0);
  CHECK(number_after(stats->body, "\"hits\":") == 0);
  CHECK(number_after(stats->body, "\"entries\":") == 1); // the plain request's tile only
}

TEST_CASE("Web.ConcurrentIdenticalTilesRenderOnce" * doctest::timeout(60)) {
  ServerOptions o = service();
  o.cache_bytes = 0; // coalescing alone, no cache to hide behind
  o.work = {WorkSpec::Kind::Sleep, 1000};
  LoopbackServer s(o);
  constexpr int n = 8;
  // Any executor: the bytes are the same, so a tile service renders them once.
  const char *executors[] = {"pool", "tbb", "inline"};
  std::vector<std::future<httplib::Result>> replies;
  for (int i = 0; i < n; ++i)
    replies.push_back(std::async(std::launch::async, [&s, ex = executors[i % 3]] {
      return s.client().Get(std::string("/tile/2/2/1.png?iter=64&size=32&executor=") + ex);
    }));
  std::vector<httplib::Result> got;
  for (auto &f : replies)
    got.push_back(f.get());
  int rendered = 0, waited = 0;
  for (const auto &r : got) {
    REQUIRE(r);
    REQUIRE(r->status == 200);
    CHECK(r->body == got.front()->body);
    CHECK(test::decode_png(bytes(r->body)).width == 32);
    const std::string timing = r->get_header_value("Server-Timing");
    CAPTURE(timing);
    const auto co = timing_ms(timing, wire::timing::coalesced);
    if (co) {
      ++waited;
      CHECK(r->get_header_value("X-Overdrive-Cache") == "coalesced");
      CHECK_FALSE(timing_ms(timing, wire::timing::render)); // it rendered nothing itself
      CHECK(timing.find("desc=\"waited for an identical tile\"") != std::string::npos);
    } else {
      ++rendered;
      CHECK(r->get_header_value("X-Overdrive-Cache") == "miss");
      CHECK(*timing_ms(timing, wire::timing::render) >= 1000.0);
    }
    CHECK_FALSE(r->get_header_value("ETag").empty());
  }
  CHECK(rendered == 1);
  CHECK(waited == n - 1);
  CHECK(accepted(s) == 1);
  auto stats = s.client().Get("/api/stats");
  REQUIRE(stats);
  CHECK(number_after(stats->body, "\"coalesced\":") == n - 1);
  auto metrics = s.client().Get("/metrics");
  REQUIRE(metrics);
  CHECK(number_after(metrics->body, "\noverdrive_tile_coalesced_total ") == n - 1);
  // The flight has landed: the next request renders again (no cache here).
  auto again = s.client().Get("/tile/2/2/1.png?iter=64&size=32");
  REQUIRE(again);
  CHECK(again->get_header_value("X-Overdrive-Cache") == "miss");
  CHECK(accepted(s) == 2);
}

TEST_CASE("Web.CacheHitIsAnsweredWithoutAJob" * doctest::timeout(60)) {
  ServerOptions o = service();
  o.coalesce = false;
  LoopbackServer s(o);
  auto c = s.client();
  const std::string path = "/tile/4/3/5.png?iter=150&size=48&palette=ocean";
  auto miss = c.Get(path);
  REQUIRE(miss);
  REQUIRE(miss->status == 200);
  CHECK(miss->get_header_value("X-Overdrive-Cache") == "miss");
  const std::uint64_t jobs = accepted(s);
  for (const char *ex : {"pool", "inline", "tbb"}) {
    CAPTURE(ex);
    auto hit = c.Get(path + "&executor=" + ex);
    REQUIRE(hit);
    CHECK(hit->status == 200);
    CHECK(hit->body == miss->body);
    CHECK(hit->get_header_value("Content-Type") == "image/png");
    CHECK(hit->get_header_value("X-Overdrive-Cache") == "hit");
    CHECK(hit->get_header_value("ETag") == miss->get_header_value("ETag"));
    const std::string timing = hit->get_header_value("Server-Timing");
    CHECK_MESSAGE(timing.find("cache;desc=\"hit\"") != std::string::npos, timing);
    CHECK_FALSE(timing_ms(timing, wire::timing::render));
  }
  CHECK(accepted(s) == jobs);
  auto head = c.Head(path);
  REQUIRE(head);
  CHECK(head->status == 200);
  CHECK(head->body.empty());
  CHECK(head->get_header_value("Content-Length") == std::to_string(miss->body.size()));
  auto stats = c.Get("/api/stats");
  REQUIRE(stats);
  CHECK(number_after(stats->body, "\"hits\":") == 4);
  CHECK(number_after(stats->body, "\"misses\":") == 1);
  CHECK(number_after(stats->body, "\"entries\":") == 1);
  CHECK(number_after(stats->body, "\"capacity_bytes\":") == 1 << 20);
  auto metrics = c.Get("/metrics");
  REQUIRE(metrics);
  CHECK(number_after(metrics->body, "\noverdrive_tile_cache_hits_total ") == 4);
  CHECK(number_after(metrics->body, "\noverdrive_tile_cache_misses_total ") == 1);
}

TEST_CASE("Web.HistogramCountsMatchTheTilesServed" * doctest::timeout(60)) {
  ServerOptions o = service();
  LoopbackServer s(o);
  auto c = s.client();
  const std::pair<std::string, int> served[] = {{"pool", 3}, {"tbb", 2}, {"inline", 1}};
  int y = 0; // a different tile each time: all rendered
  for (const auto &[ex, n] : served)
    for (int i = 0; i < n; ++i) {
      auto r = c.Get("/tile/3/1/" + std::to_string(y++) + ".png?iter=50&size=16&executor=" + ex);
      REQUIRE(r);
      REQUIRE(r->status == 200);
      REQUIRE(r->get_header_value("X-Overdrive-Cache") == "miss");
    }
  // A hit and a 304 are not rendered tiles: they are counted by the cache counters instead.
  auto hit = c.Get("/tile/3/1/0.png?iter=50&size=16");
  REQUIRE(hit);
  REQUIRE(hit->get_header_value("X-Overdrive-Cache") == "hit");
  auto metrics = c.Get("/metrics");
  REQUIRE(metrics);
  const std::string &m = metrics->body;
  for (const char *phase : {"io", "queue", "render", "encode", "total"}) {
    const std::string name = std::string("overdrive_tile_") + phase + "_seconds";
    CHECK(m.find("# TYPE " + name + " histogram") != std::string::npos);
    for (const auto &[ex, n] : served) {
      CAPTURE(name);
      CAPTURE(ex);
      const std::string label = "{executor=\"" + ex + "\"";
      CHECK(number_after(m, name + "_count" + label + "} ") == static_cast<std::uint64_t>(n));
      CHECK(number_after(m, name + "_bucket" + label + ",le=\"+Inf\"} ") ==
            static_cast<std::uint64_t>(n));
      CHECK(m.find(name + "_bucket" + label + ",le=\"0.0005\"} ") != std::string::npos);
      CHECK(m.find(name + "_bucket" + label + ",le=\"30\"} ") != std::string::npos);
      CHECK(m.find(name + "_sum" + label + "} ") != std::string::npos);
    }
  }
  // Every tile here renders in far less than 30 s: all in the 30 s bucket.
  CHECK(number_after(m, "overdrive_tile_total_seconds_bucket{executor=\"pool\",le=\"30\"} ") == 3);
}

// promtool (Debian package prometheus) checks the exposition, histograms included, after tiles
// of every kind: rendered, hit, coalesced, 304.
TEST_CASE("Web.MetricsPassPromtoolCheck" * doctest::timeout(60)) {
  const char *promtool = "/usr/bin/promtool";
  REQUIRE_MESSAGE(::access(promtool, X_OK) == 0,
                  "promtool not found: install the Debian package 'prometheus' "
                  "(apt-get install -y prometheus), which ships /usr/bin/promtool");
  LoopbackServer s(service());
  auto c = s.client();
  for (const char *ex : {"pool", "tbb", "inline"})
    REQUIRE(c.Get(std::string("/tile/2/0/0.png?iter=40&size=16&executor=") + ex));
  auto r = c.Get("/tile/2/0/0.png?iter=40&size=16");
  REQUIRE(r);
  REQUIRE(
      c.Get("/tile/2/0/0.png?iter=40&size=16", {{"If-None-Match", r->get_header_value("ETag")}}));
  auto metrics = c.Get("/metrics");
  REQUIRE(metrics);
  char path[] = "/tmp/overdrive-metrics-XXXXXX";
  const int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  const bool written = ::write(fd, metrics->body.data(), metrics->body.size()) ==
                       static_cast<ssize_t>(metrics->body.size());
  ::close(fd);
  std::string out;
  int status = -1;
  if (written) {
    const std::string cmd =
        std::string("timeout 30 ") + promtool + " check metrics < " + path + " 2>&1";
    if (FILE *p = ::popen(cmd.c_str(), "r")) {
      char buf[512];
      while (std::fgets(buf, sizeof buf, p))
        out += buf;
      status = ::pclose(p);
    }
  }
  ::unlink(path);
  REQUIRE(written);
  CHECK_MESSAGE(status == 0, out);
  CHECK_MESSAGE(out.empty(), out); // lint findings are printed even when the exit code is 0
}

// stop() right after start() used to leave the listener blocked in accept() for good when the
// listener thread had not yet marked the server running (cpp-httplib then skips closing it).
TEST_CASE("Web.StopRightAfterStartReturns" * doctest::timeout(60)) {
  for (int i = 0; i < 50; ++i) {
    ServerOptions o = small(1);
    o.port = 0;
    o.access_log = false;
    TileServer server(o);
    server.start();
    server.stop();
  }
}

TEST_CASE("Web.FormatTilesNameTheirFormatAndDisagreement" * doctest::timeout(120)) {
  LoopbackServer s(small());
  auto c = s.client();
  // A zoom-60 tile (x, y beyond 32 bits) near the boundary: auto resolves to dd there.
  const std::string deep = "/tile/60/" + to_string((TileIndex{1} << 59) + 123456789) + "/" +
                           to_string((TileIndex{1} << 57) + 987654321) + ".png?size=32&iter=300";
  auto a = c.Get(deep + "&precision=auto");
  REQUIRE(a);
  CHECK(a->status == 200);
  CHECK(a->get_header_value(std::string(wire::header::precision)) == "dd");
  CHECK_FALSE(a->has_header(std::string(wire::header::disagreement)));
  // The same tile named explicitly: the same bytes.
  auto d = c.Get(deep + "&precision=dd");
  REQUIRE(d);
  CHECK(d->body == a->body);
  // A software format's tile equals the library's pixels for the same exact tile.
  auto m = c.Get("/tile/5/10/9.png?size=32&iter=200&precision=masked:4.20");
  REQUIRE(m);
  CHECK(m->status == 200);
  CHECK(m->get_header_value(std::string(wire::header::precision)) == "masked:4.20");
  RenderRequest r;
  r.view = tile_viewport({5, 10, 9}, 32);
  r.exact = tile_exact_view({5, 10, 9});
  r.max_iter = 200;
  r.precision = Precision::masked(4, 20);
  CHECK(bytes(m->body) == encode_png(render_image(r)));
  // ref=1: the reference for the depth and the fraction of pixels unlike it, always rendered.
  auto shallow = c.Get("/tile/2/1/1.png?size=32&iter=200&ref=1");
  REQUIRE(shallow);
  CHECK(shallow->get_header_value(std::string(wire::header::precision)) == "f64");
  CHECK(shallow->get_header_value(std::string(wire::header::reference)) == "dd");
  CHECK(std::stod(shallow->get_header_value(std::string(wire::header::disagreement))) < 0.05);
  CHECK(shallow->get_header_value("Cache-Control") == "no-store");
  // Around the Misiurewicz point i at zoom 62, f64 sees one interior point: most pixels differ.
  // (c = i lies at re 2.5 / 4 * 2^62, im 1 / 4 * 2^62 tiles from the top left.)
  const TileIndex x = (TileIndex{5} << 59) - 1, y = (TileIndex{1} << 60) - 1;
  auto f64 = c.Get("/tile/62/" + to_string(x) + "/" + to_string(y) +
                   ".png?size=32&iter=1000&precision=f64&ref=1");
  REQUIRE(f64);
  CHECK(f64->status == 200);
  CHECK(f64->get_header_value(std::string(wire::header::reference)) == "dd");
  CHECK(std::stod(f64->get_header_value(std::string(wire::header::disagreement))) > 0.5);
  // /api/stats: the menu names and the grammar.
  auto stats = c.Get("/api/stats");
  REQUIRE(stats);
  for (const char *field : {"\"precisions\":[\"f64\",\"f32\",\"dd\"", "\"posit16\"",
                            "\"masked:4.50\"", "\"fixed:11.5\"", "\"precision_forms\":[",
                            "\"masked:E.M (E 2..11, M 1..52)\"", "\"mp:BITS"})
    CHECK_MESSAGE(stats->body.find(field) != std::string::npos,
                  (std::string(field) + " in " + stats->body));
}
