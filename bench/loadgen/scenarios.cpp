// The scenario drivers: client threads of our own, released together at one instant, each
// request timed on Clock from connect to the last body byte; and run_bench, which starts an
// in-process TileServer per executor (or targets an external loopback server) and repeats runs.
#include "bench/loadgen/http_client.hpp"
#include "bench/loadgen/loadgen.hpp"
#include "web/server.hpp"
#include "web/wire.hpp"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <condition_variable>
#include <cstdio>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace overdrive::loadgen {
namespace {

using detail::Connection;
using detail::Response;

double ms_after(Clock::time_point release, Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(t - release).count();
}

Clock::duration seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

// Holds client threads until all are ready, then releases them at one instant a little in the
// future (so every thread is already asleep on it, not still being scheduled).
class Gate {
public:
  explicit Gate(int threads) : threads_(threads) {}

  Clock::time_point arrive_and_wait() {
    std::unique_lock lock(mu_);
    ++ready_;
    cv_.notify_all();
    cv_.wait(lock, [this] { return release_.has_value(); });
    return *release_;
  }
  /// Waits (bounded) for every thread, then publishes the release instant and returns it.
  Clock::time_point open() {
    std::unique_lock lock(mu_);
    cv_.wait_for(lock, std::chrono::seconds(30), [this] { return ready_ >= threads_; });
    release_ = Clock::now() + std::chrono::milliseconds(20);
    cv_.notify_all();
    return *release_;
  }

private:
  std::mutex mu_;
  std::condition_variable cv_;
  int threads_, ready_ = 0;
  std::optional<Clock::time_point> release_;
};

// Joins its threads on every exit path.
struct ThreadGroup {
  std::vector<std::thread> threads;
  ~ThreadGroup() { join(); }
  void join() {
    for (auto &t : threads)
      if (t.joinable()) t.join();
  }
};

void perform(const Endpoint &ep, Connection &conn, bool connect_first, bool close_after,
             RequestRecord &rec, Clock::time_point release, Clock::time_point deadline) {
  if (connect_first) {
    rec.connect_start_ms = ms_after(release, Clock::now());
    std::string err = conn.connect(ep, deadline);
    rec.connected_ms = ms_after(release, Clock::now());
    if (!err.empty()) {
      rec.error = err;
      return;
    }
  }
  Response resp;
  Clock::time_point sent{};
  const std::string err = conn.get(ep, rec.path, close_after, deadline, sent, resp);
  if (sent != Clock::time_point{}) rec.sent_ms = ms_after(release, sent);
  if (resp.first_byte != Clock::time_point{})
    rec.first_byte_ms = ms_after(release, resp.first_byte);
  if (!err.empty()) {
    rec.error = err;
    return;
  }
  rec.done_ms = ms_after(release, resp.done);
  rec.status = resp.status;
  rec.bytes = resp.body_bytes;
  rec.server = parse_server_timing(resp.header("server-timing"));
  rec.executor = resp.header(wire::header::executor);
  rec.replica = resp.header(wire::header::replica);
  const std::string w = resp.header(wire::header::worker);
  int worker = -1;
  if (!w.empty() && std::from_chars(w.data(), w.data() + w.size(), worker).ec == std::errc{})
    rec.worker = worker;
}

std::vector<RequestRecord> make_records(const LoadSpec &spec, int n, ConnKind kind) {
  std::vector<RequestRecord> recs(static_cast<std::size_t>(n));
  for (int i = 0; i < n; ++i) {
    recs[static_cast<std::size_t>(i)].index = i;
    recs[static_cast<std::size_t>(i)].path = expand_path(spec.path_template, i, spec.zoom);
    recs[static_cast<std::size_t>(i)].connection = kind;
  }
  return recs;
}

} // namespace

RunResult run_scenario_once(const Endpoint &ep, const LoadSpec &spec, int run) {
  if (spec.requests < 1 && spec.scenario != Scenario::Open)
    throw std::invalid_argument("need at least one request");
  RunResult out;
  out.run = run;
  const auto timeout = seconds(spec.timeout_s);
  const int k = spec.requests;
  ThreadGroup group;

  switch (spec.scenario) {
  case Scenario::Seed:
  case Scenario::Burst:
  case Scenario::Preconnect: {
    const bool seed = spec.scenario == Scenario::Seed;
    const bool pre = spec.scenario == Scenario::Preconnect;
    out.requests = make_records(spec, k, pre ? ConnKind::Preconnected : ConnKind::New);
    std::vector<Connection> conns(static_cast<std::size_t>(k));
    if (seed) {
      // One keep-alive connection, warmed up by one request, then left idle until the release.
      const auto deadline = Clock::now() + timeout;
      const std::string warm_path = spec.warmup_path.empty()
                                        ? expand_path(spec.path_template, 0, spec.zoom)
                                        : spec.warmup_path;
      std::string err = conns[0].connect(ep, deadline);
      Response r;
      Clock::time_point sent;
      if (err.empty()) err = conns[0].get(ep, warm_path, false, deadline, sent, r);
      if (err.empty() && (r.status < 200 || r.status >= 300))
        err = "HTTP " + std::to_string(r.status);
      if (!err.empty())
        throw std::runtime_error("seed warm-up request GET " + warm_path + " failed: " + err);
      if (!conns[0].is_open())
        throw std::runtime_error("the server closed the connection after the warm-up request; "
                                 "the seed scenario needs HTTP keep-alive");
      out.requests[0].connection = ConnKind::Warm;
    }
    // Connect-ahead for preconnect, before anything is released: errors land in the record.
    // (Times before the release instant are stored relative to it once it is known.)
    std::vector<std::pair<Clock::time_point, Clock::time_point>> pre_times(
        static_cast<std::size_t>(k));
    std::vector<std::string> pre_errors(static_cast<std::size_t>(k));
    if (pre) {
      const auto deadline = Clock::now() + timeout;
      for (std::size_t j = 0; j < conns.size(); ++j) {
        pre_times[j].first = Clock::now();
        pre_errors[j] = conns[j].connect(ep, deadline);
        pre_times[j].second = Clock::now();
      }
    }
    Gate gate(k);
    for (int j = 0; j < k; ++j) {
      group.threads.emplace_back([&, j, seed, pre] {
        const auto release = gate.arrive_and_wait();
        std::this_thread::sleep_until(release);
        RequestRecord &rec = out.requests[static_cast<std::size_t>(j)];
        Connection &conn = conns[static_cast<std::size_t>(j)];
        if (pre) {
          rec.connect_start_ms = ms_after(release, pre_times[static_cast<std::size_t>(j)].first);
          rec.connected_ms = ms_after(release, pre_times[static_cast<std::size_t>(j)].second);
          if (!pre_errors[static_cast<std::size_t>(j)].empty()) {
            rec.error = pre_errors[static_cast<std::size_t>(j)];
            return;
          }
        }
        const bool connect_first = !pre && !(seed && j == 0);
        perform(ep, conn, connect_first, spec.close_after, rec, release, release + timeout);
      });
    }
    out.release_ns = overdrive::to_ns(gate.open());
    group.join();
    break; // conns close here: every connection stays open until the whole run is over
  }
  case Scenario::Browser: {
    out.requests = make_records(spec, k, ConnKind::New);
    const int slots = std::clamp(spec.browser_connections, 1, k);
    std::vector<Connection> conns(static_cast<std::size_t>(slots));
    std::atomic<int> next{0};
    Gate gate(slots);
    for (int s = 0; s < slots; ++s) {
      group.threads.emplace_back([&, s] {
        const auto release = gate.arrive_and_wait();
        std::this_thread::sleep_until(release);
        Connection &conn = conns[static_cast<std::size_t>(s)];
        for (int i; (i = next.fetch_add(1)) < k;) {
          RequestRecord &rec = out.requests[static_cast<std::size_t>(i)];
          rec.connection = conn.is_open() ? ConnKind::Reused : ConnKind::New;
          perform(ep, conn, !conn.is_open(), spec.close_after, rec, release, release + timeout);
        }
      });
    }
    out.release_ns = overdrive::to_ns(gate.open());
    group.join();
    break;
  }
  case Scenario::Open: {
    const auto arrivals = poisson_arrivals(spec.rate, spec.duration_s, spec.seed);
    const int n = static_cast<int>(arrivals.size());
    out.requests = make_records(spec, n, ConnKind::New);
    for (int i = 0; i < n; ++i)
      out.requests[static_cast<std::size_t>(i)].scheduled_ms =
          arrivals[static_cast<std::size_t>(i)] * 1000.0;
    // Each arrival is a new client on a new connection, closed after its response. A pool of
    // client threads takes arrivals in order; a thread sleeps until its arrival's time, so the
    // schedule holds unless every thread is busy (then max_send_lag_ms shows it).
    const int pool = std::min(n, 1000);
    std::atomic<int> next{0};
    Gate gate(pool);
    for (int t = 0; t < pool; ++t) {
      group.threads.emplace_back([&] {
        const auto release = gate.arrive_and_wait();
        for (int i; (i = next.fetch_add(1)) < n;) {
          RequestRecord &rec = out.requests[static_cast<std::size_t>(i)];
          const auto at =
              release + std::chrono::duration_cast<Clock::duration>(
                            std::chrono::duration<double, std::milli>(rec.scheduled_ms));
          std::this_thread::sleep_until(at);
          Connection conn;
          perform(ep, conn, true, true, rec, release, at + timeout);
        }
      });
    }
    out.release_ns = overdrive::to_ns(gate.open());
    group.join();
    break;
  }
  }
  return out;
}

} // namespace overdrive::loadgen
