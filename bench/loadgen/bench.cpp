// run_bench: one in-process TileServer per executor on an ephemeral loopback port (or one
// external loopback server), a calibration for open-loop rates given as a share of capacity,
// the runs, and the idle-while-waiting counters of our server around each run.
#include "bench/loadgen/format.hpp"
#include "bench/loadgen/http_client.hpp"
#include "bench/loadgen/loadgen.hpp"
#include "web/server.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <future>
#include <stdexcept>
#include <thread>

namespace overdrive::loadgen {
namespace {

using detail::fmt;

// /api/stats of a server that may not be ours: nullopt on any failure or a foreign body.
std::optional<std::string> fetch_stats_json(const Endpoint &ep, double timeout_s) {
  detail::Connection c;
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(timeout_s));
  if (!c.connect(ep, deadline).empty()) return std::nullopt;
  detail::Response r;
  Clock::time_point sent;
  std::string body;
  if (!c.get(ep, "/api/stats", true, deadline, sent, r, &body).empty() || r.status != 200)
    return std::nullopt;
  if (body.find("\"idle_while_waiting_seconds\"") == std::string::npos) return std::nullopt;
  return body;
}

// Serial cost T of one job (ms): median server-side render+encode of a few sequential requests
// on one connection (times N with split), or their median latency for a server without
// Server-Timing.
double calibrate_cost(const Endpoint &ep, const LoadSpec &spec, const ModelSpec &model) {
  detail::Connection c;
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(spec.timeout_s));
  std::vector<double> server, latency;
  for (int i = 0; i < 3; ++i) {
    if (!c.is_open()) {
      if (std::string e = c.connect(ep, deadline); !e.empty())
        throw std::runtime_error("calibration: cannot connect: " + e);
    }
    detail::Response r;
    Clock::time_point sent;
    const auto t0 = Clock::now();
    const std::string path = expand_path(spec.path_template, i, spec.zoom);
    if (std::string e = c.get(ep, path, false, deadline, sent, r); !e.empty() || r.status != 200)
      throw std::runtime_error("calibration: GET " + path +
                               " failed: " + (e.empty() ? "HTTP " + std::to_string(r.status) : e));
    latency.push_back(std::chrono::duration<double, std::milli>(r.done - t0).count());
    const ServerTiming st = parse_server_timing(r.header("server-timing"));
    if (st.render && st.encode) server.push_back(*st.render + *st.encode);
  }
  if (model.cost_ms) return *model.cost_ms;
  const double m = server.size() == latency.size() ? *median(server) : *median(latency);
  return model.split ? m * model.workers : m;
}

// Not reported: starts every worker and some I/O threads, so that run 1 measures the steady
// state and not thread start-up (TBB starts its workers on first use; under tsan that took
// ~0.4 s and made every request of run 1 late). Pool/tbb get one job per worker that waits
// (bounded) until all have started; inline has no workers of its own (its I/O threads are).
void warm_up(TileServer &server, ExecutorKind kind, const Endpoint &ep, int connections,
             double timeout_s) {
  Executor &ex = server.executor(kind);
  if (kind != ExecutorKind::Inline) {
    const int n = ex.workers();
    auto started = std::make_shared<std::atomic<int>>(0);
    std::vector<std::future<void>> done;
    for (int i = 0; i < n; ++i) {
      auto f = submit_task(
          ex,
          [started, n](const JobContext &) {
            started->fetch_add(1);
            const auto until = Clock::now() + std::chrono::seconds(5);
            while (started->load() < n && Clock::now() < until)
              std::this_thread::sleep_for(std::chrono::milliseconds(1));
          },
          "bench-warm-up");
      if (f) done.push_back(std::move(*f));
    }
    for (auto &f : done)
      f.wait_for(std::chrono::seconds(10));
  }
  LoadSpec spec;
  spec.scenario = Scenario::Burst;
  spec.requests = std::clamp(connections, 1, 64);
  spec.path_template = "/healthz";
  spec.close_after = true;
  spec.timeout_s = timeout_s;
  (void)run_scenario_once(ep, spec, 0);
}

ExecutorResult run_target(const Endpoint &ep, const BenchOptions &o, LoadSpec spec,
                          ExecutorResult er,
                          const std::function<std::optional<std::string>()> &stats,
                          std::optional<std::pair<double, double>> &calibrated) {
  ModelSpec model{er.workers, o.server.split, o.cost_ms};
  er.path_template = spec.path_template;
  if (spec.scenario == Scenario::Open) {
    if (o.rate_fraction && calibrated) {
      // Same schedule for every executor: the capacity measured on the first one.
      er.capacity_rps = calibrated->first;
      spec.rate = calibrated->second;
    } else if (o.rate_fraction) {
      const double t = calibrate_cost(ep, spec, model);
      if (!(t > 0))
        throw std::runtime_error("calibration measured a zero cost; give --rate in req/s");
      er.capacity_rps = er.workers / (t / 1000.0);
      spec.rate = *o.rate_fraction * *er.capacity_rps;
      calibrated = std::make_pair(*er.capacity_rps, spec.rate);
    }
    er.rate = spec.rate;
  }
  for (int r = 1; r <= spec.runs; ++r) {
    const auto before_json = stats();
    RunResult run = run_scenario_once(ep, spec, r);
    // Let the server see the client's connections close before reading its counters.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const auto after_json = stats();
    // The executor under test: ours by construction, or whatever served an external run's tiles.
    std::string name = er.executor;
    for (const auto &q : run.requests)
      if (name == "external" && !q.executor.empty()) name = q.executor;
    std::optional<IdleSample> before, after;
    if (before_json && after_json) {
      before = parse_idle_sample(*before_json, name);
      after = parse_idle_sample(*after_json, name);
    }
    if (before && after) {
      run.idle_executor_s = after->executor_seconds - before->executor_seconds;
      run.idle_io_s = after->io_seconds - before->io_seconds;
    }
    analyze_run(run, spec.scenario, model, spec.duration_s);
    if (o.progress) {
      std::string line =
          er.executor + " run " + std::to_string(r) + "/" + std::to_string(spec.runs) + ":";
      if (spec.scenario == Scenario::Open) {
        line += " " + std::to_string(run.requests.size()) + " sent, " +
                std::to_string(run.succeeded) + " ok, " + std::to_string(run.rejected) +
                " rejected";
        if (run.p99_ms) line += ", p99 " + fmt("%.0f", *run.p99_ms) + " ms";
      } else {
        if (run.last_ms) line += " last " + fmt("%.0f", *run.last_ms) + " ms";
        if (run.efficiency) line += ", efficiency " + fmt("%.2f", *run.efficiency);
        line += ", " + std::to_string(run.late) + " late";
        if (run.failed + run.rejected)
          line += ", " + std::to_string(run.failed + run.rejected) + " failed";
      }
      o.progress(line);
    }
    er.runs.push_back(std::move(run));
  }
  return er;
}

} // namespace

BenchReport run_bench(const BenchOptions &o) {
  BenchReport report;
  report.options = o;
  LoadSpec spec = o.load;
  // Open loop with --rate N%: (capacity, rate) from the first target's calibration.
  std::optional<std::pair<double, double>> calibrated;
  if (spec.runs < 1) throw std::invalid_argument("need at least one run");
  if (o.url) {
    if (spec.path_template.empty())
      throw std::invalid_argument("--url needs --path-template (e.g. '/tile/2/{x}/{y}.png')");
    report.target = "http://" + o.url->host + ":" + std::to_string(o.url->port);
    ExecutorResult er;
    er.executor = "external";
    er.workers = o.server.workers;
    // Only our own server answers /api/stats with idle counters; ask once whether this is one.
    std::function<std::optional<std::string>()> stats = [] { return std::optional<std::string>{}; };
    if (fetch_stats_json(*o.url, 5.0)) stats = [ep = *o.url] { return fetch_stats_json(ep, 5.0); };
    report.executors.push_back(run_target(*o.url, o, spec, std::move(er), stats, calibrated));
    return report;
  }

  report.target = "in-process";
  const auto work = parse_work_spec(o.server.work);
  if (!work) throw std::invalid_argument("--work '" + o.server.work + "' is malformed");
  if (spec.path_template.empty())
    spec.path_template = "/tile/{z}/{x}/{y}.png?iter=" + std::to_string(o.server.iter) +
                         "&size=" + std::to_string(o.server.size);
  if (spec.warmup_path.empty()) spec.warmup_path = "/healthz";
  for (const std::string &name : o.executors) {
    const auto kind = parse_executor_kind(name);
    if (!kind)
      throw std::invalid_argument("unknown executor '" + name +
                                  "' (valid: " + executor_kind_names() + ")");
    ServerOptions so;
    so.host = "127.0.0.1";
    so.port = 0;
    so.executor = *kind;
    so.workers = o.server.workers;
    // With inline the I/O threads are the workers: N workers means N I/O threads.
    so.io_threads =
        o.server.io_threads.value_or(*kind == ExecutorKind::Inline ? o.server.workers : 128);
    so.queue_limit = o.server.queue_limit;
    so.split = o.server.split;
    so.work = *work;
    so.keep_alive_timeout_s = o.server.keep_alive_timeout_s;
    so.access_log = false;
    TileServer server(so);
    const int port = server.start();
    warm_up(server, *kind, Endpoint{"127.0.0.1", port}, std::min(spec.requests, so.io_threads),
            spec.timeout_s);
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    ExecutorResult er;
    er.executor = name;
    er.workers = server.executor(*kind).workers();
    er.io_threads = so.io_threads;
    auto stats = [&server]() { return std::optional<std::string>(server.stats_json()); };
    report.executors.push_back(
        run_target(Endpoint{"127.0.0.1", port}, o, spec, std::move(er), stats, calibrated));
    server.stop();
  }
  return report;
}

} // namespace overdrive::loadgen
