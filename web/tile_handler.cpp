// GET /tile/Z/X/Y.png: validate (params.cpp), take an inline seat if the executor is inline,
// submit to the executor, answer 429 + Retry-After at once when it is full, and report where
// the tile's time went in Server-Timing.
#include "web/server_state.hpp"
#include "web/wire.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <future>
#include <optional>
#include <span>

namespace overdrive {
namespace {

using detail::ms_between;
using detail::peer_gone;

std::string fixed3(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", v);
  return buf;
}

struct TileResult {
  std::vector<std::uint8_t> png;
  double queue_ms = 0, work_ms = 0, render_ms = 0, encode_ms = 0;
  double cpu_ms = 0;             // CPU time during work + render, over every thread
  std::optional<double> runq_ms; // run-queue wait during work + render; nullopt: unknown
  int worker = -1;
  bool cancelled = false; // the client left before a worker took the tile
};

} // namespace

void TileServer::Impl::handle_tile(const httplib::Request &req, httplib::Response &res) {
  if (shutting_down) {
    res.set_header("Retry-After", "5");
    reply_error(res, 503, "server is shutting down");
    return;
  }
  // /tile/Z/X/Y.png, parsed by hand: no regex over client-controlled input.
  std::string_view rest = std::string_view(req.path).substr(6);
  std::string_view parts[3];
  for (int i = 0; i < 3; ++i) {
    const auto slash = rest.find('/');
    if ((i < 2) == (slash == std::string_view::npos)) {
      reply_error(res, 400, "expected /tile/Z/X/Y.png");
      return;
    }
    parts[i] = i < 2 ? rest.substr(0, slash) : rest;
    if (i < 2) rest.remove_prefix(slash + 1);
  }
  if (parts[2].size() < 5 || parts[2].substr(parts[2].size() - 4) != ".png") {
    reply_error(res, 400, "expected /tile/Z/X/Y.png");
    return;
  }
  parts[2].remove_suffix(4);
  std::multimap<std::string, std::string> params(req.params.begin(), req.params.end());
  const TileParse parsed = parse_tile_query(parts[0], parts[1], parts[2], params);
  if (!parsed.query) {
    reply_error(res, 400, parsed.error);
    return;
  }
  const TileQuery q = *parsed.query;
  const ExecutorKind kind = q.executor.value_or(opt.executor);
  Executor &ex = executor(kind);
  detail::log_note().executor = std::string(ex.name());

  // Inline renders on this connection's thread: take one of the N inline I/O threads ("seats")
  // for the rest of the connection's life, as N real I/O threads would be taken.
  double seat_wait_ms = 0.0;
  detail::ConnectionClock &connection = detail::this_connection();
  if (executor_info(kind).runs_on_caller && !connection.on_close) {
    const auto t0 = Clock::now();
    io_meter.queued(+1);
    const bool seated = inline_seats.acquire(t0 + std::chrono::seconds(60));
    io_meter.queued(-1);
    seat_wait_ms = ms_between(t0, Clock::now());
    if (!seated) {
      res.set_header("Retry-After", "5");
      reply_error(res, 503,
                  shutting_down ? "server is shutting down"
                                : "no inline I/O thread became free within 60 s");
      return;
    }
    connection.on_close = [seats = &inline_seats] { seats->release(); };
  }

  const std::string label =
      std::to_string(q.tile.z) + "/" + std::to_string(q.tile.x) + "/" + std::to_string(q.tile.y);
  const WorkSpec work = opt.work;
  // The connection's socket stays open while this thread waits for the job (the 504 bug path
  // below withdraws it before returning), so the job may peek at it.
  auto conn_fd = std::make_shared<std::atomic<int>>(detail::this_conn().fd);
  auto future = submit_task(
      ex,
      [this, q, work, conn_fd](const JobContext &ctx) {
        TileResult r;
        r.worker = ctx.worker();
        r.queue_ms = ms_between(ctx.submitted(), ctx.started());
        if (peer_gone(conn_fd->load())) {
          // Nobody will read this tile: skip the render, count it as cancelled.
          ctx.mark_cancelled();
          r.cancelled = true;
          return r;
        }
        io_meter.rendering(+1);
        struct Done {
          detail::IoMeter &m;
          ~Done() { m.rendering(-1); }
        } done{io_meter};
        // The CPU samples lie inside render's wall interval [t0, t2], so cpu <= render.
        const auto t0 = Clock::now();
        const CpuTimes c0 = ctx.cpu_times();
        perform_work(work);
        const auto t1 = Clock::now();
        const int w = q.request.view.pixel_width, h = q.request.view.pixel_height;
        std::vector<std::uint8_t> rgb(static_cast<std::size_t>(w) * static_cast<std::size_t>(h) *
                                      3);
        const std::size_t row = static_cast<std::size_t>(w) * 3;
        ctx.for_rows(0, h, [&](int a, int b) {
          render_rows(q.request, a, b,
                      std::span(rgb).subspan(static_cast<std::size_t>(a) * row,
                                             static_cast<std::size_t>(b - a) * row));
        });
        const CpuTimes used = ctx.cpu_times() - c0;
        const auto t2 = Clock::now();
        r.png = encode_png(rgb, w, h);
        const auto t3 = Clock::now();
        r.work_ms = ms_between(t0, t1);
        r.render_ms = ms_between(t1, t2);
        r.encode_ms = ms_between(t2, t3);
        r.cpu_ms = static_cast<double>(used.cpu_ns) * 1e-6;
        if (used.runq_ns) r.runq_ms = static_cast<double>(*used.runq_ns) * 1e-6;
        return r;
      },
      label);
  if (!future) {
    const ExecutorStats s = ex.stats();
    double mean;
    {
      std::lock_guard lock(ewma_mu);
      mean = job_seconds[static_cast<std::size_t>(kind)];
    }
    const double wait = (static_cast<double>(s.queued) / std::max(1, s.workers) + 1.0) * mean;
    res.set_header("Retry-After", std::to_string(std::max(1, static_cast<int>(std::ceil(wait)))));
    reply_error(res, shutting_down ? 503 : 429,
                shutting_down ? "server is shutting down"
                              : "executor " + std::string(ex.name()) + " has " +
                                    std::to_string(s.queued) + " tiles queued (limit " +
                                    std::to_string(s.queue_limit) + "); retry later");
    return;
  }
  // The job always runs (shutdown drains); the bound only guards against a bug hanging a
  // connection thread forever.
  if (future->wait_for(std::chrono::minutes(10)) != std::future_status::ready) {
    conn_fd->store(-1);
    reply_error(res, 504, "tile took longer than 10 minutes");
    return;
  }
  const TileResult r = future->get();
  if (r.cancelled) {
    close_after(res);
    detail::log_note().timing = "cancelled queue=" + fixed3(r.queue_ms) + " ms";
    reply_error(res, 499, "client closed the connection before its tile was rendered");
    return;
  }
  {
    std::lock_guard lock(ewma_mu);
    double &m = job_seconds[static_cast<std::size_t>(kind)];
    const double s = (r.work_ms + r.render_ms + r.encode_ms) / 1000.0;
    m = m == 0.0 ? s : 0.8 * m + 0.2 * s;
  }
  double io_ms = seat_wait_ms;
  if (connection.requests++ == 0) io_ms += ms_between(connection.enqueued, connection.started);
  namespace t = wire::timing;
  auto metric = [](std::string_view name, double ms, std::string_view desc = {}) {
    std::string m = std::string(name) + ";dur=" + fixed3(ms);
    if (!desc.empty()) m += ";desc=\"" + std::string(desc) + "\"";
    return m;
  };
  std::string timing =
      metric(t::io, io_ms, "waiting for an I/O thread") + ", " + metric(t::queue, r.queue_ms) +
      ", " + metric(t::render, r.work_ms + r.render_ms) + ", " + metric(t::encode, r.encode_ms);
  if (work.kind != WorkSpec::Kind::None)
    timing +=
        ", " + metric(t::work, r.work_ms, "synthetic " + to_string(work) + " (part of render)");
  timing += ", " + metric(t::cpu, r.cpu_ms, "CPU time of render");
  if (r.runq_ms)
    timing += ", " + metric(t::runq, *r.runq_ms, "waiting for a core (part of render)");
  res.set_header("Server-Timing", timing);
  res.set_header(std::string(wire::header::executor), std::string(ex.name()));
  res.set_header(std::string(wire::header::worker), std::to_string(r.worker));
  res.set_header("Cache-Control", "public, max-age=3600");
  detail::log_note().timing = "worker=" + std::to_string(r.worker) + " io=" + fixed3(io_ms) +
                              " queue=" + fixed3(r.queue_ms) +
                              " render=" + fixed3(r.work_ms + r.render_ms) +
                              " encode=" + fixed3(r.encode_ms) + " cpu=" + fixed3(r.cpu_ms) +
                              (r.runq_ms ? " runq=" + fixed3(*r.runq_ms) : std::string()) + " ms";
  res.set_content(std::string(r.png.begin(), r.png.end()), "image/png");
}

} // namespace overdrive
