// The tile server's routes (one table), the HTTP error mapping, the access log and the
// lifecycle. The other jobs live beside it (server_state.hpp lists them).
#include "web/page.hpp"
#include "web/server_state.hpp"
#include "web/wire.hpp"

#include <algorithm>
#include <iostream>
#include <malloc.h>
#include <sstream>

namespace overdrive {
namespace detail {

LogNote &log_note() noexcept {
  thread_local LogNote note;
  return note;
}

std::string printable(std::string_view s, std::size_t max) {
  std::string out;
  for (char c : s.substr(0, max))
    out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (s.size() > max) out += "...";
  return out;
}

} // namespace detail

namespace {

std::string reason_phrase(int status) {
  switch (status) {
  case 400:
    return "bad request";
  case 404:
    return "not found";
  case 405:
    return "method not allowed";
  case 408:
    return "request timeout";
  case 413:
    return "payload too large";
  case 414:
    return "URI too long";
  case 416:
    return "range not satisfiable";
  case 429:
    return "too many requests";
  case 499:
    return "client closed the connection";
  case 431:
    return "request header fields too large";
  case 500:
    return "internal server error";
  case 503:
    return "service unavailable";
  default:
    return status < 500 ? "client error" : "server error";
  }
}

} // namespace

// The route table. Adding a route: a row here, its handler (declared in server_state.hpp), a test.
const TileServer::Impl::Route TileServer::Impl::routes[] = {
    {"/", &Impl::handle_page},           {"/healthz", &Impl::handle_healthz},
    {"/api/stats", &Impl::handle_stats}, {"/api/trace", &Impl::handle_trace},
    {"/metrics", &Impl::handle_metrics}, {"/tile/", &Impl::handle_tile},
};

TileServer::Impl::Impl(ServerOptions o)
    : opt(std::move(o)), io_meter(workers_of(opt)), inline_seats(workers_of(opt)),
      tile_cache(opt.cache_bytes) {
  // A tile's buffers (RGB 192 KiB at 256^2, PNG filter and deflate buffers) exceed glibc's
  // default mmap threshold, and freed heap tops are trimmed: each request then mapped fresh pages
  // and took a page fault per 4 KiB (~10% of the server's CPU under wrk). Keep them in the heap.
  mallopt(M_MMAP_THRESHOLD, 16 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);
  ExecutorOptions eo;
  eo.workers = opt.workers;
  eo.queue_limit = opt.queue_limit;
  eo.split = opt.split;
  for (ExecutorKind k : all_executor_kinds())
    executors.push_back(make_executor(k, eo));
  job_seconds.assign(executors.size(), 0.0);
  histograms = std::make_unique<detail::TileHistograms[]>(executors.size());
  setup_routes();
}

int TileServer::Impl::workers_of(const ServerOptions &o) {
  return o.workers > 0 ? o.workers
                       : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

void TileServer::Impl::setup_routes() {
  const int io_threads = std::max(1, opt.io_threads);
  svr.new_task_queue = [this, io_threads] {
    return new detail::IoPool(io_threads, opt.io_queue_limit, io_meter, io_live, io_shed);
  };
  using std::chrono::milliseconds;
  using std::chrono::seconds;
  svr.configure({seconds(std::max(1, opt.read_timeout_s)),
                 seconds(std::max(0, opt.keep_alive_timeout_s)),
                 seconds(std::max(1, opt.read_timeout_s)), seconds(std::max(1, opt.read_timeout_s)),
                 seconds(std::max(1, opt.request_timeout_s)),
                 static_cast<std::size_t>(std::max(1, opt.keep_alive_max_count))});
  svr.set_tcp_nodelay(true); // headers and body go out in separate writes: avoid Nagle stalls
  svr.set_keep_alive_max_count(static_cast<std::size_t>(std::max(1, opt.keep_alive_max_count)));
  svr.set_keep_alive_timeout(std::max(0, opt.keep_alive_timeout_s));
  svr.set_read_timeout(std::max(1, opt.read_timeout_s), 0);
  svr.set_write_timeout(std::max(1, opt.read_timeout_s), 0);
  svr.set_payload_max_length(64 * 1024);

  // Every request goes through the route table; httplib's own router is not used.
  svr.set_pre_routing_handler([this](const httplib::Request &req, httplib::Response &res) {
    detail::log_note() = {};
    res.set_header(std::string(wire::header::replica), replica_id);
    using R = httplib::Server::HandlerResponse;
    // A request we answer without reading its body leaves the body in the stream: close.
    const bool has_body =
        req.has_header("Transfer-Encoding") ||
        (req.has_header("Content-Length") && req.get_header_value("Content-Length") != "0");
    if (req.version == "HTTP/1.1" && req.get_header_value_count("Host") != 1) {
      close_after(res);
      reply_error(res, 400,
                  req.has_header("Host") ? "more than one Host header"
                                         : "HTTP/1.1 request without a Host header");
      return R::Handled;
    }
    const auto route = std::find_if(std::begin(routes), std::end(routes), [&req](const Route &r) {
      return r.path.back() == '/' && r.path.size() > 1 ? req.path.rfind(r.path, 0) == 0
                                                       : req.path == r.path;
    });
    if (route == std::end(routes)) return R::Unhandled; // 404 from the error handler
    if (has_body) close_after(res);
    if (req.method != "GET" && req.method != "HEAD") {
      res.set_header("Allow", "GET, HEAD");
      reply_error(
          res, 405,
          "method " + detail::printable(req.method, 16) + " not allowed on " +
              (route->path == "/tile/" ? std::string("tiles") : detail::printable(req.path, 64)) +
              " (use GET)");
      return R::Handled;
    }
    (this->*route->handle)(req, res);
    return R::Handled;
  });
  svr.set_error_handler(httplib::Server::HandlerWithResponse([this](const httplib::Request &req,
                                                                    httplib::Response &res) {
    if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
    std::string reason = reason_phrase(res.status);
    if (res.status == 404) {
      reason = "no such path: " + detail::printable(req.path, 200);
    } else {
      // cpp-httplib answers before routing (malformed or over-long request, body too large):
      // the stream may hold unread bytes, so this connection closes after the response.
      detail::this_conn().close_after = true;
      using L = detail::ConnectionState::Limit;
      if (res.status == 400 && detail::this_conn().limit == L::Timeout) {
        res.status = 408;
        reason = "request headers not received within " +
                 std::to_string(std::max(1, opt.request_timeout_s)) + " s";
      } else if (res.status == 400 && detail::this_conn().limit == L::HeaderBytes) {
        res.status = 431;
        reason = "request headers longer than " +
                 std::to_string(detail::HeaderLimits::max_header_bytes) + " bytes";
      } else if (res.status == 400 && detail::this_conn().limit == L::HeaderLines) {
        res.status = 431;
        reason =
            "more than " + std::to_string(detail::HeaderLimits::max_header_lines) + " header lines";
      } else if (res.status == 400 && detail::this_conn().limit == L::LineLength) {
        res.status = 431;
        reason = "a header line is longer than " +
                 std::to_string(detail::HeaderLimits::max_line_bytes) + " bytes";
      } else if (res.status == 400 && detail::this_conn().limit == L::BadHeader) {
        reason = "malformed header line (no colon, or folded)";
      } else if (res.status == 400 && detail::this_conn().limit == L::Stopping) {
        res.status = 503;
        reason = "server is shutting down";
      } else if (res.status == 400) {
        // Our own handlers always write a body: an empty one means the request did not parse.
        reason = "malformed request line or header (CRLF line ends, methods in capitals, "
                 "HTTP/1.0 or HTTP/1.1)";
      } else if (res.status == 414) {
        reason = "request line longer than " +
                 std::to_string(detail::HeaderLimits::max_line_bytes) + " bytes";
      }
      res.set_header("Connection", "close");
    }
    res.set_content(std::to_string(res.status) + " " + reason + "\n", "text/plain");
    return httplib::Server::HandlerResponse::Handled;
  }));
  svr.set_exception_handler(
      [](const httplib::Request &req, httplib::Response &res, std::exception_ptr ep) {
        std::string what = "unknown exception";
        try {
          if (ep) std::rethrow_exception(ep);
        } catch (const std::exception &e) {
          what = e.what();
        } catch (...) {
        }
        std::cerr << "error: " << req.method << " " << req.path << ": " << what << "\n";
        res.status = 500;
        res.set_content("500 internal error\n", "text/plain");
      });
  svr.set_logger([this](const httplib::Request &req, const httplib::Response &res) {
    count_response(res.status);
    if (!opt.access_log) return;
    std::ostringstream line;
    line << detail::printable(req.method, 16) << " " << detail::printable(req.path, 200) << " "
         << res.status;
    if (!detail::log_note().executor.empty()) line << " " << detail::log_note().executor;
    if (!detail::log_note().timing.empty()) line << " " << detail::log_note().timing;
    line << "\n";
    std::cerr << line.str();
  });
}

void TileServer::Impl::count_response(int status) {
  std::size_t k = status < 300    ? 0
                  : status < 400  ? 1
                  : status == 429 ? 3
                  : status < 500  ? 2
                  : status == 503 ? 5
                                  : 4;
  responses[k].fetch_add(1, std::memory_order_relaxed);
}

void TileServer::Impl::close_after(httplib::Response &res) {
  detail::this_conn().close_after = true;
  res.set_header("Connection", "close");
}

void TileServer::Impl::reply_error(httplib::Response &res, int status, const std::string &reason) {
  res.status = status;
  res.set_content(std::to_string(status) + " " + reason + "\n", "text/plain");
}

void TileServer::Impl::handle_page(const httplib::Request &, httplib::Response &res) {
  res.set_content(std::string(page_html()), "text/html; charset=utf-8");
  res.set_header("Cache-Control", "no-cache");
}

void TileServer::Impl::handle_healthz(const httplib::Request &, httplib::Response &res) {
  res.set_content(shutting_down ? "stopping\n" : "ok\n", "text/plain");
  if (shutting_down) res.status = 503;
}

void TileServer::Impl::stop() {
  std::call_once(stop_once, [this] {
    shutting_down = true;
    inline_seats.stop(); // connections waiting for an inline seat get 503
    // Closes the listener and joins the connection threads: in-flight tiles finish and are
    // delivered first (their executors keep running until after this).
    svr.stop_now();
    if (listener.joinable()) listener.join();
    for (auto &e : executors)
      e->shutdown();
    std::lock_guard lock(stop_mu);
    stopped = true;
    stopped_cv.notify_all();
  });
}

TileServer::TileServer(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

TileServer::~TileServer() {
  stop();
}

int TileServer::start() {
  Impl &im = *impl_;
  if (im.opt.port == 0) {
    im.bound_port = im.svr.bind_to_any_port(im.opt.host);
    if (im.bound_port <= 0) throw std::runtime_error("cannot bind to " + im.opt.host);
  } else {
    if (!im.svr.bind_to_port(im.opt.host, im.opt.port))
      throw std::runtime_error("cannot bind to " + im.opt.host + ":" + std::to_string(im.opt.port) +
                               " (in use, or not a local address?)");
    im.bound_port = im.opt.port;
  }
  im.svr.raise_backlog();
  if (im.opt.replica_id.empty())
    im.opt.replica_id = im.opt.host + ":" + std::to_string(im.bound_port);
  im.replica_id = im.opt.replica_id;
  im.listener = std::thread([&im] { im.svr.listen_after_bind(); });
  // cpp-httplib's stop() closes the listening socket only once listen_internal() has marked the
  // server running: a stop() before that would leave the listener blocked in accept() for good
  // (seen: a test that stopped a server right after starting it hung). So return only then.
  const auto until = Clock::now() + std::chrono::seconds(10);
  while (!im.svr.is_running() && Clock::now() < until)
    std::this_thread::sleep_for(std::chrono::microseconds(100));
  if (!im.svr.is_running()) throw std::runtime_error("the listener did not start within 10 s");
  return im.bound_port;
}

void TileServer::wait() {
  std::unique_lock lock(impl_->stop_mu);
  impl_->stopped_cv.wait(lock, [this] { return impl_->stopped; });
}

void TileServer::stop() {
  impl_->stop();
}

int TileServer::port() const noexcept {
  return impl_->bound_port;
}

std::string TileServer::url() const {
  return "http://" + impl_->opt.host + ":" + std::to_string(impl_->bound_port) + "/";
}

Executor &TileServer::executor(ExecutorKind kind) {
  return impl_->executor(kind);
}

std::string TileServer::stats_json() const {
  return impl_->stats_json();
}

} // namespace overdrive