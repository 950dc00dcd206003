// The three outputs of a bench: a table for people, JSON for programs (schema in
// bench/README.md), and a hand-written SVG timeline (no dependencies).
#include "bench/loadgen/format.hpp"
#include "bench/loadgen/loadgen.hpp"
#include "web/json.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <sstream>

namespace overdrive::loadgen {
namespace {

using detail::fmt;

std::string pad(std::string s, std::size_t w) {
  if (s.size() < w) s.append(w - s.size(), ' ');
  return s;
}

bool closed(Scenario s) {
  return s != Scenario::Open;
}

// The run a one-run view shows: the median-efficiency run (closed), else the first.
const RunResult *representative(const ExecutorResult &e, Scenario s) {
  if (e.runs.empty()) return nullptr;
  if (!closed(s)) return &e.runs.front();
  std::vector<const RunResult *> v;
  for (const auto &r : e.runs)
    v.push_back(&r);
  std::stable_sort(v.begin(), v.end(), [](const RunResult *a, const RunResult *b) {
    return a->efficiency.value_or(0) < b->efficiency.value_or(0);
  });
  return v[(v.size() - 1) / 2];
}

// Sorted latencies grouped into waves: "4×2.00 1×4.00".
// Only the requests answered by `replica`, when given.
std::string arrival_groups(const RunResult &r, bool seconds, std::size_t max_width = 30,
                           const std::string *replica = nullptr) {
  std::vector<double> lat;
  for (const auto &q : r.requests)
    if (auto l = q.latency_ms(); l && (!replica || q.replica == *replica)) lat.push_back(*l);
  std::sort(lat.begin(), lat.end());
  if (lat.empty()) return "-";
  const double gap = r.wave_ms ? late_tolerance_fraction * *r.wave_ms : 0.05 * lat.back();
  std::vector<std::string> groups;
  for (std::size_t i = 0; i < lat.size();) {
    std::size_t j = i;
    double sum = 0;
    while (j < lat.size() && lat[j] - lat[i] <= gap)
      sum += lat[j++];
    const double mean = sum / static_cast<double>(j - i);
    groups.push_back(std::to_string(j - i) + "x" +
                     (seconds ? fmt("%.2f", mean / 1000) : fmt("%.0f", mean)));
    i = j;
  }
  // Keep the column narrow: leading groups, then ".." and the last group.
  std::string out;
  std::size_t shown = 0;
  for (; shown < groups.size(); ++shown) {
    const std::size_t rest = shown + 1 == groups.size() ? 0 : 3 + groups.back().size();
    if (out.size() + 1 + groups[shown].size() + rest > max_width) break;
    out += (out.empty() ? "" : " ") + groups[shown];
  }
  if (shown < groups.size()) out += (out.empty() ? ".. " : " .. ") + groups.back();
  return out;
}

std::string opt_fmt(const char *f, const std::optional<double> &v, double scale = 1.0) {
  return v ? fmt(f, *v * scale) : "-";
}

// NaN for "none": a plain double avoids g++ 12's -Wmaybe-uninitialized false positive on a
// conditionally built std::optional.
std::string nan_fmt(const char *f, double v, double scale = 1.0) {
  return std::isnan(v) ? "-" : fmt(f, v * scale);
}

std::string idle_text(const std::optional<double> &exec, const std::optional<double> &io) {
  return exec && io ? fmt("%.2f", *exec) + "+" + fmt("%.2f", *io) : std::string("-");
}

// One line per replica of a run (with --stats-url): who served how many tiles, when they
// arrived, and that replica's idle while waiting.
std::string replica_lines(const ExecutorResult &e, const RunResult &r, bool seconds) {
  std::string out;
  for (const ReplicaRun &rr : r.replicas) {
    const auto info = std::find_if(e.replicas.begin(), e.replicas.end(),
                                   [&](const ReplicaInfo &i) { return i.id == rr.id; });
    out += pad("", 9) + "  replica " + (rr.id.empty() ? "(no header)" : rr.id) + ": " +
           (info != e.replicas.end() ? std::to_string(info->workers) + " workers, "
                                     : "not in "
                                       "--stats-url, ") +
           std::to_string(rr.tiles) + " tiles (" + std::to_string(rr.ok) + " ok), arrivals " +
           arrival_groups(r, seconds, 40, &rr.id) + ", idle core-s exec+io " +
           idle_text(rr.idle_executor_s, rr.idle_io_s) + "\n";
  }
  return out;
}

} // namespace

std::string calibration_line(const Calibration &c) {
  std::string out = "calibration (serial, idle server";
  out += c.split ? ", split" : "";
  out += "): " + std::to_string(c.samples) + " samples over " + std::to_string(c.tiles.size()) +
         " of " + std::to_string(c.paths) + " paths (" + c.source + ", " +
         fmt("%.1f", c.elapsed_ms / 1000) + " s): T = " + fmt("%.1f", c.wall_ms) + " ms";
  if (c.split) out += " (unsplit " + fmt("%.1f", c.serial_ms) + " ms)";
  if (!c.tiles.empty()) {
    const auto [lo, hi] = std::minmax_element(
        c.tiles.begin(), c.tiles.end(),
        [](const TileCost &a, const TileCost &b) { return a.serial_ms < b.serial_ms; });
    out += "; tile costs (median) " + fmt("%.2f", lo->serial_ms) + "-" +
           fmt("%.2f", hi->serial_ms) + " ms";
  }
  out += c.equal_costs() ? " -> equal-cost model" : " -> measured-costs model";
  return out;
}

std::string render_split_line(const ExecutorResult &e) {
  double render = 0, cpu = 0, runq = 0;
  int tiles = 0;
  bool runq_known = true;
  for (const auto &r : e.runs)
    for (const auto &q : r.requests) {
      if (!q.ok() || !q.server.render || !q.server.cpu) continue;
      ++tiles;
      render += *q.server.render;
      cpu += *q.server.cpu;
      if (q.server.runq)
        runq += *q.server.runq;
      else
        runq_known = false;
    }
  if (tiles == 0) return {};
  auto share = [render](double v) {
    return render > 0 ? " (" + fmt("%.0f", 100.0 * v / render) + "%)" : std::string();
  };
  std::string out = "render " + fmt("%.1f", render) + " ms over " + std::to_string(tiles) +
                    " tiles = cpu " + fmt("%.1f", cpu) + " ms" + share(cpu) + " + runq ";
  out += runq_known ? fmt("%.1f", runq) + " ms" + share(runq) + " (waiting for a core)"
                    : std::string("- (not reported)");
  if (runq_known && !e.split)
    out += " + other " + fmt("%.1f", std::max(0.0, render - cpu - runq)) + " ms";
  else
    out += " + other";
  if (e.split) out += " (split: cpu counts every thread, so it may exceed render)";
  return out;
}

std::string to_table(const BenchReport &rep) {
  const BenchOptions &o = rep.options;
  const Scenario sc = o.load.scenario;
  std::ostringstream out;
  out << "overdrive bench: scenario " << to_string(sc) << ", target " << rep.target;
  if (closed(sc))
    out << ", K=" << o.load.requests;
  else
    out << ", duration " << o.load.duration_s << " s, seed " << o.load.seed;
  if (!o.url)
    out << ", work " << o.server.work << (o.server.split ? ", split" : "") << ", queue limit "
        << o.server.queue_limit << ", keep-alive " << o.server.keep_alive_timeout_s << " s";
  out << ", " << o.load.runs << (o.load.runs == 1 ? " run" : " runs") << "\n";
  for (const auto &e : rep.executors)
    if (!e.replicas.empty()) {
      out << "cluster: " << e.replicas.size() << " replicas, N = " << e.workers << " workers ("
          << (o.model_workers ? "--workers" : "sum of the replicas' options.workers") << "):";
      for (const ReplicaInfo &r : e.replicas)
        out << " " << r.id << " " << r.workers << "w (" << r.stats_url << ")";
      out << "\n";
    }

  if (closed(sc)) {
    double max_ms = 0;
    for (const auto &e : rep.executors)
      for (const auto &r : e.runs)
        max_ms = std::max(max_ms, r.last_ms.value_or(0));
    const bool secs = max_ms >= 1000;
    const double sc_ = secs ? 0.001 : 1.0;
    const char *f = secs ? "%.2f" : "%.0f";
    const std::string unit = secs ? "s" : "ms";
    out << pad("executor", 9) << pad("N", 4) << pad("io", 5) << pad("run", 4)
        << pad("arrivals (" + unit + ", count x time)", 32) << pad("first", 7) << pad("last", 7)
        << pad("mean", 7) << pad("model", 7) << pad("ideal", 7) << pad("T(ms)", 8) << pad("eff", 6)
        << pad("late", 5) << pad("ok/sent", 8) << pad("shed", 5) << pad("fail", 5)
        << "idle core-s exec+io\n";
    for (const auto &e : rep.executors) {
      if (e.calibration) out << pad(e.executor, 9) << calibration_line(*e.calibration) << "\n";
      std::vector<double> effs;
      int late = 0, late_runs = 0, errors = 0, sent = 0, ok = 0, shed = 0, failed = 0;
      std::string error_lines;
      for (const auto &r : e.runs) {
        // Equal-cost: the ideal mean latency of the answered ranks; measured-costs: the bound
        // on the answered tiles' makespan (compare with last). T: T, or the largest tile cost.
        double ideal = std::nan("");
        if (r.model == "measured-costs" && r.makespan_bound_ms)
          ideal = *r.makespan_bound_ms;
        else if (r.ideal_total_ms && r.succeeded)
          ideal = *r.ideal_total_ms / r.succeeded;
        const std::optional<double> t = r.model == "measured-costs" ? r.wave_ms : r.cost_ms;
        out << pad(e.executor, 9) << pad(std::to_string(e.workers), 4)
            << pad(e.io_threads ? std::to_string(*e.io_threads) : "-", 5)
            << pad(std::to_string(r.run), 4) << pad(arrival_groups(r, secs), 32)
            << pad(opt_fmt(f, r.first_ms, sc_), 7) << pad(opt_fmt(f, r.last_ms, sc_), 7)
            << pad(opt_fmt(f, r.mean_ms, sc_), 7)
            << pad(r.model == "equal-cost"       ? "equal"
                   : r.model == "measured-costs" ? "costs"
                                                 : "-",
                   7)
            << pad(nan_fmt(f, ideal, sc_), 7) << pad(opt_fmt("%.0f", t), 8)
            << pad(r.model_error ? "ERR" : opt_fmt("%.2f", r.efficiency), 6)
            << pad(std::to_string(r.late), 5)
            << pad(std::to_string(r.succeeded) + "/" + std::to_string(r.sent), 8)
            << pad(std::to_string(r.rejected), 5) << pad(std::to_string(r.failed), 5)
            << idle_text(r.idle_executor_s, r.idle_io_s)
            << (r.replicas.empty() ? "" : " (sum over replicas)") << "\n";
        out << replica_lines(e, r, secs);
        if (r.model_error)
          error_lines += pad(e.executor, 9) + "run " + std::to_string(r.run) +
                         ": MODEL ERROR, not a result: efficiency " +
                         opt_fmt("%.2f", r.raw_efficiency) + " > 1 + " +
                         fmt("%.2f", model_error_tolerance) +
                         " (the run beat its ideal, which was therefore no bound)\n";
        if (r.efficiency) effs.push_back(*r.efficiency);
        errors += r.model_error ? 1 : 0;
        late += r.late;
        late_runs += r.late > 0 ? 1 : 0;
        sent += r.sent;
        ok += r.succeeded;
        shed += r.rejected;
        failed += r.failed;
      }
      out << error_lines;
      if (e.runs.size() > 1) {
        out << pad(e.executor, 9) << "summary: efficiency median " << opt_fmt("%.2f", median(effs));
        if (!effs.empty())
          out << " (min " << fmt("%.2f", *std::min_element(effs.begin(), effs.end())) << ", max "
              << fmt("%.2f", *std::max_element(effs.begin(), effs.end())) << ")";
        if (errors) out << " of " << effs.size() << " runs, " << errors << " model errors";
        out << "; " << late << " needlessly late requests in " << late_runs << " of "
            << e.runs.size() << " runs; " << sent << " sent, " << ok << " ok, " << shed << " shed, "
            << failed << " failed\n";
      }
      if (const std::string split = render_split_line(e); !split.empty())
        out << pad(e.executor, 9) << split << "\n";
    }
  } else {
    out << pad("executor", 9) << pad("N", 4) << pad("io", 5) << pad("run", 4)
        << pad("capacity/s", 11) << pad("rate/s", 8) << pad("sent", 6) << pad("ok", 6)
        << pad("429", 5) << pad("err", 5) << pad("p50 ms", 8) << pad("p90 ms", 8)
        << pad("p99 ms", 8) << pad("ok/s", 7) << pad("lag ms", 7) << "idle core-s exec+io\n";
    for (const auto &e : rep.executors)
      for (const auto &r : e.runs) {
        int n429 = 0;
        for (const auto &q : r.requests)
          n429 += q.status == 429 ? 1 : 0;
        out << pad(e.executor, 9) << pad(std::to_string(e.workers), 4)
            << pad(e.io_threads ? std::to_string(*e.io_threads) : "-", 5)
            << pad(std::to_string(r.run), 4) << pad(opt_fmt("%.1f", e.capacity_rps), 11)
            << pad(opt_fmt("%.1f", e.rate), 8) << pad(std::to_string(r.requests.size()), 6)
            << pad(std::to_string(r.succeeded), 6) << pad(std::to_string(n429), 5)
            << pad(std::to_string(r.failed + r.rejected - n429), 5)
            << pad(opt_fmt("%.0f", r.p50_ms), 8) << pad(opt_fmt("%.0f", r.p90_ms), 8)
            << pad(opt_fmt("%.0f", r.p99_ms), 8) << pad(opt_fmt("%.1f", r.throughput_rps), 7)
            << pad(fmt("%.0f", r.max_send_lag_ms), 7) << idle_text(r.idle_executor_s, r.idle_io_s)
            << (r.replicas.empty() ? "" : " (sum over replicas)") << "\n";
        out << replica_lines(e, r, false);
      }
    for (const auto &e : rep.executors)
      if (const std::string split = render_split_line(e); !split.empty())
        out << pad(e.executor, 9) << split << "\n";
  }
  return out.str();
}

// ---------------------------------------------------------------------------------------------
// JSON

namespace {

// The project's one JSON writer (web/json.hpp); milliseconds keep three decimals.
using Json = JsonWriter;

} // namespace

std::string to_json(const BenchReport &rep) {
  const BenchOptions &o = rep.options;
  Json j(3);
  j.open('{');
  j.field("schema", "overdrive-bench").field("schema_version", json_schema_version);
  j.field("scenario", std::string(to_string(o.load.scenario))).field("target", rep.target);
  j.key("load").open('{');
  j.field("requests", o.load.requests).field("runs", o.load.runs);
  j.field("rate", o.load.rate).field("rate_fraction", o.rate_fraction);
  j.field("duration_s", o.load.duration_s)
      .key("seed")
      .value(static_cast<std::uint64_t>(o.load.seed));
  j.field("timeout_s", o.load.timeout_s);
  j.field("connection", o.load.close_after ? "close" : "keep-alive");
  j.field("browser_connections", o.load.browser_connections);
  j.field("path_template", o.load.path_template).field("zoom", o.load.zoom);
  j.field("late_tolerance_fraction", late_tolerance_fraction);
  j.field("model_error_tolerance", model_error_tolerance);
  j.field("equal_cost_spread", equal_cost_spread);
  j.field("cost_ms", o.cost_ms);
  j.close('}');
  j.key("server").open('{');
  if (o.url) {
    j.field("external", true);
  } else {
    j.field("external", false);
    j.field("workers", o.server.workers).field("io_threads", o.server.io_threads);
    j.field("queue_limit", o.server.queue_limit).field("work", o.server.work);
    j.field("split", o.server.split).field("keep_alive_timeout_s", o.server.keep_alive_timeout_s);
    j.field("iter", o.server.iter).field("size", o.server.size);
  }
  j.close('}');
  j.key("executors").open('[');
  for (const auto &e : rep.executors) {
    j.open('{');
    j.field("executor", e.executor).field("workers", e.workers).field("io_threads", e.io_threads);
    j.field("path_template", e.path_template);
    j.field("capacity_rps", e.capacity_rps).field("rate", e.rate).field("split", e.split);
    j.key("replicas").open('[');
    for (const ReplicaInfo &r : e.replicas) {
      j.open('{');
      j.field("replica", r.id).field("stats_url", r.stats_url).field("workers", r.workers);
      j.close('}');
    }
    j.close(']');
    j.key("calibration");
    if (e.calibration) {
      const Calibration &c = *e.calibration;
      j.open('{');
      j.field("method", "serial on the idle server, before the runs");
      j.field("source", c.source).field("split", c.split).field("samples", c.samples);
      j.field("paths", c.paths).field("elapsed_ms", c.elapsed_ms);
      j.field("t_ms", c.wall_ms).field("serial_ms", c.serial_ms);
      j.field("model", c.equal_costs() ? "equal-cost" : "measured-costs");
      j.key("tiles").open('[');
      for (const TileCost &t : c.tiles) {
        j.open('{');
        j.field("path", t.path).field("wall_ms", t.wall_ms).field("serial_ms", t.serial_ms);
        j.field("work_ms", t.work_ms).field("best_wall_ms", t.best_wall_ms);
        j.field("best_serial_ms", t.best_serial_ms).field("samples", t.samples);
        j.close('}');
      }
      j.close(']');
      j.close('}');
    } else {
      j.value(std::optional<double>()); // null
    }
    std::vector<double> effs;
    int late = 0, errors = 0, sent = 0, ok = 0, shed = 0, failed = 0;
    for (const auto &r : e.runs) {
      if (r.efficiency) effs.push_back(*r.efficiency);
      late += r.late;
      errors += r.model_error ? 1 : 0;
      sent += r.sent;
      ok += r.succeeded;
      shed += r.rejected;
      failed += r.failed;
    }
    j.key("summary").open('{');
    j.field("runs", static_cast<int>(e.runs.size())).field("median_efficiency", median(effs));
    j.field("min_efficiency",
            effs.empty() ? std::optional<double>()
                         : std::optional<double>(*std::min_element(effs.begin(), effs.end())));
    j.field("model_errors", errors).field("late", late);
    j.field("sent", sent).field("answered", ok).field("shed", shed).field("failed", failed);
    j.close('}');
    j.key("runs").open('[');
    for (const auto &r : e.runs) {
      j.open('{');
      j.field("run", r.run).field("release_ns", r.release_ns);
      j.field("sent", r.sent).field("answered", r.succeeded).field("shed", r.rejected);
      j.field("failed", r.failed);
      j.field("first_ms", r.first_ms).field("last_ms", r.last_ms).field("mean_ms", r.mean_ms);
      j.key("model");
      if (r.model.empty())
        j.value(std::optional<double>()); // null
      else
        j.value(r.model);
      j.field("cost_ms", r.cost_ms).field("cost_source", r.cost_source).field("wave_ms", r.wave_ms);
      j.field("ideal_total_ms", r.ideal_total_ms).field("measured_total_ms", r.measured_total_ms);
      j.field("makespan_bound_ms", r.makespan_bound_ms);
      j.field("makespan_bound_all_ms", r.makespan_bound_all_ms);
      j.field("list_makespan_ms", r.list_makespan_ms);
      j.field("efficiency", r.efficiency).field("raw_efficiency", r.raw_efficiency);
      j.field("model_error", r.model_error).field("late", r.late);
      j.field("p50_ms", r.p50_ms).field("p90_ms", r.p90_ms).field("p99_ms", r.p99_ms);
      j.field("throughput_rps", r.throughput_rps).field("offered_rps", r.offered_rps);
      j.field("max_send_lag_ms", r.max_send_lag_ms);
      j.field("idle_executor_seconds", r.idle_executor_s).field("idle_io_seconds", r.idle_io_s);
      j.key("replicas").open('[');
      for (const ReplicaRun &rr : r.replicas) {
        j.open('{');
        j.field("replica", rr.id).field("tiles", rr.tiles).field("ok", rr.ok);
        j.field("idle_executor_seconds", rr.idle_executor_s);
        j.field("idle_io_seconds", rr.idle_io_s);
        j.close('}');
      }
      j.close(']');
      j.key("requests").open('[');
      for (const auto &q : r.requests) {
        j.open('{');
        j.field("index", q.index).field("path", q.path);
        j.field("connection", std::string(to_string(q.connection)));
        j.field("scheduled_ms", q.scheduled_ms).field("connect_start_ms", q.connect_start_ms);
        j.field("connected_ms", q.connected_ms).field("sent_ms", q.sent_ms);
        j.field("first_byte_ms", q.first_byte_ms).field("done_ms", q.done_ms);
        j.field("latency_ms", q.latency_ms()).field("status", q.status).field("error", q.error);
        j.field("executor", q.executor).field("worker", q.worker).field("replica", q.replica);
        j.field("bytes", q.bytes);
        j.key("server").open('{');
        j.field("io_ms", q.server.io).field("queue_ms", q.server.queue);
        j.field("render_ms", q.server.render).field("encode_ms", q.server.encode);
        j.field("work_ms", q.server.work).field("cpu_ms", q.server.cpu);
        j.field("runq_ms", q.server.runq);
        j.close('}');
        j.field("cost_ms", q.cost_ms).field("ideal_ms", q.ideal_ms).field("late", q.late);
        j.close('}');
      }
      j.close(']');
      j.close('}');
    }
    j.close(']');
    j.close('}');
  }
  j.close(']');
  j.close('}');
  return j.str() + "\n";
}

// ---------------------------------------------------------------------------------------------
// SVG

namespace {

std::string xml(std::string_view s) {
  std::string out;
  for (char c : s) {
    switch (c) {
    case '&':
      out += "&amp;";
      break;
    case '<':
      out += "&lt;";
      break;
    case '>':
      out += "&gt;";
      break;
    case '"':
      out += "&quot;";
      break;
    default:
      out += c;
    }
  }
  return out;
}

double nice_step(double span, int ticks) {
  const double raw = span / ticks;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (raw <= m * mag) return m * mag;
  return 10 * mag;
}

struct Phase {
  const char *name, *colour;
};
constexpr std::size_t svg_max_rows = 200;

const Phase phase_connect{"connect", "#8d8d8d"};
const Phase phase_stall{"client wait (queued in client / before send)", "#d9d9d9"};
const Phase phase_wait{"sent, waiting (network, I/O thread)", "#ffd166"};
const Phase phase_queue{"server queue", "#f4845f"};
const Phase phase_render{"render (incl. synthetic work)", "#3d6fb6"};
const Phase phase_encode{"encode", "#2a9d8f"};
const Phase phase_download{"download", "#9b5de5"};

} // namespace

std::string to_svg(const BenchReport &rep) {
  const Scenario sc = rep.options.load.scenario;
  std::vector<const RunResult *> shown;
  double max_ms = 1;
  for (const auto &e : rep.executors) {
    const RunResult *r = representative(e, sc);
    shown.push_back(r);
    if (!r) continue;
    for (std::size_t i = 0; i < std::min(r->requests.size(), svg_max_rows); ++i) {
      const RequestRecord &q = r->requests[i];
      max_ms = std::max({max_ms, q.done_ms.value_or(0), q.ideal_ms.value_or(0),
                         q.first_byte_ms.value_or(0), q.sent_ms.value_or(0)});
    }
  }
  const double left = 150, plot_w = 760, right = 20;
  const double width = left + plot_w + right;
  const double step = nice_step(max_ms, 8);
  const double axis_max = std::ceil(max_ms / step) * step;
  auto X = [&](double ms) { return left + std::clamp(ms, 0.0, axis_max) / axis_max * plot_w; };

  std::ostringstream body;
  double y = 20;
  // Title and legend.
  std::string title = "overdrive bench: " + std::string(to_string(sc)) + ", target " + rep.target;
  if (!rep.options.url) title += ", work " + rep.options.server.work;
  body << "<text x=\"10\" y=\"" << y << "\" font-size=\"15\" font-weight=\"bold\">" << xml(title)
       << "</text>\n";
  y += 18;
  double lx = 10;
  for (const Phase &p : {phase_connect, phase_stall, phase_wait, phase_queue, phase_render,
                         phase_encode, phase_download}) {
    body << "<rect x=\"" << lx << "\" y=\"" << y - 9 << "\" width=\"10\" height=\"10\" fill=\""
         << p.colour << "\"/><text x=\"" << lx + 13 << "\" y=\"" << y << "\">" << xml(p.name)
         << "</text>\n";
    lx += 22 + 6.3 * static_cast<double>(std::string_view(p.name).size());
    if (lx > width - 150) {
      lx = 10;
      y += 15;
    }
  }
  y += 15;
  body << "<line x1=\"" << 10 << "\" y1=\"" << y - 4 << "\" x2=\"" << 10 << "\" y2=\"" << y + 6
       << "\" stroke=\"#000\" stroke-width=\"2\"/><text x=\"16\" y=\"" << y + 5
       << "\">ideal arrival of the same rank (model)</text>"
       << "<text x=\"260\" y=\"" << y + 5
       << "\" fill=\"#c1121f\">label in red: needlessly late</text>\n";
  y += 22;

  for (std::size_t p = 0; p < rep.executors.size(); ++p) {
    const ExecutorResult &e = rep.executors[p];
    const RunResult *r = shown[p];
    std::string head = e.executor + ": " + std::to_string(e.workers) + " workers";
    if (e.io_threads) head += ", " + std::to_string(*e.io_threads) + " I/O threads";
    if (r) {
      head += "; run " + std::to_string(r->run) + " of " + std::to_string(e.runs.size());
      if (closed(sc) && e.runs.size() > 1) head += " (median efficiency)";
      if (!r->model.empty()) head += ", " + r->model + " model";
      if (r->efficiency) head += ", efficiency " + fmt("%.2f", *r->efficiency);
      if (r->model_error) head += ", MODEL ERROR";
      if (r->rejected + r->failed)
        head += ", " + std::to_string(r->succeeded) + "/" + std::to_string(r->sent) + " ok";
      if (closed(sc)) head += ", " + std::to_string(r->late) + " late";
      if (r->p99_ms)
        head += ", p50 " + fmt("%.0f", r->p50_ms.value_or(0)) + " / p99 " +
                fmt("%.0f", *r->p99_ms) + " ms";
      if (r->idle_executor_s && r->idle_io_s)
        head +=
            ", idle while waiting " + fmt("%.2f", *r->idle_executor_s + *r->idle_io_s) + " core-s";
    }
    y += 8;
    body << "<text x=\"10\" y=\"" << y << "\" font-size=\"13\" font-weight=\"bold\">" << xml(head)
         << "</text>\n";
    y += 8;
    if (!r) continue;
    // Open loop can send thousands: show the first svg_max_rows in schedule order.
    const std::size_t n = std::min(r->requests.size(), svg_max_rows);
    if (n < r->requests.size())
      body << "<text x=\"" << width - right << "\" y=\"" << y << "\" text-anchor=\"end\">first "
           << n << " of " << r->requests.size() << " requests</text>\n";
    const bool tooltips = n <= 40;
    const double row = n <= 40 ? 14 : std::max(1.0, 400.0 / static_cast<double>(n));
    const double bar = row <= 4 ? row : row - 3;
    const double top = y;
    // Grid.
    for (double t = 0; t <= axis_max + 1e-9; t += step)
      body << "<line x1=\"" << X(t) << "\" y1=\"" << top << "\" x2=\"" << X(t) << "\" y2=\""
           << top + row * static_cast<double>(n) << "\" stroke=\"#eee\"/>\n";
    for (std::size_t i = 0; i < n; ++i) {
      const RequestRecord &q = r->requests[i];
      const double ry = top + row * static_cast<double>(i);
      auto seg = [&](double a, double b, const Phase &ph) {
        if (!(b > a)) return;
        body << "<rect x=\"" << fmt("%.1f", X(a)) << "\" y=\"" << fmt("%.1f", ry) << "\" width=\""
             << fmt("%.2f", std::max(0.5, X(b) - X(a))) << "\" height=\"" << fmt("%.1f", bar)
             << "\" fill=\"" << ph.colour << "\"";
        if (tooltips)
          body << "><title>" << xml(ph.name) << ": " << fmt("%.1f", a) << "-" << fmt("%.1f", b)
               << " ms</title></rect>\n";
        else
          body << "/>\n";
      };
      const double s0 = q.scheduled_ms;
      const double sent = q.sent_ms.value_or(q.connected_ms.value_or(s0));
      seg(s0, sent, phase_stall);
      if (q.connect_start_ms && q.connected_ms)
        seg(std::max(s0, *q.connect_start_ms), *q.connected_ms, phase_connect);
      const double fb = q.first_byte_ms.value_or(q.done_ms.value_or(sent));
      double wait_end = fb;
      if (q.server.render && q.server.encode && q.first_byte_ms) {
        const double enc0 = std::max(sent, fb - *q.server.encode);
        const double ren0 = std::max(sent, enc0 - *q.server.render);
        const double que0 = std::max(sent, ren0 - q.server.queue.value_or(0));
        wait_end = que0;
        seg(que0, ren0, phase_queue);
        seg(ren0, enc0, phase_render);
        seg(enc0, fb, phase_encode);
      }
      seg(sent, wait_end, phase_wait);
      if (q.done_ms) seg(fb, *q.done_ms, phase_download);
      if (q.ideal_ms)
        body << "<line x1=\"" << fmt("%.1f", X(*q.ideal_ms)) << "\" y1=\"" << fmt("%.1f", ry - 1)
             << "\" x2=\"" << fmt("%.1f", X(*q.ideal_ms)) << "\" y2=\"" << fmt("%.1f", ry + bar + 1)
             << "\" stroke=\"#000\" stroke-width=\"2\"/>\n";
      if (row >= 10) {
        // Appended piecewise: g++ 12 warns (-Wrestrict, a false positive) on "#" + to_string().
        std::string label = "#";
        label += std::to_string(q.index);
        label += ' ';
        label += to_string(q.connection);
        if (!q.replica.empty()) {
          label += ' ';
          label += q.replica;
        }
        if (q.worker >= 0) {
          label += " w";
          label += std::to_string(q.worker);
        }
        if (!q.ok()) label += q.error.empty() ? " HTTP " + std::to_string(q.status) : " error";
        body << "<text x=\"" << left - 6 << "\" y=\"" << fmt("%.1f", ry + bar - 2)
             << "\" text-anchor=\"end\"" << (q.late || !q.ok() ? " fill=\"#c1121f\"" : "") << ">"
             << xml(label) << (q.late ? " late" : "") << "</text>\n";
      } else if (!q.ok() || q.late) {
        body << "<rect x=\"" << left - 8 << "\" y=\"" << fmt("%.1f", ry)
             << "\" width=\"5\" height=\"" << fmt("%.1f", bar) << "\" fill=\"#c1121f\"/>\n";
      }
    }
    y = top + row * static_cast<double>(n) + 4;
    // Axis.
    body << "<line x1=\"" << left << "\" y1=\"" << y << "\" x2=\"" << left + plot_w << "\" y2=\""
         << y << "\" stroke=\"#444\"/>\n";
    for (double t = 0; t <= axis_max + 1e-9; t += step)
      body << "<line x1=\"" << X(t) << "\" y1=\"" << y << "\" x2=\"" << X(t) << "\" y2=\"" << y + 4
           << "\" stroke=\"#444\"/><text x=\"" << X(t) << "\" y=\"" << y + 15
           << "\" text-anchor=\"middle\">" << fmt("%.0f", t) << "</text>\n";
    body << "<text x=\"" << left + plot_w << "\" y=\"" << y + 28
         << "\" text-anchor=\"end\">ms after release</text>\n";
    y += 40;
  }
  std::ostringstream svg;
  svg << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\"" << y
      << "\" viewBox=\"0 0 " << width << " " << y
      << "\" font-family=\"sans-serif\" font-size=\"11\">\n<rect width=\"100%\" height=\"100%\" "
         "fill=\"#fff\"/>\n"
      << body.str() << "</svg>\n";
  return svg.str();
}

} // namespace overdrive::loadgen
