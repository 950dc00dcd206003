// One HTTP connection, as our own loop over cpp-httplib's request parser: the socket stream with
// request deadlines and header caps, canned replies, lingering close, and the httplib::Server
// subclass that runs the loop. Private to web/.
#pragma once

#include "executors/executor.hpp" // Clock

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <httplib.h>
#include <string>

namespace overdrive::detail {

/// Caps on a request's head. max_line_bytes is CPPHTTPLIB_HEADER_MAX_LENGTH, compiled into
/// Debian's libcpp-httplib.so.
struct HeaderLimits {
  static constexpr std::size_t max_header_bytes = 32 * 1024;
  static constexpr int max_header_lines = 100;
  static constexpr std::size_t max_line_bytes = 8192;
};

/// What the connection thread knows about the connection it serves; handlers run on that
/// thread and read or set it.
struct ConnectionState {
  enum class Limit { None, Timeout, HeaderBytes, HeaderLines, LineLength, BadHeader, Stopping };
  int fd = -1;
  bool close_after = false;  ///< close once this response is written (unread bytes may follow)
  Limit limit = Limit::None; ///< why the last read of the request failed, if it did
  bool in_request_line = false;
};
/// The calling connection thread's state.
ConnectionState &this_conn() noexcept;

/// Whether the client of a connection is gone: it closed (EOF) or reset the connection. A client
/// that half-closes after its request counts as gone too (as nginx treats it); bytes of a
/// pipelined request count as present. Never blocks.
bool peer_gone(int fd) noexcept;

/// One connection's socket as cpp-httplib's Stream: buffered reads that enforce the request
/// deadline and the header caps (a breach fails the read and is recorded in this_conn().limit),
/// and wake up when the server stops (stop_fd readable, stop_at_ns non-zero).
class ConnStream final : public httplib::Stream {
public:
  struct Config {
    std::chrono::milliseconds read_timeout, write_timeout, request_timeout;
  };

  ConnStream(int fd, int stop_fd, const std::atomic<std::int64_t> &stop_at_ns, Config cfg)
      : fd_(fd), stop_fd_(stop_fd), stop_at_ns_(stop_at_ns), cfg_(cfg) {}

  enum class Wait { Data, Idle, Stopped };
  /// Waits for the first byte of the next request. On stop, a request already arriving is served.
  Wait wait_for_request(std::chrono::milliseconds timeout);
  /// Starts the deadline and the header counters of a new request.
  void begin_request();
  std::size_t header_bytes() const noexcept { return header_bytes_; }
  bool in_request_line() const noexcept { return lines_ == 0; }

  bool is_readable() const override;
  bool is_writable() const override;
  ssize_t read(char *ptr, size_t size) override;
  ssize_t write(const char *ptr, size_t size) override;
  void get_remote_ip_and_port(std::string &ip, int &port) const override;
  void get_local_ip_and_port(std::string &ip, int &port) const override;
  socket_t socket() const override { return fd_; }

private:
  bool stopped() const noexcept { return stop_at_ns_.load(std::memory_order_acquire) != 0; }
  ssize_t fail(ConnectionState::Limit why);
  ssize_t fill();

  int fd_, stop_fd_;
  const std::atomic<std::int64_t> &stop_at_ns_;
  Config cfg_;
  Clock::time_point deadline_ = Clock::time_point::max();
  bool in_headers_ = true;
  std::size_t header_bytes_ = 0, line_bytes_ = 0;
  int lines_ = 0;
  bool line_colon_ = false, line_fold_ = false;
  char buf_[4096];
  std::size_t pos_ = 0, len_ = 0;
};

/// Writes a whole response the server makes up itself (shed, or a request cpp-httplib gave up
/// on). Best effort, bounded by one second per write; does not close.
void send_canned(int fd, int status, const char *phrase, const std::string &reason);

/// Closes after an error response without losing it: closing with unread request bytes sends a
/// reset, which can discard the response at the client. So stop writing, drain what the client
/// still sends for at most bound, then close (Apache's "lingering close").
void close_lingering(int fd, std::chrono::milliseconds bound);

/// httplib::Server with our own connection loop (its process_and_close_socket is virtual): we
/// know each connection's fd (to see a client leave while its tile waits), bound the time and
/// size of a request's headers, and wake idle and half-read connections at once when stopping.
class HttpServer final : public httplib::Server {
public:
  struct Config {
    std::chrono::milliseconds first_byte, keep_alive, read, write, request;
    std::size_t keep_alive_max;
  };

  HttpServer();
  ~HttpServer() override;

  void configure(Config cfg) { cfg_ = cfg; }
  /// cpp-httplib listens with a backlog of 5 (compiled in); a burst of connections would then
  /// wait for SYN retransmits. listen() again on the bound socket only raises the backlog.
  void raise_backlog();
  /// Closes the listener and wakes every connection waiting for a request. Idempotent.
  void stop_now();

private:
  void warm_up();
  bool process_and_close_socket(socket_t sock) override;

  int stop_fd_;
  std::atomic<std::int64_t> stop_at_ns_{0};
  Config cfg_{};
};

} // namespace overdrive::detail
