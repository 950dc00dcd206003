// Replicas behind real balancers (HAProxy 2.6, nginx 1.22) on loopback, configured from the
// templates in web/deploy/: tiles arrive with the replica's name, HAProxy's queue hands each tile
// to the first free worker of the cluster, and a replica that dies (SIGKILL) or stops (SIGTERM)
// in the middle of a burst loses no tile. A missing balancer binary fails the test and names the
// Debian package to install.
#include "common/cluster.hpp"

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <future>
#include <map>
#include <set>

using namespace overdrive::test;
using namespace std::chrono_literals;
using SteadyClock = std::chrono::steady_clock;

namespace {

/// The answer to one tile request through the balancer.
struct TileResult {
  int status = 0;          ///< 0: no HTTP answer at all
  std::string replica;     ///< X-Overdrive-Replica (any case: HAProxy sends it lower-case)
  std::string retry_after; ///< Retry-After
  double seconds = 0;      ///< from the burst's start to the complete answer
  std::string error;       ///< httplib's error when there was no answer
};

/// A distinct tile per index, with a nonce unique to this process and call, so that no cache
/// (nginx's or a replica's) can answer it.
std::string tile_path(int i) {
  static std::atomic<int> calls{0};
  return "/tile/4/" + std::to_string(i % 16) + "/" + std::to_string(i / 16 % 16) +
         ".png?size=16&iter=10&nonce=t" + std::to_string(::getpid()) + "-" +
         std::to_string(calls++);
}

TileResult get_tile(const Cluster &c, const std::string &path, SteadyClock::time_point t0) {
  auto cli = c.client();
  const auto r = cli.Get(path);
  TileResult out;
  out.seconds = std::chrono::duration<double>(SteadyClock::now() - t0).count();
  if (!r) {
    out.error = httplib::to_string(r.error());
    return out;
  }
  out.status = r->status;
  out.replica = r->get_header_value("X-Overdrive-Replica");
  out.retry_after = r->get_header_value("Retry-After");
  return out;
}

/// n tiles requested at once, each on its own connection; returns when all have answered.
std::vector<TileResult> burst(const Cluster &c, int n, int first_tile = 0) {
  const auto t0 = SteadyClock::now();
  std::vector<std::future<TileResult>> fs;
  for (int i = 0; i < n; ++i)
    fs.push_back(std::async(std::launch::async, [&c, t0, path = tile_path(first_tile + i)] {
      return get_tile(c, path, t0);
    }));
  std::vector<TileResult> out;
  for (auto &f : fs)
    out.push_back(f.get()); // each request is bounded by the client's timeouts
  return out;
}

void check_all_ok(const std::vector<TileResult> &rs, const Cluster &c) {
  int ok = 0;
  for (const auto &r : rs) {
    INFO("status " << r.status << " replica '" << r.replica << "' " << r.error);
    CHECK(r.status == 200);
    CHECK(!r.replica.empty());
    ok += r.status == 200;
  }
  INFO(to_string(c.balancer()) << " log: " << c.balancer_log());
  CHECK(ok == static_cast<int>(rs.size()));
}

/// "busy" of the pool executor in a replica's /api/stats, or -1.
int pool_busy(const ReplicaProcess &r) {
  auto res = r.client().Get("/api/stats");
  if (!res || res->status != 200) return -1;
  const auto at = res->body.find("\"name\":\"pool\"");
  if (at == std::string::npos) return -1;
  const auto busy = res->body.find("\"busy\":", at);
  return busy == std::string::npos ? -1 : std::atoi(res->body.c_str() + busy + 7);
}

void tiles_carry_the_replica(Balancer b) {
  CAPTURE(to_string(b));
  Cluster c(b, 2, 1, {});
  std::map<std::string, int> seen;
  for (int i = 0; i < 8; ++i) {
    const auto r = get_tile(c, tile_path(i), SteadyClock::now());
    INFO(r.error);
    CHECK(r.status == 200);
    ++seen[r.replica];
  }
  CHECK(seen.size() == 2);
  CHECK(seen.count("r1") == 1);
  CHECK(seen.count("r2") == 1);
  // Each replica's own stats, trace and metrics through the balancer's /replica/<id>/ prefix.
  auto cli = c.client();
  for (const std::string id : {"r1", "r2"}) {
    CAPTURE(id);
    const auto stats = cli.Get("/replica/" + id + "/api/stats");
    REQUIRE(stats);
    CHECK(stats->status == 200);
    CHECK(stats->body.find("\"replica\":\"" + id + "\"") != std::string::npos);
    const auto trace = cli.Get("/replica/" + id + "/api/trace");
    REQUIRE(trace);
    CHECK(trace->status == 200);
    const auto metrics = cli.Get("/replica/" + id + "/metrics");
    REQUIRE(metrics);
    CHECK(metrics->status == 200);
    CHECK(metrics->body.find("# TYPE") != std::string::npos);
  }
  const auto unknown = cli.Get("/replica/r9/api/stats");
  REQUIRE(unknown);
  CHECK(unknown->status == 404);
  // The page through the balancer.
  const auto page = cli.Get("/");
  REQUIRE(page);
  CHECK(page->status == 200);
}

/// SIGKILL replica r1 while a 16-tile burst is in flight: every tile still arrives with 200.
/// Then r1 starts again on its port and, without a balancer reload, serves tiles again.
void kill_one_replica(Balancer b) {
  CAPTURE(to_string(b));
  Cluster c(b, 2, 1, {"--work", "sleep:150"});
  const pid_t balancer_pid = c.balancer_process().pid();
  auto pending = std::async(std::launch::async, [&c] { return burst(c, 16); });
  // Kill while r1 renders one of the burst's tiles (bounded: the burst takes >= 1.2 s).
  const bool r1_busy = eventually([&] { return pool_busy(c.replica(0)) == 1; }, 10s);
  c.replica(0).process().signal(SIGKILL);
  const auto results = pending.get();
  CHECK(r1_busy);
  check_all_ok(results, c);
  CHECK(c.replica(0).process().wait_exit(5s) == -1); // killed by the signal
  CHECK(c.balancer_process().running());

  // Back on the same port: the balancer sends it tiles again (health checks, or nginx's
  // fail_timeout) with no reload (same balancer process).
  c.restart(0);
  bool r1_again = false;
  int failed = 0;
  const auto until = SteadyClock::now() + 15s;
  while (!r1_again && SteadyClock::now() < until) {
    for (const auto &r : burst(c, 2)) {
      failed += r.status != 200;
      r1_again = r1_again || r.replica == "r1";
    }
  }
  CHECK(r1_again);
  CHECK(failed == 0);
  CHECK(c.balancer_process().running());
  CHECK(c.balancer_process().pid() == balancer_pid);
}

/// SIGTERM to replica r1 while it renders: its in-flight tile finishes with 200, tiles sent after
/// go to r2, and r1 exits 0.
void sigterm_drains_a_replica(Balancer b) {
  CAPTURE(to_string(b));
  Cluster c(b, 2, 1, {"--work", "sleep:600"});
  // Two tiles, one per replica (1 worker each, both balancers spread two concurrent requests).
  auto first = std::async(std::launch::async, [&c] { return burst(c, 2); });
  const bool both_busy =
      eventually([&] { return pool_busy(c.replica(0)) == 1 && pool_busy(c.replica(1)) == 1; }, 10s);
  CHECK(both_busy);
  c.replica(0).process().signal(SIGTERM);
  // Once r1 has taken the signal (its listener closes), it takes no new tile: they go to r2. A
  // request that reached r1 before that, e.g. on one of nginx's kept-alive connections, is still
  // served there, as it should be; so wait for the signal to land first.
  CHECK(eventually([&] { return !accepts_connections(c.replica(0).port()); }, 10s));
  const auto later = burst(c, 4, 100);
  const auto in_flight = first.get();
  check_all_ok(in_flight, c);
  std::set<std::string> in_flight_replicas;
  for (const auto &r : in_flight)
    in_flight_replicas.insert(r.replica);
  CHECK(in_flight_replicas == std::set<std::string>{"r1", "r2"}); // r1 finished its tile
  check_all_ok(later, c);
  for (const auto &r : later)
    CHECK(r.replica == "r2");
  CHECK(c.replica(0).process().wait_exit(15s) == 0);
}

} // namespace

TEST_CASE("Cluster.HaproxyTilesCarryTheReplicaHeader" * doctest::timeout(120)) {
  tiles_carry_the_replica(Balancer::haproxy);
}

TEST_CASE("Cluster.NginxTilesCarryTheReplicaHeader" * doctest::timeout(120)) {
  tiles_carry_the_replica(Balancer::nginx_rr);
  tiles_carry_the_replica(Balancer::nginx_least);
}

// The cluster-level "queue in front of N workers": 2 replicas x 1 worker, 3 tiles of 300 ms at
// once. Two render at once; the third waits in HAProxy's queue (not in a replica: both report
// busy 1, queued 0) and goes to the first replica that frees its worker. Bounds are generous:
// this checks behaviour, not speed.
TEST_CASE("Cluster.HaproxyQueueHandsEachTileToTheFirstFreeWorker" * doctest::timeout(120)) {
  Cluster c(Balancer::haproxy, 2, 1, {"--work", "sleep:300"});
  for (int round = 0; round < 3; ++round) {
    CAPTURE(round);
    auto pending = std::async(std::launch::async, [&c, round] { return burst(c, 3, 3 * round); });
    // The waiting tile is held by HAProxy: both replicas busy, neither has one queued. Polled:
    // an executor counts a job done just after its response went out, so for an instant after a
    // hand-over the next tile can read as queued behind the previous one.
    const std::string idle_queue = "\"name\":\"pool\",\"workers\":1,\"queue_limit\":0,\"queued\":0";
    auto busy_not_queued = [&](int r) {
      auto s = c.replica(r).client().Get("/api/stats");
      return s && pool_busy(c.replica(r)) == 1 && s->body.find(idle_queue) != std::string::npos;
    };
    const bool both_busy_none_queued =
        eventually([&] { return busy_not_queued(0) && busy_not_queued(1); }, 5s);
    // And still so 100 ms later, well inside the 300 ms tiles: the third tile stays in HAProxy.
    std::this_thread::sleep_for(100ms);
    const bool still = busy_not_queued(0) && busy_not_queued(1);
    auto rs = pending.get();
    CHECK(both_busy_none_queued);
    CHECK(still);
    check_all_ok(rs, c);
    std::sort(rs.begin(), rs.end(),
              [](const TileResult &a, const TileResult &b) { return a.seconds < b.seconds; });
    for (const auto &r : rs)
      MESSAGE("tile from " << r.replica << " after " << r.seconds << " s");
    CHECK(rs[0].replica != rs[1].replica); // the first two ran on both replicas at once
    CHECK(rs[1].seconds < rs[2].seconds);
    CHECK(rs[2].seconds >= 0.5); // waited for a worker: 2 x 300 ms
    CHECK(rs[2].seconds < 2.0);  // and got the first one that freed, not a later turn
  }
}

// A tile HAProxy cannot place is answered 429 with Retry-After, never a bare 503: at once when 32
// tiles already wait (the `queue(tiles)` rule), and (errorfile 503) when no replica is up.
TEST_CASE("Cluster.HaproxyShedsWith429AndRetryAfter" * doctest::timeout(120)) {
  Cluster c(Balancer::haproxy, 2, 1, {"--work", "sleep:300"});
  const auto rs = burst(c, 40);
  int ok = 0, shed = 0;
  for (const auto &r : rs) {
    INFO("status " << r.status << " after " << r.seconds << " s " << r.error);
    CHECK((r.status == 200 || r.status == 429));
    ok += r.status == 200;
    if (r.status != 429) continue;
    ++shed;
    CHECK(r.retry_after == "1");
    CHECK(r.seconds < 2.0); // shed without waiting for a worker (the queue takes ~5 s)
  }
  CHECK(ok >= 34); // 2 rendering + 32 waiting
  CHECK(shed >= 1);
  // Both replicas die: once HAProxy has marked them down (a request in that very instant may get
  // 502, a tile lost with its replicas), every tile gets 429 + Retry-After, not HAProxy's 503.
  c.replica(0).process().signal(SIGKILL);
  c.replica(1).process().signal(SIGKILL);
  CHECK(eventually(
      [&] {
        return c.balancer_log().find("backend 'tiles' has no server available") !=
               std::string::npos;
      },
      10s));
  const auto none_up = get_tile(c, tile_path(50), SteadyClock::now());
  INFO(none_up.error << "; haproxy: " << c.balancer_log());
  CHECK(none_up.status == 429);
  CHECK(none_up.retry_after == "1");
}

TEST_CASE("Cluster.HaproxyKillOneReplicaLosesNoTile" * doctest::timeout(120)) {
  kill_one_replica(Balancer::haproxy);
}

TEST_CASE("Cluster.NginxKillOneReplicaLosesNoTile" * doctest::timeout(180)) {
  kill_one_replica(Balancer::nginx_rr);
  kill_one_replica(Balancer::nginx_least);
}

TEST_CASE("Cluster.HaproxySigtermDrainsAReplica" * doctest::timeout(120)) {
  sigterm_drains_a_replica(Balancer::haproxy);
}

TEST_CASE("Cluster.NginxSigtermDrainsAReplica" * doctest::timeout(120)) {
  sigterm_drains_a_replica(Balancer::nginx_least);
}

namespace {
/// The value of one counter line (`name{labels} `) in a replica's /metrics (through the
/// balancer), or -1.
long replica_counter(const Cluster &c, const std::string &id, const std::string &line) {
  auto res = c.client().Get("/replica/" + id + "/metrics");
  if (!res || res->status != 200) return -1;
  const std::string key = line + " ";
  const auto at = res->body.find(key);
  return at == std::string::npos ? -1 : std::atol(res->body.c_str() + at + key.size());
}

/// Tile requests the replicas saw, summed: executor jobs (renders) and requests answered without
/// one (memory cache hits, coalesced waits, 304s).
struct ReplicaTiles {
  long renders = 0;
  long without_render = 0;
};

ReplicaTiles replica_tiles(const Cluster &c) {
  ReplicaTiles t;
  for (const std::string id : {"r1", "r2"}) {
    t.renders += replica_counter(c, id, "overdrive_jobs_accepted_total{executor=\"pool\"}");
    for (const char *name : {"overdrive_tile_cache_hits_total", "overdrive_tile_coalesced_total",
                             "overdrive_tile_not_modified_total"})
      t.without_render += replica_counter(c, id, name);
  }
  return t;
}
} // namespace

// nginx-cache: 100 concurrent requests for one uncached tile reach one replica once
// (proxy_cache_lock): one render across the cluster, and no other request reaches a replica at all
// (so neither replica's own cache nor its coalescing answered them). A later request is a cache
// hit that no replica sees. The URL has no nonce: a nonce answer is Cache-Control: no-store,
// which nginx does not cache. The cluster is new, so the tile is in no cache yet.
TEST_CASE("Cluster.NginxCacheRendersConcurrentMissesOnce" * doctest::timeout(120)) {
  Cluster c(Balancer::nginx_cache, 2, 1, {"--work", "sleep:300"});
  const ReplicaTiles before = replica_tiles(c);
  REQUIRE(before.renders >= 0);
  REQUIRE(before.without_render >= 0);
  const std::string path = "/tile/4/7/0.png?size=16&iter=10";
  const auto t0 = SteadyClock::now();
  std::vector<std::future<TileResult>> fs;
  for (int i = 0; i < 100; ++i)
    fs.push_back(std::async(std::launch::async, [&c, &path, t0] { return get_tile(c, path, t0); }));
  int ok = 0;
  for (auto &f : fs) {
    const auto r = f.get();
    INFO(r.error);
    ok += r.status == 200 ? 1 : 0;
  }
  CHECK(ok == 100);
  const ReplicaTiles after = replica_tiles(c);
  CHECK(after.renders - before.renders == 1);
  CHECK(after.without_render - before.without_render == 0);
  auto hit = c.client().Get(path);
  REQUIRE(hit);
  CHECK(hit->status == 200);
  CHECK(hit->get_header_value("X-Cache-Status") == "HIT");
  const ReplicaTiles later = replica_tiles(c);
  CHECK(later.renders - before.renders == 1);
  CHECK(later.without_render - before.without_render == 0);
}

// web/deploy/prometheus.yml, generated for two replicas, is a valid Prometheus configuration
// that scrapes both.
TEST_CASE("Cluster.PrometheusConfigScrapesEveryReplica" * doctest::timeout(60)) {
  const std::string promtool = find_program("promtool");
  INFO("promtool is not installed: apt-get install prometheus (scripts/test installs it)");
  REQUIRE(!promtool.empty());
  TempDir dir;
  const std::string deploy = std::string(OVERDRIVE_SOURCE_DIR) + "/web/deploy/";
  const std::vector<ReplicaSpec> specs = {{"r1", "127.0.0.1:18001", 1},
                                          {"r2", "127.0.0.1:18002", 2}};
  const std::string text = render_template(read_text(deploy + "prometheus.yml"), {}, specs);
  for (const char *want :
       {"'127.0.0.1:18001'", "'127.0.0.1:18002'", "replica: 'r1'", "replica: 'r2'"})
    CHECK_MESSAGE(text.find(want) != std::string::npos, want);
  const std::string cfg = dir.path() + "/prometheus.yml";
  write_text(cfg, text);
  const std::string cmd = promtool + " check config " + cfg + " 2>&1";
  FILE *p = ::popen(cmd.c_str(), "r");
  REQUIRE(p != nullptr);
  std::string out;
  char buf[512];
  while (std::fgets(buf, sizeof buf, p))
    out += buf;
  const int status = ::pclose(p);
  INFO(out);
  CHECK(status == 0);
}
