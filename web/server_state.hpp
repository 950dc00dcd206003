// The tile server's state, shared by the files that each do one of its jobs:
//   server.cpp        routes (one table), HTTP error mapping, access log, lifecycle
//   tile_handler.cpp  GET /tile/...: parse, ETag/304, cache, coalescing, inline seat, submit,
//                     Retry-After, Server-Timing
//   tile_cache.cpp    the tile's key and ETag, the LRU tile cache, flights, histograms
//                     (tile_cache.hpp)
//   introspection.cpp /api/stats, /api/trace, /metrics
//   connection.cpp    one connection: deadlines, header caps, canned replies (connection.hpp)
//   io_pool.cpp       the connection thread pool and its meter (io_pool.hpp)
// Private to web/.
#pragma once

#include "web/connection.hpp"
#include "web/inline_seats.hpp"
#include "web/io_pool.hpp"
#include "web/server.hpp"
#include "web/tile_cache.hpp"

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace overdrive {
namespace detail {

inline double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

/// What the access log prints for the request this thread just answered.
struct LogNote {
  std::string executor;
  std::string timing;
};
/// The calling connection thread's note.
LogNote &log_note() noexcept;

/// Client-controlled text for a one-line reason or log line: printable ASCII only, at most max
/// characters (then "...").
std::string printable(std::string_view s, std::size_t max);

} // namespace detail

struct TileServer::Impl {
  using Handler = void (Impl::*)(const httplib::Request &, httplib::Response &);
  /// One row of the route table. Every route answers GET and HEAD; any other method gets 405.
  struct Route {
    std::string_view path; ///< Exact path, or a prefix if it ends with '/'.
    Handler handle;
  };
  /// Every route the server answers (server.cpp); the dispatcher and the 404/405 logic read it.
  static const Route routes[];

  ServerOptions opt;
  std::vector<std::unique_ptr<Executor>> executors; ///< Indexed by ExecutorKind.
  detail::IoMeter io_meter;
  detail::InlineSeats inline_seats;
  std::atomic<int> io_live{0};
  std::atomic<std::uint64_t> io_shed{0};
  detail::HttpServer svr;
  std::thread listener;
  std::atomic<bool> shutting_down{false};
  std::once_flag stop_once;
  int bound_port = 0;
  std::string replica_id; ///< Set once by start(), before any connection is served.
  std::mutex stop_mu;
  bool stopped = false;
  std::condition_variable stopped_cv;
  /// Mean seconds per tile job per executor (exponentially weighted), for Retry-After.
  std::mutex ewma_mu;
  std::vector<double> job_seconds;
  std::array<std::atomic<std::uint64_t>, 6> responses{}; ///< 2xx,3xx,4xx(other),429,5xx,503
  detail::TileCache tile_cache;                          ///< opt.cache_bytes; 0 = off
  detail::Flights flights;                               ///< used when opt.coalesce
  std::atomic<std::uint64_t> coalesced{0};    ///< followers answered with a leader's tile
  std::atomic<std::uint64_t> not_modified{0}; ///< 304 answers
  /// Per executor (indexed by ExecutorKind): io, queue, render, encode, total of rendered tiles.
  std::unique_ptr<detail::TileHistograms[]> histograms;

  explicit Impl(ServerOptions o);
  static int workers_of(const ServerOptions &o);
  Executor &executor(ExecutorKind k) { return *executors[static_cast<std::size_t>(k)]; }

  // server.cpp
  void setup_routes();
  void count_response(int status);
  /// This response is the connection's last: bytes the client sent after it are not a request.
  static void close_after(httplib::Response &res);
  /// status with a one-line text/plain body "STATUS reason".
  static void reply_error(httplib::Response &res, int status, const std::string &reason);
  void handle_page(const httplib::Request &req, httplib::Response &res);
  void handle_healthz(const httplib::Request &req, httplib::Response &res);
  void stop();

  // tile_handler.cpp
  void handle_tile(const httplib::Request &req, httplib::Response &res);

  // introspection.cpp
  void handle_stats(const httplib::Request &req, httplib::Response &res);
  void handle_trace(const httplib::Request &req, httplib::Response &res);
  void handle_metrics(const httplib::Request &req, httplib::Response &res);
  std::string stats_json();
  std::string metrics_text();
};

} // namespace overdrive
