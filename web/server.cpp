// The tile server: routes, the HTTP/error mapping, the connection thread pool we hand to
// cpp-httplib (so its size is explicit and its queue is measured), and stats/metrics.
#include "web/server.hpp"

#include "web/page.hpp"

#include <httplib.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <iostream>
#include <mutex>
#include <sstream>
#include <thread>

namespace overdrive {
namespace {

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

std::string fixed3(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", v);
  return buf;
}

// Idle capacity while connections wait for an I/O thread: the integral over time of
// min(connections queued, workers not running a tile). With inline, the I/O threads are the
// workers, so this is where its lost core time shows; for pool/tbb it stays ~0 when the
// connection pool is large enough.
class IoMeter {
public:
  explicit IoMeter(int capacity) : capacity_(capacity), last_(Clock::now()) {}

  void queued(int delta) {
    std::lock_guard lock(mu_);
    advance(Clock::now());
    queued_ += delta;
  }
  void rendering(int delta) {
    std::lock_guard lock(mu_);
    advance(Clock::now());
    rendering_ += delta;
  }
  void busy(int delta) {
    std::lock_guard lock(mu_);
    busy_ += delta;
  }
  void connection() { connections_.fetch_add(1, std::memory_order_relaxed); }

  struct Snapshot {
    int queued, busy, rendering;
    std::uint64_t connections;
    double idle_while_waiting_seconds;
  };
  Snapshot snapshot() {
    std::lock_guard lock(mu_);
    advance(Clock::now());
    return {queued_, busy_, rendering_, connections_.load(), idle_while_waiting_};
  }

private:
  void advance(Clock::time_point now) {
    const int idle = std::max(0, capacity_ - rendering_);
    idle_while_waiting_ += std::min(queued_, idle) * std::chrono::duration<double>(now - last_).count();
    last_ = now;
  }

  std::mutex mu_;
  const int capacity_;
  Clock::time_point last_;
  int queued_ = 0, busy_ = 0, rendering_ = 0;
  std::atomic<std::uint64_t> connections_{0};
  double idle_while_waiting_ = 0.0;
};

// When the current connection was handed to the pool and when a thread took it; the tile handler
// reports the difference as Server-Timing "io" on the connection's first request.
struct ConnectionClock {
  Clock::time_point enqueued, started;
  int requests = 0;
};
thread_local ConnectionClock this_connection;

// cpp-httplib runs each connection to its end on one thread of this pool. Fixed size, FIFO,
// measured; it replaces the library's default whose size (max(8, cores-1)) is a hidden limit.
class IoPool final : public httplib::TaskQueue {
public:
  IoPool(int threads, IoMeter &meter) : meter_(meter) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { run(); });
  }
  ~IoPool() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    meter_.connection();
    meter_.queued(+1);
    {
      std::lock_guard lock(mu_);
      queue_.push_back({std::move(fn), Clock::now()});
    }
    cv_.notify_one();
  }

  void shutdown() override {
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    cv_.notify_all();
    for (auto &t : threads_) t.join();
  }

private:
  struct Item {
    std::function<void()> fn;
    Clock::time_point enqueued;
  };

  void run() {
    for (;;) {
      Item item;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return;  // stopping and drained
        item = std::move(queue_.front());
        queue_.pop_front();
      }
      meter_.queued(-1);
      meter_.busy(+1);
      this_connection = {item.enqueued, Clock::now(), 0};
      item.fn();
      meter_.busy(-1);
    }
  }

  IoMeter &meter_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

struct TileResult {
  std::vector<std::uint8_t> png;
  double queue_ms = 0, work_ms = 0, render_ms = 0, encode_ms = 0;
  int worker = -1;
};

// What the access log prints for the request this thread just answered.
struct LogNote {
  std::string executor;
  std::string timing;
};
thread_local LogNote log_note;

std::string reason_phrase(int status) {
  switch (status) {
  case 400: return "bad request";
  case 404: return "not found";
  case 405: return "method not allowed";
  case 408: return "request timeout";
  case 413: return "payload too large";
  case 414: return "URI too long";
  case 416: return "range not satisfiable";
  case 429: return "too many requests";
  case 431: return "request header fields too large";
  case 500: return "internal server error";
  case 503: return "service unavailable";
  default: return status < 500 ? "client error" : "server error";
  }
}

std::string json_escape(std::string_view s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += c;
    }
  }
  return out;
}

} // namespace

struct TileServer::Impl {
  ServerOptions opt;
  std::vector<std::unique_ptr<Executor>> executors;  // indexed by ExecutorKind
  IoMeter io_meter;
  httplib::Server svr;
  std::thread listener;
  std::atomic<bool> shutting_down{false};
  std::once_flag stop_once;
  int bound_port = 0;
  std::mutex stop_mu;
  bool stopped = false;
  std::condition_variable stopped_cv;
  // Mean seconds per tile job per executor (exponentially weighted), for Retry-After.
  std::mutex ewma_mu;
  std::array<double, 3> job_seconds{{0.0, 0.0, 0.0}};
  std::array<std::atomic<std::uint64_t>, 6> responses{};  // 2xx,3xx,4xx(other),429,5xx,503

  explicit Impl(ServerOptions o) : opt(std::move(o)), io_meter(workers_of(opt)) {
    ExecutorOptions eo;
    eo.workers = opt.workers;
    eo.queue_limit = opt.queue_limit;
    eo.split = opt.split;
    for (ExecutorKind k : all_executor_kinds()) executors.push_back(make_executor(k, eo));
    setup_routes();
  }

  static int workers_of(const ServerOptions &o) {
    return o.workers > 0 ? o.workers : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }

  Executor &executor(ExecutorKind k) { return *executors[static_cast<std::size_t>(k)]; }

  void setup_routes() {
    const int io_threads = std::max(1, opt.io_threads);
    svr.new_task_queue = [this, io_threads] { return new IoPool(io_threads, io_meter); };
    svr.set_tcp_nodelay(true);  // headers and body go out in separate writes: avoid Nagle stalls
    svr.set_keep_alive_max_count(static_cast<std::size_t>(std::max(1, opt.keep_alive_max_count)));
    svr.set_keep_alive_timeout(std::max(0, opt.keep_alive_timeout_s));
    svr.set_read_timeout(std::max(1, opt.read_timeout_s), 0);
    svr.set_write_timeout(std::max(1, opt.read_timeout_s), 0);
    svr.set_payload_max_length(64 * 1024);

    svr.set_pre_routing_handler([this](const httplib::Request &req, httplib::Response &res) {
      log_note = {};
      if (req.path.rfind("/tile/", 0) != 0) return httplib::Server::HandlerResponse::Unhandled;
      if (req.method != "GET" && req.method != "HEAD") {
        res.set_header("Allow", "GET, HEAD");
        reply_error(res, 405, "method " + req.method + " not allowed on tiles (use GET)");
      } else {
        handle_tile(req, res);
      }
      return httplib::Server::HandlerResponse::Handled;
    });
    svr.Get("/", [](const httplib::Request &, httplib::Response &res) {
      res.set_content(std::string(page_html()), "text/html; charset=utf-8");
      res.set_header("Cache-Control", "no-cache");
    });
    svr.Get("/healthz", [this](const httplib::Request &, httplib::Response &res) {
      res.set_content(shutting_down ? "stopping\n" : "ok\n", "text/plain");
      if (shutting_down) res.status = 503;
    });
    svr.Get("/api/stats", [this](const httplib::Request &, httplib::Response &res) {
      res.set_content(stats_json(), "application/json");
      res.set_header("Cache-Control", "no-store");
    });
    svr.Get("/api/trace", [this](const httplib::Request &req, httplib::Response &res) {
      handle_trace(req, res);
    });
    svr.Get("/metrics", [this](const httplib::Request &, httplib::Response &res) {
      res.set_content(metrics_text(), "text/plain; version=0.0.4");
    });

    svr.set_error_handler(httplib::Server::HandlerWithResponse(
        [](const httplib::Request &req, httplib::Response &res) {
      if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
      std::string reason = res.status == 404 ? "no such path: " + req.path.substr(0, 200)
                                             : reason_phrase(res.status);
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
      line << req.method << " " << req.path.substr(0, 200) << " " << res.status;
      if (!log_note.executor.empty()) line << " " << log_note.executor;
      if (!log_note.timing.empty()) line << " " << log_note.timing;
      line << "\n";
      std::cerr << line.str();
    });
  }

  void count_response(int status) {
    std::size_t k = status < 300 ? 0 : status < 400 ? 1 : status == 429 ? 3 : status < 500 ? 2
                  : status == 503 ? 5 : 4;
    responses[k].fetch_add(1, std::memory_order_relaxed);
  }

  static void reply_error(httplib::Response &res, int status, const std::string &reason) {
    res.status = status;
    res.set_content(std::to_string(status) + " " + reason + "\n", "text/plain");
  }

  void handle_tile(const httplib::Request &req, httplib::Response &res) {
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
    log_note.executor = std::string(ex.name());

    const std::string label = std::to_string(q.tile.z) + "/" + std::to_string(q.tile.x) + "/" +
                              std::to_string(q.tile.y);
    const WorkSpec work = opt.work;
    auto future = submit_task(
        ex,
        [this, q, work](const JobContext &ctx) {
          io_meter.rendering(+1);
          struct Done {
            IoMeter &m;
            ~Done() { m.rendering(-1); }
          } done{io_meter};
          TileResult r;
          r.worker = ctx.worker();
          r.queue_ms = ms_between(ctx.submitted(), ctx.started());
          const auto t0 = Clock::now();
          perform_work(work);
          const auto t1 = Clock::now();
          const int w = q.request.view.pixel_width, h = q.request.view.pixel_height;
          std::vector<std::uint8_t> rgb(static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * 3);
          const std::size_t row = static_cast<std::size_t>(w) * 3;
          ctx.for_rows(0, h, [&](int a, int b) {
            render_rows(q.request, a, b,
                        std::span(rgb).subspan(static_cast<std::size_t>(a) * row,
                                               static_cast<std::size_t>(b - a) * row));
          });
          const auto t2 = Clock::now();
          r.png = encode_png(rgb, w, h);
          const auto t3 = Clock::now();
          r.work_ms = ms_between(t0, t1);
          r.render_ms = ms_between(t1, t2);
          r.encode_ms = ms_between(t2, t3);
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
      reply_error(res, 504, "tile took longer than 10 minutes");
      return;
    }
    const TileResult r = future->get();
    {
      std::lock_guard lock(ewma_mu);
      double &m = job_seconds[static_cast<std::size_t>(kind)];
      const double s = (r.work_ms + r.render_ms + r.encode_ms) / 1000.0;
      m = m == 0.0 ? s : 0.8 * m + 0.2 * s;
    }
    double io_ms = 0.0;
    if (this_connection.requests++ == 0)
      io_ms = ms_between(this_connection.enqueued, this_connection.started);
    const std::string timing = "io;dur=" + fixed3(io_ms) + ";desc=\"waiting for an I/O thread\"" +
                               ", queue;dur=" + fixed3(r.queue_ms) +
                               ", render;dur=" + fixed3(r.work_ms + r.render_ms) +
                               ", encode;dur=" + fixed3(r.encode_ms) +
                               (work.kind != WorkSpec::Kind::None
                                    ? ", work;dur=" + fixed3(r.work_ms) + ";desc=\"synthetic " +
                                          to_string(work) + " (part of render)\""
                                    : std::string());
    res.set_header("Server-Timing", timing);
    res.set_header("X-Overdrive-Executor", std::string(ex.name()));
    res.set_header("X-Overdrive-Worker", std::to_string(r.worker));
    res.set_header("Cache-Control", "public, max-age=3600");
    log_note.timing = "worker=" + std::to_string(r.worker) + " io=" + fixed3(io_ms) +
                      " queue=" + fixed3(r.queue_ms) + " render=" + fixed3(r.work_ms + r.render_ms) +
                      " encode=" + fixed3(r.encode_ms) + " ms";
    res.set_content(std::string(r.png.begin(), r.png.end()), "image/png");
  }

  void handle_trace(const httplib::Request &req, httplib::Response &res) {
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
    std::string out = "{\"now_ns\":" + std::to_string(to_ns(Clock::now())) + ",\"executors\":[";
    for (std::size_t i = 0; i < kinds.size(); ++i) {
      Executor &ex = executor(kinds[i]);
      const ExecutorStats s = ex.stats();
      if (i) out += ",";
      out += "{\"name\":\"" + std::string(ex.name()) + "\",\"workers\":" +
             std::to_string(ex.workers()) + ",\"last_seq\":" + std::to_string(s.last_seq) +
             ",\"events\":" + to_json(ex.trace_since(since)) + "}";
    }
    out += "]}";
    res.set_content(out, "application/json");
    res.set_header("Cache-Control", "no-store");
  }

  std::string stats_json() {
    const IoMeter::Snapshot io = io_meter.snapshot();
    std::string out = "{\"now_ns\":" + std::to_string(to_ns(Clock::now()));
    out += ",\"options\":{\"default_executor\":\"" + std::string(to_string(opt.executor)) +
           "\",\"workers\":" + std::to_string(workers_of(opt)) +
           ",\"io_threads\":" + std::to_string(opt.io_threads) +
           ",\"queue_limit\":" + std::to_string(opt.queue_limit) +
           ",\"split\":" + (opt.split ? "true" : "false") + ",\"work\":\"" +
           json_escape(to_string(opt.work)) + "\",\"keep_alive_timeout_s\":" +
           std::to_string(opt.keep_alive_timeout_s) +
           ",\"isa\":\"" + std::string(to_string(best_isa())) + "\"}";
    out += ",\"io\":{\"threads\":" + std::to_string(opt.io_threads) +
           ",\"queued\":" + std::to_string(io.queued) + ",\"busy\":" + std::to_string(io.busy) +
           ",\"rendering\":" + std::to_string(io.rendering) +
           ",\"connections\":" + std::to_string(io.connections) +
           ",\"idle_while_waiting_seconds\":" + fixed3(io.idle_while_waiting_seconds) + "}";
    out += ",\"executors\":[";
    for (std::size_t i = 0; i < executors.size(); ++i) {
      if (i) out += ",";
      out += to_json(executors[i]->stats());
    }
    out += "]}";
    return out;
  }

  std::string metrics_text() {
    std::ostringstream m;
    auto metric = [&m](const char *name, const char *type, const char *help) {
      m << "# HELP " << name << " " << help << "\n# TYPE " << name << " " << type << "\n";
    };
    std::vector<ExecutorStats> stats;
    for (auto &e : executors) stats.push_back(e->stats());
    auto per_exec = [&](const char *name, const char *type, const char *help, auto field) {
      metric(name, type, help);
      for (const auto &s : stats) m << name << "{executor=\"" << s.name << "\"} " << field(s) << "\n";
    };
    per_exec("overdrive_jobs_submitted_total", "counter", "Tile jobs submitted.",
             [](const ExecutorStats &s) { return s.submitted; });
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
    metric("overdrive_worker_busy_seconds_total", "counter", "Busy time per worker.");
    for (const auto &s : stats)
      for (std::size_t w = 0; w < s.busy_seconds.size(); ++w)
        m << "overdrive_worker_busy_seconds_total{executor=\"" << s.name << "\",worker=\"" << w
          << "\"} " << s.busy_seconds[w] << "\n";
    const IoMeter::Snapshot io = io_meter.snapshot();
    metric("overdrive_io_threads", "gauge", "Connection threads (--io-threads).");
    m << "overdrive_io_threads " << opt.io_threads << "\n";
    metric("overdrive_io_connections_queued", "gauge", "Connections waiting for an I/O thread.");
    m << "overdrive_io_connections_queued " << io.queued << "\n";
    metric("overdrive_io_connections_total", "counter", "Connections accepted.");
    m << "overdrive_io_connections_total " << io.connections << "\n";
    metric("overdrive_io_idle_while_waiting_seconds_total", "counter",
           "Worker-seconds idle while connections waited for an I/O thread.");
    m << "overdrive_io_idle_while_waiting_seconds_total " << io.idle_while_waiting_seconds << "\n";
    metric("overdrive_http_responses_total", "counter", "HTTP responses by class.");
    const char *classes[] = {"2xx", "3xx", "4xx", "429", "5xx", "503"};
    for (std::size_t i = 0; i < responses.size(); ++i)
      m << "overdrive_http_responses_total{code=\"" << classes[i] << "\"} " << responses[i].load()
        << "\n";
    return m.str();
  }

  void stop() {
    std::call_once(stop_once, [this] {
      shutting_down = true;
      // Closes the listener and joins the connection threads: in-flight tiles finish and are
      // delivered first (their executors keep running until after this).
      svr.stop();
      if (listener.joinable()) listener.join();
      for (auto &e : executors) e->shutdown();
      std::lock_guard lock(stop_mu);
      stopped = true;
      stopped_cv.notify_all();
    });
  }
};

TileServer::TileServer(ServerOptions options) : impl_(std::make_unique<Impl>(std::move(options))) {}

TileServer::~TileServer() { stop(); }

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
  im.listener = std::thread([&im] { im.svr.listen_after_bind(); });
  return im.bound_port;
}

void TileServer::wait() {
  std::unique_lock lock(impl_->stop_mu);
  impl_->stopped_cv.wait(lock, [this] { return impl_->stopped; });
}

void TileServer::stop() { impl_->stop(); }

int TileServer::port() const noexcept { return impl_->bound_port; }

std::string TileServer::url() const {
  return "http://" + impl_->opt.host + ":" + std::to_string(impl_->bound_port) + "/";
}

Executor &TileServer::executor(ExecutorKind kind) { return impl_->executor(kind); }

std::string TileServer::stats_json() const { return impl_->stats_json(); }

} // namespace overdrive
