// run_bench: one in-process TileServer per executor on an ephemeral loopback port (or one
// external loopback server), the serial calibration of tile costs on the idle server (T of the
// model, the open-loop capacity), the runs, and the idle-while-waiting counters of our server
// around each run.
#include "bench/loadgen/format.hpp"
#include "bench/loadgen/http_client.hpp"
#include "bench/loadgen/loadgen.hpp"
#include "web/server.hpp"
#include "web/wire.hpp"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <future>
#include <limits>
#include <stdexcept>
#include <thread>

namespace overdrive::loadgen {
namespace {

using detail::fmt;

// /api/stats of a server that may not be ours (at PREFIX/api/stats), with the replica that
// answered (X-Overdrive-Replica, "" if absent): nullopt on any failure or a foreign body.
struct StatsAnswer {
  std::string body, replica;
};
std::optional<StatsAnswer> fetch_stats(const Endpoint &ep, const std::string &prefix,
                                       double timeout_s) {
  detail::Connection c;
  const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(timeout_s));
  if (!c.connect(ep, deadline).empty()) return std::nullopt;
  detail::Response r;
  Clock::time_point sent;
  StatsAnswer a;
  if (!c.get(ep, prefix + "/api/stats", true, deadline, sent, r, &a.body).empty() ||
      r.status != 200)
    return std::nullopt;
  std::string key(1, '"');
  key.append(wire::stats::idle_while_waiting_seconds).append("\"");
  if (a.body.find(key) == std::string::npos) return std::nullopt;
  a.replica = r.header(wire::header::replica);
  return a;
}

std::optional<std::string> fetch_stats_json(const Endpoint &ep, double timeout_s) {
  auto a = fetch_stats(ep, "", timeout_s);
  if (!a) return std::nullopt;
  return std::move(a->body);
}

// Each replica's /api/stats, in --stats-url order (nullopt where it could not be read).
using StatsSamples = std::vector<std::optional<std::string>>;

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

// The calibrations of a bench, shared by its targets: the tile's cost does not depend on the
// executor that runs it, only on whether it is split (only tbb splits).
struct Calibrations {
  std::optional<Calibration> plain, split;
};

ExecutorResult run_target(const Endpoint &ep, const BenchOptions &o, LoadSpec spec,
                          ExecutorResult er, const std::function<StatsSamples()> &stats,
                          std::optional<std::pair<double, double>> &calibrated,
                          Calibrations &calibrations) {
  // Only tbb splits a tile; an external server is taken at its word (--split).
  const auto kind = parse_executor_kind(er.executor);
  er.split = o.server.split && (kind ? executor_info(*kind).can_split : er.executor == "external");
  ModelSpec model{er.workers, er.split, o.cost_ms, std::nullopt};
  er.path_template = spec.path_template;
  const bool open = spec.scenario == Scenario::Open;
  // Serially on the idle server, before any run: T of the model, or the open-loop capacity.
  if (!o.cost_ms && (!open || (o.rate_fraction && !calibrated))) {
    std::optional<Calibration> &cached = er.split ? calibrations.split : calibrations.plain;
    if (!cached) {
      if (o.progress) o.progress(er.executor + ": calibrating tile costs (serial, idle server)");
      cached = calibrate(ep, spec, open ? 3 : spec.requests, er.workers, er.split);
      // Let the server see the calibration's connection close (inline: it holds a thread).
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    er.calibration = cached;
    model.calibration = cached;
  }
  if (open) {
    if (o.rate_fraction && calibrated) {
      // Same schedule for every executor: the capacity measured on the first one.
      er.capacity_rps = calibrated->first;
      spec.rate = calibrated->second;
    } else if (o.rate_fraction) {
      const double t = o.cost_ms ? *o.cost_ms : model.calibration->serial_ms;
      if (!(t > 0))
        throw std::runtime_error("calibration measured a zero cost; give --rate in req/s");
      er.capacity_rps = er.workers / (t / 1000.0);
      spec.rate = *o.rate_fraction * *er.capacity_rps;
      calibrated = std::make_pair(*er.capacity_rps, spec.rate);
    }
    er.rate = spec.rate;
  }
  for (int r = 1; r <= spec.runs; ++r) {
    const StatsSamples before_json = stats();
    RunResult run = run_scenario_once(ep, spec, r);
    // Let the server see the client's connections close before reading its counters.
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    const StatsSamples after_json = stats();
    if (!er.replicas.empty()) {
      // A cluster: per replica, summed over all of them.
      attribute_replicas(run, er.replicas, before_json, after_json);
    } else if (before_json.size() == 1 && after_json.size() == 1 && before_json[0] &&
               after_json[0]) {
      // The executor under test: ours by construction, or whatever served an external run's
      // tiles.
      std::string name = er.executor;
      for (const auto &q : run.requests)
        if (name == "external" && !q.executor.empty()) name = q.executor;
      const auto before = parse_idle_sample(*before_json[0], name);
      const auto after = parse_idle_sample(*after_json[0], name);
      if (before && after) {
        run.idle_executor_s = after->executor_seconds - before->executor_seconds;
        run.idle_io_s = after->io_seconds - before->io_seconds;
      }
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
        if (run.model_error)
          line += ", MODEL ERROR (efficiency " + fmt("%.2f", run.raw_efficiency.value_or(0)) + ")";
        line += ", " + std::to_string(run.late) + " late";
        if (run.failed + run.rejected)
          line += ", " + std::to_string(run.sent) + " sent, " + std::to_string(run.succeeded) +
                  " ok, " + std::to_string(run.rejected) + " shed, " + std::to_string(run.failed) +
                  " failed";
      }
      o.progress(line);
    }
    er.runs.push_back(std::move(run));
  }
  return er;
}

} // namespace

Calibration calibrate(const Endpoint &ep, const LoadSpec &spec, int count, int workers,
                      bool split) {
  constexpr int rounds = 5, enough_rounds = 3;
  constexpr double budget_ms = 3000, enough_ms = 1000, agree = 0.05;
  Calibration cal;
  cal.split = split;
  std::vector<std::string> paths;
  for (int i = 0; i < std::max(1, count); ++i) {
    std::string p = expand_path(spec.path_template, i, spec.zoom);
    if (std::find(paths.begin(), paths.end(), p) == paths.end()) paths.push_back(std::move(p));
  }
  cal.paths = static_cast<int>(paths.size());
  struct Sample {
    double wall, serial, work, latency;
  };
  std::vector<std::vector<Sample>> samples(paths.size());
  std::vector<double> all_wall;
  bool server_timing = true;
  detail::Connection c;
  const auto start = Clock::now();
  auto elapsed_ms = [&] {
    return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
  };
  auto done = [&](std::size_t sampled_paths) {
    if (all_wall.size() < 3 || elapsed_ms() < budget_ms) return false;
    if (sampled_paths == paths.size()) return true;
    const auto [lo, hi] = std::minmax_element(all_wall.begin(), all_wall.end());
    return *hi <= *lo * (1.0 + agree);
  };
  bool stop = false;
  for (int round = 0; round < rounds && !stop; ++round) {
    for (std::size_t p = 0; p < paths.size() && !stop; ++p) {
      const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                               std::chrono::duration<double>(spec.timeout_s));
      if (!c.is_open())
        if (std::string e = c.connect(ep, deadline); !e.empty())
          throw std::runtime_error("calibration: cannot connect: " + e);
      detail::Response r;
      Clock::time_point sent;
      const auto t0 = Clock::now();
      if (std::string e = c.get(ep, paths[p], false, deadline, sent, r);
          !e.empty() || r.status != 200)
        throw std::runtime_error("calibration: GET " + paths[p] + " failed: " +
                                 (e.empty() ? "HTTP " + std::to_string(r.status) : e));
      const double latency = std::chrono::duration<double, std::milli>(r.done - t0).count();
      const ServerTiming st = parse_server_timing(r.header("server-timing"));
      // A server without Server-Timing (decided by the first answer): client latencies.
      if (round == 0 && p == 0) server_timing = st.render && st.encode;
      Sample s{latency, latency, 0, latency};
      if (server_timing && st.render && st.encode) {
        s.wall = *st.render + *st.encode;
        // With split only the render proper runs on all workers; the synthetic work (part of
        // render in Server-Timing) and the encode run on one.
        s.work = std::min(st.work.value_or(0.0), *st.render);
        s.serial = split ? s.work + *st.encode + workers * (*st.render - s.work) : s.wall;
      }
      samples[p].push_back(s);
      all_wall.push_back(s.wall);
      stop = done(round == 0 ? p + 1 : paths.size());
    }
    stop = stop || (round + 1 >= enough_rounds && elapsed_ms() >= enough_ms);
  }
  cal.source = server_timing ? "server-timing" : "latency";
  std::vector<double> all_serial;
  for (std::size_t p = 0; p < paths.size(); ++p) {
    if (samples[p].empty()) continue;
    std::vector<double> w, s, k;
    for (const Sample &x : samples[p]) {
      w.push_back(x.wall);
      s.push_back(x.serial);
      k.push_back(x.work);
      all_serial.push_back(x.serial);
    }
    cal.tiles.push_back(TileCost{
        paths[p], *median(w), *median(s), *median(k), *std::min_element(w.begin(), w.end()),
        *std::min_element(s.begin(), s.end()), static_cast<int>(w.size())});
  }
  cal.samples = static_cast<int>(all_wall.size());
  cal.wall_ms = *median(all_wall);
  cal.serial_ms = *median(all_serial);
  cal.elapsed_ms = elapsed_ms();
  return cal;
}

BenchReport run_bench(const BenchOptions &o) {
  BenchReport report;
  report.options = o;
  LoadSpec spec = o.load;
  // Open loop with --rate N%: (capacity, rate) from the first target's calibration.
  std::optional<std::pair<double, double>> calibrated;
  Calibrations calibrations;
  if (spec.runs < 1) throw std::invalid_argument("need at least one run");
  if (o.url) {
    if (spec.path_template.empty())
      throw std::invalid_argument("--url needs --path-template (e.g. '/tile/2/{x}/{y}.png')");
    report.target = "http://" + o.url->host + ":" + std::to_string(o.url->port);
    ExecutorResult er;
    er.executor = "external";
    er.workers = o.server.workers;
    std::function<StatsSamples()> stats = [] { return StatsSamples{}; };
    if (!o.stats_urls.empty()) {
      // A cluster behind the balancer at --url: each replica's counters and workers, directly.
      for (const StatsUrl &su : o.stats_urls) {
        const auto a = fetch_stats(su.endpoint, su.prefix, 5.0);
        if (!a)
          throw std::runtime_error("--stats-url " + su.url +
                                   ": no /api/stats of overdrive serve at " + su.prefix +
                                   "/api/stats");
        const auto workers = parse_stats_workers(a->body);
        if (!workers)
          throw std::runtime_error("--stats-url " + su.url + ": /api/stats has no options.workers");
        ReplicaInfo info{a->replica.empty() ? su.url : a->replica, su.url, *workers};
        for (const ReplicaInfo &seen : er.replicas)
          if (seen.id == info.id)
            throw std::runtime_error("--stats-url " + su.url + " and " + seen.stats_url +
                                     " are the same replica '" + info.id +
                                     "' (its idle would count twice)");
        er.replicas.push_back(std::move(info));
      }
      er.workers = o.model_workers.value_or(cluster_workers(er.replicas));
      stats = [urls = o.stats_urls] {
        StatsSamples out;
        for (const StatsUrl &su : urls) {
          auto a = fetch_stats(su.endpoint, su.prefix, 5.0);
          out.push_back(a ? std::optional<std::string>(std::move(a->body)) : std::nullopt);
        }
        return out;
      };
    } else if (fetch_stats_json(*o.url, 5.0)) {
      // Only our own server answers /api/stats with idle counters; ask once whether this is one.
      stats = [ep = *o.url] { return StatsSamples{fetch_stats_json(ep, 5.0)}; };
    }
    report.executors.push_back(
        run_target(*o.url, o, spec, std::move(er), stats, calibrated, calibrations));
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
        o.server.io_threads.value_or(executor_info(*kind).runs_on_caller ? o.server.workers : 128);
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
    std::function<StatsSamples()> stats = [&server] { return StatsSamples{server.stats_json()}; };
    report.executors.push_back(run_target(Endpoint{"127.0.0.1", port}, o, spec, std::move(er),
                                          stats, calibrated, calibrations));
    server.stop();
  }
  return report;
}

} // namespace overdrive::loadgen
