// What the server tells about itself: /api/stats (options, I/O pool, executor counters),
// /api/trace (job events) and /metrics (Prometheus text).
#include "web/json.hpp"
#include "web/server_state.hpp"
#include "web/wire.hpp"

#include <cstdio>
#include <sstream>

namespace overdrive {
namespace {

void write_events(JsonWriter &j, const std::vector<JobEvent> &events) {
  j.open('[');
  for (const JobEvent &e : events)
    j.open('{')
        .field("seq", e.seq)
        .field("label", e.label)
        .field("worker", e.worker)
        .field("submit_ns", e.submit_ns)
        .field("start_ns", e.start_ns)
        .field("end_ns", e.end_ns)
        .field("outcome", to_string(e.outcome))
        .field(wire::trace::cpu_ns, e.cpu_ns)
        .field(wire::trace::runq_ns, e.runq_ns)
        .close('}');
  j.close(']');
}

void write_stats(JsonWriter &j, const ExecutorStats &s) {
  namespace k = wire::stats;
  j.open('{')
      .field(k::name, s.name)
      .field(k::workers, s.workers)
      .field(k::queue_limit, s.queue_limit)
      .field(k::queued, s.queued)
      .field(k::busy, s.busy)
      .field(k::accepted, s.accepted)
      .field(k::refused, s.refused)
      .field(k::completed, s.completed)
      .field(k::failed, s.failed)
      .field(k::cancelled, s.cancelled)
      .key(k::busy_seconds)
      .open('[');
  for (const double b : s.busy_seconds)
    j.value(b);
  j.close(']').key(k::cpu_seconds).open('[');
  for (const double c : s.cpu_seconds)
    j.value(c);
  j.close(']').key(k::runq_seconds);
  if (s.runq_seconds) {
    j.open('[');
    for (const double r : *s.runq_seconds)
      j.value(r);
    j.close(']');
  } else {
    j.raw_value("null");
  }
  j.field(k::idle_while_waiting_seconds, s.idle_while_waiting_seconds)
      .field(k::last_seq, s.last_seq)
      .close('}');
}

} // namespace

void TileServer::Impl::handle_stats(const httplib::Request &, httplib::Response &res) {
  res.set_content(stats_json(), "application/json");
  res.set_header("Cache-Control", "no-store");
}

void TileServer::Impl::handle_metrics(const httplib::Request &, httplib::Response &res) {
  res.set_content(metrics_text(), "text/plain; version=0.0.4");
}

void TileServer::Impl::handle_trace(const httplib::Request &req, httplib::Response &res) {
  std::uint64_t since = 0;
  if (req.has_param("since")) {
    const std::string v = req.get_param_value("since");
    std::size_t used = 0;
    try {
      if (v.empty() || v[0] == '-') throw std::invalid_argument(v);
      since = std::stoull(v, &used);
    } catch (const std::exception &) {
      used = std::string::npos;
    }
    if (used != v.size()) {
      reply_error(res, 400, "since must be a non-negative integer");
      return;
    }
  }
  std::vector<ExecutorKind> kinds = all_executor_kinds();
  if (req.has_param("executor")) {
    const auto k = parse_executor_kind(req.get_param_value("executor"));
    if (!k) {
      reply_error(res, 400, "unknown executor (valid: " + executor_kind_names() + ")");
      return;
    }
    kinds = {*k};
  }
  JsonWriter j;
  j.open('{').field("now_ns", to_ns(Clock::now())).key(wire::stats::executors).open('[');
  for (const ExecutorKind kind : kinds) {
    Executor &ex = executor(kind);
    j.open('{')
        .field(wire::stats::name, ex.name())
        .field(wire::stats::workers, ex.workers())
        .field(wire::stats::last_seq, ex.stats().last_seq)
        .key("events");
    write_events(j, ex.trace_since(since));
    j.close('}');
  }
  const std::string out = std::move(j.close(']').close('}')).take();
  res.set_content(out, "application/json");
  res.set_header("Cache-Control", "no-store");
}

std::string TileServer::Impl::stats_json() {
  namespace k = wire::stats;
  const detail::IoMeter::Snapshot io = io_meter.snapshot();
  const detail::InlineSeats::Snapshot seats = inline_seats.snapshot();
  JsonWriter j;
  j.open('{').field(k::now_ns, to_ns(Clock::now()));
  j.key(k::options)
      .open('{')
      .field("replica", replica_id)
      .field("default_executor", to_string(opt.executor))
      .field("workers", workers_of(opt))
      .field("io_threads", opt.io_threads)
      .field("queue_limit", opt.queue_limit)
      .field("split", opt.split)
      .field("work", to_string(opt.work))
      .field("keep_alive_timeout_s", opt.keep_alive_timeout_s)
      .field("request_timeout_s", opt.request_timeout_s)
      .field("isa", to_string(best_isa()))
      .close('}');
  j.key(k::io)
      .open('{')
      .field("threads", opt.io_threads)
      .field("queued", io.queued)
      .field("busy", io.busy)
      .field("rendering", io.rendering)
      .field("connections", io.connections)
      .key(k::idle_while_waiting_seconds)
      .fixed(io.idle_while_waiting_seconds, 3)
      .field("live_threads", io_live.load())
      .field("shed", io_shed.load())
      .key("inline_seats")
      .open('{')
      .field("capacity", seats.capacity)
      .field("held", seats.held)
      .field("waiting", seats.waiting)
      .close('}')
      .close('}');
  const detail::TileCache::Snapshot cache = tile_cache.snapshot();
  j.key(k::cache)
      .open('{')
      .field(k::capacity_bytes, cache.capacity_bytes)
      .field(k::bytes, cache.bytes)
      .field(k::entries, cache.entries)
      .field(k::hits, cache.hits)
      .field(k::misses, cache.misses)
      .field(k::evictions, cache.evictions)
      .field(k::coalesce, opt.coalesce)
      .field(k::coalesced, coalesced.load())
      .field(k::not_modified, not_modified.load())
      .close('}');
  j.key(k::names).open('{');
  auto names = [&j](std::string_view key, const std::vector<std::string> &list) {
    j.key(key).open('[');
    for (const auto &n : list)
      j.value(n);
    j.close(']');
  };
  names("executors", all_executor_names());
  names("palettes", all_palette_names());
  names("precisions", all_precision_names());
  names("precision_forms", precision_forms());
  j.close('}');
  j.key(k::executors).open('[');
  for (const auto &e : executors)
    write_stats(j, e->stats());
  return std::move(j.close(']').close('}')).take();
}

std::string TileServer::Impl::metrics_text() {
  std::ostringstream m;
  auto metric = [&m](const char *name, const char *type, const char *help) {
    m << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
  };
  std::vector<ExecutorStats> stats;
  for (auto &e : executors)
    stats.push_back(e->stats());
  auto per_exec = [&](const char *name, const char *type, const char *help, auto field) {
    metric(name, type, help);
    for (const auto &s : stats)
      m << name << "{executor=\"" << s.name << "\"} " << field(s) << "\n";
  };
  per_exec("overdrive_jobs_accepted_total", "counter", "Tile jobs accepted (queued or run).",
           [](const ExecutorStats &s) { return s.accepted; });
  per_exec("overdrive_jobs_refused_total", "counter", "Tile jobs refused (429).",
           [](const ExecutorStats &s) { return s.refused; });
  per_exec("overdrive_jobs_completed_total", "counter", "Tile jobs completed.",
           [](const ExecutorStats &s) { return s.completed; });
  per_exec("overdrive_jobs_failed_total", "counter", "Tile jobs that threw.",
           [](const ExecutorStats &s) { return s.failed; });
  per_exec("overdrive_jobs_cancelled_total", "counter", "Tile jobs abandoned.",
           [](const ExecutorStats &s) { return s.cancelled; });
  per_exec("overdrive_jobs_queued", "gauge", "Tile jobs waiting for a worker.",
           [](const ExecutorStats &s) { return s.queued; });
  per_exec("overdrive_workers_busy", "gauge", "Workers running a tile job.",
           [](const ExecutorStats &s) { return s.busy; });
  per_exec("overdrive_workers", "gauge", "Workers per executor.",
           [](const ExecutorStats &s) { return s.workers; });
  per_exec("overdrive_idle_while_waiting_seconds_total", "counter",
           "Core-seconds a job waited while a worker of its executor was idle.",
           [](const ExecutorStats &s) { return s.idle_while_waiting_seconds; });
  // One counter per (executor, worker); values(s) is null where the executor has none.
  auto per_worker = [&](const char *name, const char *help, auto values) {
    metric(name, "counter", help);
    for (const auto &s : stats)
      if (const std::vector<double> *v = values(s))
        for (std::size_t w = 0; w < v->size(); ++w)
          m << name << "{executor=\"" << s.name << "\",worker=\"" << w << "\"} " << (*v)[w] << "\n";
  };
  per_worker("overdrive_worker_busy_seconds_total", "Busy time per worker.",
             [](const ExecutorStats &s) { return &s.busy_seconds; });
  per_worker("overdrive_worker_cpu_seconds_total", "CPU time of finished jobs per worker.",
             [](const ExecutorStats &s) { return &s.cpu_seconds; });
  per_worker("overdrive_worker_runq_seconds_total",
             "Run-queue wait (runnable, no core free) of finished jobs per worker.",
             [](const ExecutorStats &s) -> const std::vector<double> * {
               return s.runq_seconds ? &*s.runq_seconds : nullptr;
             });
  const detail::IoMeter::Snapshot io = io_meter.snapshot();
  metric("overdrive_io_threads", "gauge", "Connection threads (--io-threads).");
  m << "overdrive_io_threads " << opt.io_threads << "\n";
  metric("overdrive_io_connections_queued", "gauge", "Connections waiting for an I/O thread.");
  m << "overdrive_io_connections_queued " << io.queued << "\n";
  metric("overdrive_io_connections_total", "counter", "Connections accepted.");
  m << "overdrive_io_connections_total " << io.connections << "\n";
  metric("overdrive_io_idle_while_waiting_seconds_total", "counter",
         "Worker-seconds idle while connections waited for an I/O thread.");
  m << "overdrive_io_idle_while_waiting_seconds_total " << io.idle_while_waiting_seconds << "\n";
  metric("overdrive_io_threads_live", "gauge", "Connection threads running now.");
  m << "overdrive_io_threads_live " << io_live.load() << "\n";
  metric("overdrive_io_connections_shed_total", "counter",
         "Connections answered 503 at once because too many waited for an I/O thread.");
  m << "overdrive_io_connections_shed_total " << io_shed.load() << "\n";
  metric("overdrive_http_responses_total", "counter", "HTTP responses by class.");
  const char *classes[] = {"2xx", "3xx", "4xx", "429", "5xx", "503"};
  for (std::size_t i = 0; i < responses.size(); ++i)
    m << "overdrive_http_responses_total{code=\"" << classes[i] << "\"} " << responses[i].load()
      << "\n";

  const detail::TileCache::Snapshot cache = tile_cache.snapshot();
  metric("overdrive_tile_cache_hits_total", "counter", "Tiles answered from the memory cache.");
  m << "overdrive_tile_cache_hits_total " << cache.hits << "\n";
  metric("overdrive_tile_cache_misses_total", "counter",
         "Tile lookups that missed the memory cache (0 while it is off).");
  m << "overdrive_tile_cache_misses_total " << cache.misses << "\n";
  metric("overdrive_tile_cache_evictions_total", "counter",
         "Tiles evicted from the memory cache to make room (least recently used first).");
  m << "overdrive_tile_cache_evictions_total " << cache.evictions << "\n";
  metric("overdrive_tile_cache_bytes", "gauge", "Bytes the memory cache holds now.");
  m << "overdrive_tile_cache_bytes " << cache.bytes << "\n";
  metric("overdrive_tile_cache_capacity_bytes", "gauge", "Memory cache capacity (--cache-mb).");
  m << "overdrive_tile_cache_capacity_bytes " << cache.capacity_bytes << "\n";
  metric("overdrive_tile_cache_entries", "gauge", "Tiles in the memory cache.");
  m << "overdrive_tile_cache_entries " << cache.entries << "\n";
  metric("overdrive_tile_coalesced_total", "counter",
         "Tile requests answered with an identical concurrent request's render.");
  m << "overdrive_tile_coalesced_total " << coalesced.load() << "\n";
  metric("overdrive_tile_not_modified_total", "counter",
         "Tile requests answered 304 Not Modified (If-None-Match).");
  m << "overdrive_tile_not_modified_total " << not_modified.load() << "\n";

  // Histograms of rendered tiles (cache hits, 304s and coalesced requests are counted above).
  using detail::LatencyHistogram;
  using detail::TileHistograms;
  char num[32];
  auto g = [&num](double v) {
    std::snprintf(num, sizeof num, "%.9g", v);
    return num;
  };
  for (std::size_t p = 0; p < TileHistograms::kPhases.size(); ++p) {
    const std::string name =
        "overdrive_tile_" + std::string(TileHistograms::kPhases[p]) + "_seconds";
    const std::string help =
        p + 1 == TileHistograms::kPhases.size()
            ? "Seconds from a rendered tile's connection waiting for an I/O thread to its "
              "response, per executor."
            : "Seconds a rendered tile spent in Server-Timing phase " +
                  std::string(TileHistograms::kPhases[p]) + ", per executor.";
    metric(name.c_str(), "histogram", help.c_str());
    for (std::size_t e = 0; e < executors.size(); ++e) {
      const LatencyHistogram::Snapshot h = histograms[e].phase[p].snapshot();
      const std::string label = "executor=\"" + std::string(executors[e]->name()) + "\"";
      for (std::size_t b = 0; b < LatencyHistogram::kBounds.size(); ++b)
        m << name << "_bucket{" << label << ",le=\"" << g(LatencyHistogram::kBounds[b]) << "\"} "
          << h.cumulative[b] << "\n";
      m << name << "_bucket{" << label << ",le=\"+Inf\"} " << h.count << "\n";
      m << name << "_sum{" << label << "} " << g(h.sum) << "\n";
      m << name << "_count{" << label << "} " << h.count << "\n";
    }
  }
  return m.str();
}

} // namespace overdrive
