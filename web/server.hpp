// Public interface of the tile server: the Mandelbrot set as PNG tiles over HTTP, rendered by any
// of the three executors (one server hosts all three), with per-tile timing, a job trace, stats
// and a page that shows how tiles arrived. cpp-httplib stays behind this header.
#pragma once

#include "executors/executor.hpp"
#include "render/render.hpp"

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace overdrive {

/// Synthetic cost added to every tile job, to reproduce arrival patterns independently of the
/// machine: Sleep waits (wall time), Spin burns the thread's own CPU time (like real rendering).
struct WorkSpec {
  enum class Kind { None, Sleep, Spin };
  Kind kind = Kind::None;
  int ms = 0;
  friend bool operator==(const WorkSpec &, const WorkSpec &) = default;
};

/// Parses "none", "sleep:MS" or "spin:MS" (0 <= MS <= 60000); nullopt if malformed.
std::optional<WorkSpec> parse_work_spec(std::string_view text) noexcept;
std::string to_string(const WorkSpec &work);
/// Runs the synthetic cost on the calling thread.
void perform_work(const WorkSpec &work);

/// A validated tile request: what to render and which executor renders it.
struct TileQuery {
  TileId tile;
  RenderRequest request;
  std::optional<ExecutorKind> executor; ///< nullopt = the server's default
  /// The request had a nonce: it bypasses every cache (no ETag, no coalescing, no cache entry,
  /// Cache-Control: no-store), so the lab always measures a real render.
  bool nonce = false;
  /// ref=1: also render the reference format and report the disagreement in headers.
  bool ref = false;
  friend bool operator==(const TileQuery &, const TileQuery &) = default;
};

/// Either a TileQuery or a one-line reason why the request is bad.
struct TileParse {
  std::optional<TileQuery> query;
  std::string error;
};

/// Validates a tile request once, at the edge: path parts z, x, y (y without ".png") and query
/// parameters (iter, size, palette, precision, ref (0 or 1), executor, nonce: its value is ignored,
/// its presence sets TileQuery::nonce). Every
/// other parameter, malformed number, out-of-range value or unknown name is an error.
TileParse parse_tile_query(std::string_view z, std::string_view x, std::string_view y,
                           const std::multimap<std::string, std::string> &params);

/// Connection handling and its defaults (cpp-httplib 0.11.4 runs one thread per connection):
/// - io_threads caps the connection threads. They start lazily and extra ones retire after 10 s
///   idle, so a large cap costs nothing until connections arrive (an idle thread is ~20 KiB of
///   RSS; its 8 MiB stack is virtual). 1024 lets 250 slowloris connections sit beside a browser
///   without delaying it (with 64 threads a browser's burst waited 16.5 s instead of 1.5 s:
///   test Hostile.Slowloris.Full).
/// - A new connection must send its first byte within read_timeout_s; a kept-alive one within
///   keep_alive_timeout_s. Once a request's first byte is in, its line and headers (and body)
///   must all arrive within request_timeout_s (408 after), so a client trickling a byte a second
///   cannot hold a thread for longer than that; each single read also waits read_timeout_s at
///   most. Headers are capped at 32 KiB and 100 lines (431), a line at 8 KiB (414/431).
/// - When io_queue_limit connections already wait for a thread (all io_threads busy), a new
///   connection gets 503 at once and is closed. Stop closes idle and half-read connections at
///   once (1 s grace for a request already arriving) and lets in-flight tiles finish.
struct ServerOptions {
  std::string host = "127.0.0.1";
  int port = 8080;                            ///< 0 = an ephemeral port
  ExecutorKind executor = ExecutorKind::Pool; ///< Default for requests without ?executor=
  int workers = 0;                            ///< Per executor; 0 = number of cores
  /// cpp-httplib connection threads (one per open connection), started on demand up to this
  /// cap. The default is large enough that a browser's six keep-alive connections per host never
  /// starve pool and tbb, even beside hundreds of idle or slow connections.
  int io_threads = 1024;
  std::size_t queue_limit = 0; ///< Tiles waiting per executor before 429; 0 = unlimited
  bool split = false;          ///< tbb splits each tile across its workers
  WorkSpec work;
  int keep_alive_timeout_s = 5;
  int keep_alive_max_count = 100;
  int read_timeout_s = 5;
  /// Seconds from a request's first byte until its headers (and body) are complete; 408 after.
  int request_timeout_s = 10;
  /// Connections that may wait for a free I/O thread; beyond it, 503 at once. 0 = unlimited.
  std::size_t io_queue_limit = 1024;
  bool access_log = true; ///< One line per request on stderr
  /// Names this server in the X-Overdrive-Replica header of every response and in /api/stats,
  /// so that clients behind a balancer can attribute tiles. Empty = "host:port".
  std::string replica_id;
  /// Bytes of encoded tiles kept in memory (LRU); 0 = no cache. Off here so that an embedding
  /// (the in-process bench) measures renders; `overdrive serve` defaults to 64 MiB (--cache-mb).
  std::size_t cache_bytes = 0;
  /// Concurrent requests for the same tile (any executor) render once, the others wait for it.
  /// Off here for the same reason; `overdrive serve` turns it on (--no-coalesce turns it off).
  bool coalesce = false;
};

/// The HTTP tile server. Construct, start(), then wait() (or stop() from another thread).
class TileServer {
public:
  explicit TileServer(ServerOptions options);
  ~TileServer();
  TileServer(const TileServer &) = delete;
  TileServer &operator=(const TileServer &) = delete;

  /// Binds the listening socket and starts serving on a background thread. Returns the bound
  /// port. Throws std::runtime_error if it cannot bind.
  int start();
  /// Blocks until the server has stopped.
  void wait();
  /// Graceful stop: new tile requests get 503, the listener closes, in-flight tiles finish and
  /// are delivered, executors drain. Idempotent; thread-safe; returns when done.
  void stop();
  /// Bound port (after start()).
  int port() const noexcept;
  /// http://host:port/
  std::string url() const;
  /// The executor that serves requests for kind.
  Executor &executor(ExecutorKind kind);
  /// /api/stats as JSON.
  std::string stats_json() const;

private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

} // namespace overdrive
