// GET /tile/Z/X/Y.png: validate (params.cpp); answer 304 to a matching If-None-Match, a cached
// tile from memory, or an identical request's render (coalescing) without an executor job;
// otherwise take an inline seat if the executor is inline, submit to the executor, answer 429 +
// Retry-After at once when it is full, and report where the tile's time went in Server-Timing.
//
// Caching (tile_cache.hpp): a tile's bytes depend only on its key (z/x/y, size, iter, palette,
// precision, kRendererVersion), never on the executor, so every 200 carries a strong ETag (the
// key) and Cache-Control: public, max-age=31536000, immutable; cache and coalescing ignore the
// executor too (a tile service wants that; to compare executors the lab sends a nonce). A
// request with a nonce bypasses every cache: no ETag, Cache-Control: no-store, If-None-Match
// ignored, never coalesced, never stored, always rendered by the executor it names.
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

using detail::Flights;
using detail::ms_between;
using detail::peer_gone;

std::string fixed3(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", v);
  return buf;
}

/// Longest a connection thread waits for a tile (its own job, or the identical request it joined).
/// Jobs always run (shutdown drains): the bound only guards against a bug hanging a thread.
constexpr auto kTileWaitBound = std::chrono::minutes(10);

constexpr std::string_view kImmutable = "public, max-age=31536000, immutable";

auto metric(std::string_view name, double ms, std::string_view desc = {}) {
  std::string m = std::string(name) + ";dur=" + fixed3(ms);
  if (!desc.empty()) m += ";desc=\"" + std::string(desc) + "\"";
  return m;
}

/// The PNG as the response body. httplib 0.11 needs it in res.body (its content-provider path
/// stops writing once the listener closes, which would truncate tiles delivered during a
/// graceful stop), so this is the one copy a response makes of a shared, cached body.
void set_png(httplib::Response &res, const std::string &png) {
  res.set_content(png, "image/png");
}

struct TileResult {
  std::vector<std::uint8_t> png;
  double queue_ms = 0, work_ms = 0, render_ms = 0, encode_ms = 0;
  double cpu_ms = 0;                  // CPU time during work + render, over every thread
  std::optional<double> runq_ms;      // run-queue wait during work + render; nullopt: unknown
  std::optional<double> disagreement; // ref=1: fraction of pixels unlike the reference's
  int worker = -1;
  bool cancelled = false; // the client left before a worker took the tile
};

/// Renders req into rgb from its escape counts, and the same pixels in the reference format;
/// returns the fraction of pixels whose counts differ.
double render_with_reference(const JobContext &ctx, const RenderRequest &req,
                             std::vector<std::uint8_t> &rgb) {
  const int w = req.view.pixel_width, h = req.view.pixel_height;
  const std::size_t n = static_cast<std::size_t>(w) * static_cast<std::size_t>(h);
  RenderRequest ref = req;
  ref.precision = reference_precision(req);
  const bool same = ref.precision == req.precision; // dd at dd's depths: itself
  std::vector<std::uint32_t> iters(n), ref_iters(same ? 0 : n);
  std::vector<float> mag2(n), ref_mag2(same ? 0 : n);
  const auto rw = static_cast<std::size_t>(w);
  ctx.for_rows(0, h, [&](int a, int b) {
    const std::size_t off = static_cast<std::size_t>(a) * rw;
    const std::size_t len = static_cast<std::size_t>(b - a) * rw;
    render_counts(req, a, b, std::span(iters).subspan(off, len), std::span(mag2).subspan(off, len));
    if (same) return;
    render_counts(ref, a, b, std::span(ref_iters).subspan(off, len),
                  std::span(ref_mag2).subspan(off, len));
  });
  colour_counts(req, iters, mag2, rgb);
  return same ? 0.0 : disagreement(iters, ref_iters);
}

} // namespace

void TileServer::Impl::handle_tile(const httplib::Request &req, httplib::Response &res) {
  const auto t_handler = Clock::now();
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
  TileQuery q = *parsed.query;
  // ref=1 (the format study): the disagreement is measured by this request's own render, so it
  // bypasses every cache as a nonce does.
  if (q.ref) q.nonce = true;
  namespace t = wire::timing;
  namespace h = wire::header;
  res.set_header(std::string(h::precision), to_string(q.request.precision));
  detail::ConnectionClock &connection = detail::this_connection();
  // The connection's wait for an I/O thread belongs to its first tile.
  auto connection_wait_ms = [&connection] {
    return connection.requests++ == 0 ? ms_between(connection.enqueued, connection.started) : 0.0;
  };
  // A tile's validator and lifetime, on its 200 and 304 answers only (never on an error).
  std::string etag;
  auto set_cache_headers = [&res, &etag, nonce = q.nonce] {
    if (nonce) {
      res.set_header("Cache-Control", "no-store");
      return;
    }
    res.set_header("ETag", etag);
    res.set_header("Cache-Control", std::string(kImmutable));
  };

  // Tile service: revalidation, cache, coalescing. None of it for a nonce.
  std::string key;
  Flights::Ticket ticket;
  struct Landing { // the leader lands its flight on every path out, with or without a tile
    Flights &flights;
    const std::string &key;
    Flights::Ticket &ticket;
    ~Landing() {
      if (ticket.leader) flights.land(key, ticket, {});
    }
  } landing{flights, key, ticket};
  if (!q.nonce) {
    key = detail::tile_key(q);
    etag = detail::tile_etag(key);
    if (req.has_header("If-None-Match") &&
        detail::etag_matches(req.get_header_value("If-None-Match"), etag)) {
      not_modified.fetch_add(1, std::memory_order_relaxed);
      const double io_ms = connection_wait_ms();
      res.status = 304;
      set_cache_headers();
      res.set_header("Server-Timing", metric(t::io, io_ms, "waiting for an I/O thread") + ", " +
                                          std::string(t::cache) + ";desc=\"not modified\"");
      res.set_header(std::string(h::cache), "not-modified");
      detail::log_note().executor = "cache";
      detail::log_note().timing = "not-modified io=" + fixed3(io_ms) + " ms";
      return;
    }
    if (const auto body = tile_cache.find(key)) {
      const double io_ms = connection_wait_ms();
      res.set_header("Server-Timing", metric(t::io, io_ms, "waiting for an I/O thread") + ", " +
                                          std::string(t::cache) + ";desc=\"hit\"");
      res.set_header(std::string(h::cache), "hit");
      set_cache_headers();
      detail::log_note().executor = "cache";
      if (opt.access_log) detail::log_note().timing = "hit io=" + fixed3(io_ms) + " ms";
      set_png(res, *body);
      return;
    }
    if (opt.coalesce) {
      ticket = flights.join(key);
      if (!ticket.leader) {
        const auto w0 = Clock::now();
        const auto got = Flights::wait(*ticket.flight, w0 + kTileWaitBound);
        const double waited_ms = ms_between(w0, Clock::now());
        ticket = {}; // a follower lands nothing
        if (!got) {
          reply_error(res, 504,
                      "the identical tile this request waited for took longer than " +
                          std::to_string(kTileWaitBound.count()) + " minutes");
          return;
        }
        if (got->png) {
          coalesced.fetch_add(1, std::memory_order_relaxed);
          const double io_ms = connection_wait_ms();
          res.set_header("Server-Timing",
                         metric(t::io, io_ms, "waiting for an I/O thread") + ", " +
                             metric(t::coalesced, waited_ms, "waited for an identical tile"));
          res.set_header(std::string(h::cache), "coalesced");
          set_cache_headers();
          res.set_header(std::string(h::executor), got->executor);
          res.set_header(std::string(h::worker), std::to_string(got->worker));
          detail::log_note().executor = got->executor;
          detail::log_note().timing =
              "coalesced io=" + fixed3(io_ms) + " waited=" + fixed3(waited_ms) + " ms";
          set_png(res, *got->png);
          return;
        }
        // The leader got no tile (refused, client gone, failed): render on our own, as if
        // coalescing were off, so that each request still gets its own admission decision.
      }
    }
  }

  const ExecutorKind kind = q.executor.value_or(opt.executor);
  Executor &ex = executor(kind);
  detail::log_note().executor = std::string(ex.name());

  // Inline renders on this connection's thread: take one of the N inline I/O threads ("seats")
  // for the rest of the connection's life, as N real I/O threads would be taken.
  double seat_wait_ms = 0.0;
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
      std::to_string(q.tile.z) + "/" + to_string(q.tile.x) + "/" + to_string(q.tile.y);
  const WorkSpec work = opt.work;
  // The connection's socket stays open while this thread waits for the job (the 504 bug path
  // below withdraws it before returning), so the job may peek at it.
  auto conn_fd = std::make_shared<std::atomic<int>>(detail::this_conn().fd);
  auto future = submit_task(
      ex,
      [this, q, work, conn_fd, flight = ticket.flight](const JobContext &ctx) {
        TileResult r;
        r.worker = ctx.worker();
        r.queue_ms = ms_between(ctx.submitted(), ctx.started());
        // Nobody will read this tile (its client left and no identical request waits for it):
        // skip the render, count it as cancelled.
        if (peer_gone(conn_fd->load()) &&
            (!flight || flight->followers.load(std::memory_order_relaxed) == 0)) {
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
        if (q.ref) {
          r.disagreement = render_with_reference(ctx, q.request, rgb);
        } else {
          ctx.for_rows(0, h, [&](int a, int b) {
            render_rows(q.request, a, b,
                        std::span(rgb).subspan(static_cast<std::size_t>(a) * row,
                                               static_cast<std::size_t>(b - a) * row));
          });
        }
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
  if (future->wait_for(kTileWaitBound) != std::future_status::ready) {
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
  const auto png = std::make_shared<const std::string>(r.png.begin(), r.png.end());
  if (!q.nonce) {
    tile_cache.insert(key, png);
    if (ticket.leader) {
      flights.land(key, ticket, {png, std::string(ex.name()), r.worker});
      ticket = {};
    }
  }
  const double io_ms = seat_wait_ms + connection_wait_ms();
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
  res.set_header(std::string(h::executor), std::string(ex.name()));
  res.set_header(std::string(h::worker), std::to_string(r.worker));
  res.set_header(std::string(h::cache), q.nonce ? "bypass" : "miss");
  if (r.disagreement) {
    char frac[32];
    std::snprintf(frac, sizeof frac, "%.6f", *r.disagreement);
    res.set_header(std::string(h::reference), to_string(reference_precision(q.request)));
    res.set_header(std::string(h::disagreement), frac);
  }
  set_cache_headers();
  detail::log_note().timing = "worker=" + std::to_string(r.worker) + " io=" + fixed3(io_ms) +
                              " queue=" + fixed3(r.queue_ms) +
                              " render=" + fixed3(r.work_ms + r.render_ms) +
                              " encode=" + fixed3(r.encode_ms) + " cpu=" + fixed3(r.cpu_ms) +
                              (r.runq_ms ? " runq=" + fixed3(*r.runq_ms) : std::string()) + " ms";
  {
    // Total: from the connection's wait for a thread (io) to the response, this handler included.
    const double total_ms = io_ms - seat_wait_ms + ms_between(t_handler, Clock::now());
    detail::TileHistograms &hist = histograms[static_cast<std::size_t>(kind)];
    const double phase_ms[] = {io_ms, r.queue_ms, r.work_ms + r.render_ms, r.encode_ms, total_ms};
    for (std::size_t i = 0; i < hist.phase.size(); ++i)
      hist.phase[i].observe(phase_ms[i] / 1000.0);
  }
  set_png(res, *png);
}

} // namespace overdrive
