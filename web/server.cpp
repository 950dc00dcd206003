// The tile server: routes, the HTTP/error mapping, the connection thread pool we hand to
// cpp-httplib (so its size is explicit and its queue is measured), and stats/metrics.
#include "web/server.hpp"

#include "web/page.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <httplib.h>
#include <iostream>
#include <mutex>
#include <netinet/in.h>
#include <poll.h>
#include <sstream>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <unordered_map>

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
    idle_while_waiting_ +=
        std::min(queued_, idle) * std::chrono::duration<double>(now - last_).count();
    last_ = now;
  }

  std::mutex mu_;
  const int capacity_;
  Clock::time_point last_;
  int queued_ = 0, busy_ = 0, rendering_ = 0;
  std::atomic<std::uint64_t> connections_{0};
  double idle_while_waiting_ = 0.0;
};

// With inline the I/O threads *are* the workers: N inline workers means N connection threads, and
// a connection holds its thread from its first request until it closes, idle keep-alive included.
// One server hosts all three executors on one large connection pool, so inline gets N seats: the
// first inline request on a connection takes a seat (waiting, as it would for one of N I/O
// threads) and the connection keeps it until it closes. The wait is reported as Server-Timing io.
class InlineSeats {
public:
  explicit InlineSeats(int seats) : free_(seats), capacity_(seats) {}

  /// Waits for a seat until the deadline or until stop(); true if one was taken.
  bool acquire(Clock::time_point deadline) {
    std::unique_lock lock(mu_);
    ++waiting_;
    const bool got = cv_.wait_until(lock, deadline, [this] { return stopping_ || free_ > 0; });
    --waiting_;
    if (!got || stopping_) return false;
    --free_;
    return true;
  }
  void release() {
    {
      std::lock_guard lock(mu_);
      ++free_;
    }
    cv_.notify_one();
  }
  void stop() {
    {
      std::lock_guard lock(mu_);
      stopping_ = true;
    }
    cv_.notify_all();
  }
  struct Snapshot {
    int capacity, held, waiting;
  };
  Snapshot snapshot() {
    std::lock_guard lock(mu_);
    return {capacity_, capacity_ - free_, waiting_};
  }

private:
  std::mutex mu_;
  std::condition_variable cv_;
  int free_;
  const int capacity_;
  int waiting_ = 0;
  bool stopping_ = false;
};

// When the current connection was handed to the pool and when a thread took it; the tile handler
// reports the difference as Server-Timing "io" on the connection's first request.
struct ConnectionClock {
  Clock::time_point enqueued, started;
  int requests = 0;
  InlineSeats *seat = nullptr; // the inline seat this connection holds, released when it closes
};
thread_local ConnectionClock this_connection;

// What the connection thread knows about the connection it serves; handlers run on that
// thread and read or set it.
struct ConnectionState {
  enum class Limit { None, Timeout, HeaderBytes, HeaderLines, LineLength, BadHeader, Stopping };
  int fd = -1;
  bool close_after = false;  // close once this response is written (unread bytes may follow)
  Limit limit = Limit::None; // why the last read of the request failed, if it did
  bool in_request_line = false;
};
thread_local ConnectionState this_conn;
// Set while the accept thread runs a connection it sheds (io_queue_limit reached).
thread_local bool shed_this_connection = false;

constexpr std::size_t max_header_bytes = 32 * 1024;
constexpr int max_header_lines = 100;
constexpr std::size_t max_line_bytes = 8192; // CPPHTTPLIB_HEADER_MAX_LENGTH, compiled into the .so

// cpp-httplib runs each connection to its end on one thread of this pool. Threads start on demand
// up to a cap (one per open connection) and retire after 10 s idle beyond a core of 16, so a large
// cap is free until used; past the cap connections wait FIFO (measured), past io_queue_limit
// waiting connections new ones are shed with 503. It replaces the library's default pool whose
// size (max(8, cores-1)) is a hidden limit.
class IoPool final : public httplib::TaskQueue {
public:
  IoPool(int max_threads, std::size_t queue_limit, IoMeter &meter, std::atomic<int> &live,
         std::atomic<std::uint64_t> &shed)
      : meter_(meter), max_(std::max(1, max_threads)), core_(std::min(max_, 16)),
        queue_limit_(queue_limit), live_out_(live), shed_(shed) {}
  ~IoPool() override { shutdown(); }

  void enqueue(std::function<void()> fn) override {
    meter_.connection();
    std::vector<std::thread> zombies;
    {
      std::unique_lock lock(mu_);
      if (!stopping_ && queue_limit_ > 0 && queue_.size() >= queue_limit_) {
        lock.unlock();
        // Runs on the accept thread: our process_and_close_socket answers 503 without waiting.
        shed_.fetch_add(1, std::memory_order_relaxed);
        shed_this_connection = true;
        fn();
        shed_this_connection = false;
        return;
      }
      meter_.queued(+1);
      queue_.push_back({std::move(fn), Clock::now()});
      if (!stopping_ && static_cast<int>(queue_.size()) > idle_ &&
          static_cast<int>(threads_.size()) < max_) {
        std::thread t([this] { run(); });
        const auto id = t.get_id();
        threads_.emplace(id, std::move(t));
        live_out_.store(static_cast<int>(threads_.size()), std::memory_order_relaxed);
      }
      zombies.swap(zombies_);
    }
    cv_.notify_one();
    for (auto &t : zombies)
      t.join();
  }

  void shutdown() override {
    std::unordered_map<std::thread::id, std::thread> threads;
    std::vector<std::thread> zombies;
    {
      std::lock_guard lock(mu_);
      if (stopping_) return;
      stopping_ = true;
    }
    cv_.notify_all();
    {
      // No thread retires itself once stopping_ is set, and none starts: the map is final.
      std::lock_guard lock(mu_);
      threads.swap(threads_);
      zombies.swap(zombies_);
    }
    for (auto &[id, t] : threads)
      t.join();
    for (auto &t : zombies)
      t.join();
    live_out_.store(0, std::memory_order_relaxed);
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
        ++idle_;
        const bool woke = cv_.wait_for(lock, std::chrono::seconds(10),
                                       [this] { return stopping_ || !queue_.empty(); });
        --idle_;
        if (queue_.empty()) {
          if (stopping_) return; // stopping and drained
          if (!woke && static_cast<int>(threads_.size()) > core_) {
            // Retire: someone else joins us (the next enqueue, or shutdown).
            auto node = threads_.extract(std::this_thread::get_id());
            zombies_.push_back(std::move(node.mapped()));
            live_out_.store(static_cast<int>(threads_.size()), std::memory_order_relaxed);
            return;
          }
          continue;
        }
        item = std::move(queue_.front());
        queue_.pop_front();
      }
      meter_.queued(-1);
      meter_.busy(+1);
      this_connection = {item.enqueued, Clock::now(), 0, nullptr};
      item.fn();
      if (this_connection.seat) this_connection.seat->release();
      this_connection.seat = nullptr;
      meter_.busy(-1);
    }
  }

  IoMeter &meter_;
  const int max_, core_;
  const std::size_t queue_limit_;
  std::atomic<int> &live_out_;
  std::atomic<std::uint64_t> &shed_;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Item> queue_;
  int idle_ = 0;
  bool stopping_ = false;
  std::unordered_map<std::thread::id, std::thread> threads_;
  std::vector<std::thread> zombies_;
};

// Whether the client of a connection is gone: it closed (EOF) or reset the connection. A client
// that half-closes after its request counts as gone too (as nginx treats it); bytes of a
// pipelined request count as present.
bool peer_gone(int fd) noexcept {
  if (fd < 0) return false;
  char c;
  const ssize_t n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return true;
  return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

// One connection's socket as cpp-httplib's Stream: buffered reads that enforce the request
// deadline and the header caps (recorded in this_conn.limit), and wake up when the server stops.
class ConnStream final : public httplib::Stream {
public:
  struct Config {
    std::chrono::milliseconds read_timeout, write_timeout, request_timeout;
  };

  ConnStream(int fd, int stop_fd, const std::atomic<std::int64_t> &stop_at_ns, Config cfg)
      : fd_(fd), stop_fd_(stop_fd), stop_at_ns_(stop_at_ns), cfg_(cfg) {}

  enum class Wait { Data, Idle, Stopped };
  // Waits for the first byte of the next request. On stop, a request already arriving is served.
  Wait wait_for_request(std::chrono::milliseconds timeout) {
    if (pos_ < len_) return Wait::Data;
    const auto until = Clock::now() + timeout;
    for (;;) {
      const bool stopping = stopped();
      pollfd fds[2] = {{fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - Clock::now());
      const int ms = stopping ? 0 : static_cast<int>(std::max<std::int64_t>(0, left.count()));
      const int r = ::poll(fds, stopping ? 1 : 2, ms);
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return Wait::Stopped;
      if (fds[0].revents != 0) return Wait::Data;
      if (stopping) return Wait::Stopped;
      if (r == 0 && Clock::now() >= until) return Wait::Idle;
    }
  }

  void begin_request() {
    deadline_ = Clock::now() + cfg_.request_timeout;
    in_headers_ = true;
    header_bytes_ = 0;
    line_bytes_ = 0;
    lines_ = 0;
    line_colon_ = line_fold_ = false;
    this_conn.limit = ConnectionState::Limit::None;
    this_conn.in_request_line = true;
  }
  std::size_t header_bytes() const noexcept { return header_bytes_; }
  bool in_request_line() const noexcept { return lines_ == 0; }

  bool is_readable() const override {
    if (pos_ < len_) return true;
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(cfg_.read_timeout.count())) > 0;
  }
  bool is_writable() const override {
    pollfd p{fd_, POLLOUT, 0};
    return ::poll(&p, 1, static_cast<int>(cfg_.write_timeout.count())) > 0;
  }

  ssize_t read(char *ptr, size_t size) override {
    if (this_conn.limit != ConnectionState::Limit::None) return -1;
    if (pos_ == len_) {
      const ssize_t n = fill();
      if (n <= 0) return n;
    }
    std::size_t n = std::min(size, len_ - pos_);
    if (in_headers_) {
      // cpp-httplib reads headers a byte at a time; count lines and bytes as they are consumed.
      for (std::size_t i = 0; i < n; ++i) {
        const char c = buf_[pos_ + i];
        ++header_bytes_;
        if (c == '\n') {
          if (line_bytes_ <= 1 && lines_ > 0) { // "\r\n" (or "\n"): end of the headers
            in_headers_ = false;
            n = i + 1;
            break;
          }
          // cpp-httplib silently skips a header line without a colon; obsolete line folding
          // (a line starting with a space) is refused by RFC 9112 too.
          if (lines_ > 0 && (!line_colon_ || line_fold_))
            return fail(ConnectionState::Limit::BadHeader);
          ++lines_;
          this_conn.in_request_line = false;
          line_bytes_ = 0;
          line_colon_ = line_fold_ = false;
        } else {
          if (line_bytes_ == 0 && (c == ' ' || c == '\t')) line_fold_ = true;
          if (c == ':') line_colon_ = true;
          ++line_bytes_;
        }
        if (header_bytes_ > max_header_bytes) return fail(ConnectionState::Limit::HeaderBytes);
        if (lines_ > max_header_lines) return fail(ConnectionState::Limit::HeaderLines);
        if (lines_ > 0 && line_bytes_ + 1 > max_line_bytes) // + 1: the '\n'; like httplib's check
          return fail(ConnectionState::Limit::LineLength);
      }
    }
    std::memcpy(ptr, buf_ + pos_, n);
    pos_ += n;
    return static_cast<ssize_t>(n);
  }

  ssize_t write(const char *ptr, size_t size) override {
    if (!is_writable()) return -1;
    for (;;) {
      const ssize_t n = ::send(fd_, ptr, size, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      return n;
    }
  }

  void get_remote_ip_and_port(std::string &ip, int &port) const override {
    address(&::getpeername, ip, port);
  }
  void get_local_ip_and_port(std::string &ip, int &port) const override {
    address(&::getsockname, ip, port);
  }
  socket_t socket() const override { return fd_; }

private:
  bool stopped() const noexcept { return stop_at_ns_.load(std::memory_order_acquire) != 0; }

  ssize_t fail(ConnectionState::Limit why) {
    this_conn.limit = why;
    return -1;
  }

  // Reads into the buffer, waiting at most the read timeout, the request deadline and, once the
  // server stops, one second past the stop.
  ssize_t fill() {
    pos_ = len_ = 0;
    const auto read_until = Clock::now() + cfg_.read_timeout;
    for (;;) {
      auto until = std::min(read_until, deadline_);
      const bool stopping = stopped();
      if (stopping) {
        const auto stop_at = Clock::time_point(std::chrono::nanoseconds(stop_at_ns_.load()));
        until = std::min(until, stop_at + std::chrono::seconds(1));
      }
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - Clock::now());
      if (left.count() <= 0)
        return fail(stopping && until < std::min(read_until, deadline_)
                        ? ConnectionState::Limit::Stopping
                        : ConnectionState::Limit::Timeout);
      pollfd fds[2] = {{fd_, POLLIN, 0}, {stop_fd_, POLLIN, 0}};
      const int r = ::poll(fds, stopping ? 1 : 2, static_cast<int>(left.count()));
      if (r < 0 && errno != EINTR) return -1;
      if (r <= 0 || fds[0].revents == 0) continue; // timeout or stop: re-evaluate the bounds
      const ssize_t n = ::recv(fd_, buf_, sizeof buf_, 0);
      if (n < 0 && (errno == EINTR || errno == EAGAIN || errno == EWOULDBLOCK)) continue;
      if (n > 0) len_ = static_cast<std::size_t>(n);
      return n;
    }
  }

  template <typename F> void address(F f, std::string &ip, int &port) const {
    sockaddr_storage a{};
    socklen_t len = sizeof a;
    ip.clear();
    port = 0;
    if (f(fd_, reinterpret_cast<sockaddr *>(&a), &len) != 0) return;
    char host[INET6_ADDRSTRLEN] = {};
    if (a.ss_family == AF_INET) {
      const auto *in = reinterpret_cast<const sockaddr_in *>(&a);
      ::inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
      port = ntohs(in->sin_port);
    } else if (a.ss_family == AF_INET6) {
      const auto *in6 = reinterpret_cast<const sockaddr_in6 *>(&a);
      ::inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
      port = ntohs(in6->sin6_port);
    }
    ip = host;
  }

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

// Writes a whole response the server makes up itself (shed, or a request cpp-httplib gave up
// on), then closes. Best effort, bounded by the write timeout.
void send_canned(int fd, int status, const char *phrase, const std::string &reason) {
  const std::string body = std::to_string(status) + " " + reason + "\n";
  const std::string msg =
      "HTTP/1.1 " + std::to_string(status) + " " + phrase +
      "\r\nContent-Type: text/plain\r\nContent-Length: " + std::to_string(body.size()) +
      "\r\nConnection: close\r\n" + (status == 503 ? "Retry-After: 1\r\n" : "") + "\r\n" + body;
  std::size_t off = 0;
  while (off < msg.size()) {
    pollfd p{fd, POLLOUT, 0};
    if (::poll(&p, 1, 1000) <= 0) return;
    const ssize_t n = ::send(fd, msg.data() + off, msg.size() - off, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) return;
    off += static_cast<std::size_t>(n);
  }
}

// Closes after an error response without losing it: closing with unread request bytes sends a
// reset, which can discard the response at the client. So stop writing, drain what the client
// still sends for a bounded time, then close (Apache's "lingering close").
void close_lingering(int fd, std::chrono::milliseconds bound) {
  ::shutdown(fd, SHUT_WR);
  const auto until = Clock::now() + bound;
  char sink[4096];
  std::size_t drained = 0;
  while (drained < 256 * 1024) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(until - Clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    const ssize_t n = ::recv(fd, sink, sizeof sink, MSG_DONTWAIT);
    if (n <= 0) break;
    drained += static_cast<std::size_t>(n);
  }
  ::close(fd);
}

// httplib::Server with our own connection loop (its process_and_close_socket is virtual): we know
// each connection's fd (to see a client leave while its tile waits), bound the time and size of
// a request's headers, and wake idle and half-read connections at once when stopping.
class HttpServer final : public httplib::Server {
public:
  struct Config {
    std::chrono::milliseconds first_byte, keep_alive, read, write, request;
    std::size_t keep_alive_max;
  };

  HttpServer() : stop_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
    if (stop_fd_ < 0) throw std::runtime_error("eventfd failed");
    warm_up();
  }
  ~HttpServer() override { ::close(stop_fd_); }

  void configure(Config cfg) { cfg_ = cfg; }

  // cpp-httplib listens with a backlog of 5 (compiled in); a burst of connections would then
  // wait for SYN retransmits. listen() again on the bound socket only raises the backlog.
  void raise_backlog() {
    const socket_t s = svr_sock_;
    if (s != INVALID_SOCKET) ::listen(s, 1024);
  }

  /// Closes the listener and wakes every connection waiting for a request. Idempotent.
  void stop_now() {
    std::int64_t expected = 0;
    if (stop_at_ns_.compare_exchange_strong(expected,
                                            std::max<std::int64_t>(1, to_ns(Clock::now())))) {
      const std::uint64_t one = 1;
      [[maybe_unused]] const auto n = ::write(stop_fd_, &one, sizeof one);
    }
    stop();
  }

private:
  // An in-memory request for warm_up().
  class MemStream final : public httplib::Stream {
  public:
    explicit MemStream(std::string in) : in_(std::move(in)) {}
    bool is_readable() const override { return pos_ < in_.size(); }
    bool is_writable() const override { return true; }
    ssize_t read(char *ptr, size_t size) override {
      const std::size_t n = std::min(size, in_.size() - pos_);
      std::memcpy(ptr, in_.data() + pos_, n);
      pos_ += n;
      return static_cast<ssize_t>(n);
    }
    ssize_t write(const char *, size_t size) override { return static_cast<ssize_t>(size); }
    void get_remote_ip_and_port(std::string &ip, int &port) const override {
      ip = "127.0.0.1";
      port = 0;
    }
    void get_local_ip_and_port(std::string &ip, int &port) const override {
      ip = "127.0.0.1";
      port = 0;
    }
    socket_t socket() const override { return INVALID_SOCKET; }

  private:
    std::string in_;
    std::size_t pos_ = 0;
  };

  // cpp-httplib builds function-local statics (its method set, the Range regexes) on first use.
  // It is not built with tsan, whose view of the static's guard is then missing: the first
  // requests parsed at once on two connection threads are reported as a race. One request
  // through memory, before any connection thread exists (no routes yet: a 404 to nobody), builds
  // them here.
  void warm_up() {
    MemStream s("GET /warm-up?a=b HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\n\r\n");
    bool closed = false;
    process_request(s, true, closed, nullptr);
  }

  bool process_and_close_socket(socket_t sock) override {
    this_conn = {};
    this_conn.fd = sock;
    if (shed_this_connection) {
      send_canned(sock, 503, "Service Unavailable", "too many connections; retry later");
      close_lingering(sock, std::chrono::milliseconds(100));
      this_conn.fd = -1;
      return false;
    }
    ConnStream strm(sock, stop_fd_, stop_at_ns_, {cfg_.read, cfg_.write, cfg_.request});
    bool ret = false, linger = false;
    for (std::size_t count = std::max<std::size_t>(1, cfg_.keep_alive_max); count > 0; --count) {
      const bool first = count == std::max<std::size_t>(1, cfg_.keep_alive_max);
      if (strm.wait_for_request(first ? cfg_.first_byte : cfg_.keep_alive) !=
          ConnStream::Wait::Data)
        break;
      const bool close_connection = count == 1 || stop_at_ns_.load() != 0;
      bool connection_closed = false;
      strm.begin_request();
      this_conn.close_after = false;
      ret = process_request(strm, close_connection, connection_closed, nullptr);
      if (!ret) {
        // cpp-httplib gave up without answering (the request line never ended): answer for it.
        if (strm.header_bytes() > 0) {
          switch (this_conn.limit) {
          case ConnectionState::Limit::Timeout:
            send_canned(sock, 408, "Request Timeout", "request line not received in time");
            linger = true;
            break;
          case ConnectionState::Limit::HeaderBytes:
            send_canned(sock, 414, "URI Too Long",
                        "request line longer than " + std::to_string(max_header_bytes) + " bytes");
            linger = true;
            break;
          default:
            break;
          }
        }
        break;
      }
      if (this_conn.close_after) {
        linger = true;
        break;
      }
      if (connection_closed || close_connection) break;
    }
    if (linger) {
      // Stopping: do not let a client that keeps its side open hold the exit up.
      close_lingering(sock, stop_at_ns_.load() != 0 ? std::chrono::milliseconds(100)
                                                    : std::chrono::milliseconds(2000));
    } else {
      ::shutdown(sock, SHUT_RDWR);
      ::close(sock);
    }
    this_conn.fd = -1;
    return ret;
  }

  int stop_fd_;
  std::atomic<std::int64_t> stop_at_ns_{0};
  Config cfg_{};
};

struct TileResult {
  std::vector<std::uint8_t> png;
  double queue_ms = 0, work_ms = 0, render_ms = 0, encode_ms = 0;
  int worker = -1;
  bool cancelled = false; // the client left before a worker took the tile
};

// What the access log prints for the request this thread just answered.
struct LogNote {
  std::string executor;
  std::string timing;
};
thread_local LogNote log_note;

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

// Client-controlled text for a one-line reason or log line: printable ASCII only, bounded.
std::string printable(std::string_view s, std::size_t max) {
  std::string out;
  for (char c : s.substr(0, max))
    out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (s.size() > max) out += "...";
  return out;
}

} // namespace

struct TileServer::Impl {
  ServerOptions opt;
  std::vector<std::unique_ptr<Executor>> executors; // indexed by ExecutorKind
  IoMeter io_meter;
  InlineSeats inline_seats;
  std::atomic<int> io_live{0};
  std::atomic<std::uint64_t> io_shed{0};
  HttpServer svr;
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
  std::array<std::atomic<std::uint64_t>, 6> responses{}; // 2xx,3xx,4xx(other),429,5xx,503

  explicit Impl(ServerOptions o)
      : opt(std::move(o)), io_meter(workers_of(opt)), inline_seats(workers_of(opt)) {
    ExecutorOptions eo;
    eo.workers = opt.workers;
    eo.queue_limit = opt.queue_limit;
    eo.split = opt.split;
    for (ExecutorKind k : all_executor_kinds())
      executors.push_back(make_executor(k, eo));
    setup_routes();
  }

  static int workers_of(const ServerOptions &o) {
    return o.workers > 0 ? o.workers
                         : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  }

  Executor &executor(ExecutorKind k) { return *executors[static_cast<std::size_t>(k)]; }

  void setup_routes() {
    const int io_threads = std::max(1, opt.io_threads);
    svr.new_task_queue = [this, io_threads] {
      return new IoPool(io_threads, opt.io_queue_limit, io_meter, io_live, io_shed);
    };
    using std::chrono::milliseconds;
    using std::chrono::seconds;
    svr.configure(
        {seconds(std::max(1, opt.read_timeout_s)), seconds(std::max(0, opt.keep_alive_timeout_s)),
         seconds(std::max(1, opt.read_timeout_s)), seconds(std::max(1, opt.read_timeout_s)),
         seconds(std::max(1, opt.request_timeout_s)),
         static_cast<std::size_t>(std::max(1, opt.keep_alive_max_count))});
    svr.set_tcp_nodelay(true); // headers and body go out in separate writes: avoid Nagle stalls
    svr.set_keep_alive_max_count(static_cast<std::size_t>(std::max(1, opt.keep_alive_max_count)));
    svr.set_keep_alive_timeout(std::max(0, opt.keep_alive_timeout_s));
    svr.set_read_timeout(std::max(1, opt.read_timeout_s), 0);
    svr.set_write_timeout(std::max(1, opt.read_timeout_s), 0);
    svr.set_payload_max_length(64 * 1024);

    svr.set_pre_routing_handler([this](const httplib::Request &req, httplib::Response &res) {
      log_note = {};
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
      const bool tile = req.path.rfind("/tile/", 0) == 0;
      const bool get_route = req.path == "/" || req.path == "/healthz" ||
                             req.path == "/api/stats" || req.path == "/api/trace" ||
                             req.path == "/metrics";
      if (!tile && !get_route) return R::Unhandled;
      if (req.method != "GET" && req.method != "HEAD") {
        if (has_body) close_after(res);
        res.set_header("Allow", "GET, HEAD");
        reply_error(res, 405,
                    "method " + printable(req.method, 16) + " not allowed on " +
                        (tile ? "tiles" : printable(req.path, 64)) + " (use GET)");
        return R::Handled;
      }
      if (!tile) return R::Unhandled;
      if (has_body) close_after(res);
      handle_tile(req, res);
      return R::Handled;
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
        [this](const httplib::Request &req, httplib::Response &res) {
          if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
          std::string reason = reason_phrase(res.status);
          if (res.status == 404) {
            reason = "no such path: " + printable(req.path, 200);
          } else {
            // cpp-httplib answers before routing (malformed or over-long request, body too large):
            // the stream may hold unread bytes, so this connection closes after the response.
            this_conn.close_after = true;
            using L = ConnectionState::Limit;
            if (res.status == 400 && this_conn.limit == L::Timeout) {
              res.status = 408;
              reason = "request headers not received within " +
                       std::to_string(std::max(1, opt.request_timeout_s)) + " s";
            } else if (res.status == 400 && this_conn.limit == L::HeaderBytes) {
              res.status = 431;
              reason = "request headers longer than " + std::to_string(max_header_bytes) + " bytes";
            } else if (res.status == 400 && this_conn.limit == L::HeaderLines) {
              res.status = 431;
              reason = "more than " + std::to_string(max_header_lines) + " header lines";
            } else if (res.status == 400 && this_conn.limit == L::LineLength) {
              res.status = 431;
              reason = "a header line is longer than " + std::to_string(max_line_bytes) + " bytes";
            } else if (res.status == 400 && this_conn.limit == L::BadHeader) {
              reason = "malformed header line (no colon, or folded)";
            } else if (res.status == 400 && this_conn.limit == L::Stopping) {
              res.status = 503;
              reason = "server is shutting down";
            } else if (res.status == 400) {
              // Our own handlers always write a body: an empty one means the request did not parse.
              reason = "malformed request line or header (CRLF line ends, methods in capitals, "
                       "HTTP/1.0 or HTTP/1.1)";
            } else if (res.status == 414) {
              reason = "request line longer than " + std::to_string(max_line_bytes) + " bytes";
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
      line << printable(req.method, 16) << " " << printable(req.path, 200) << " " << res.status;
      if (!log_note.executor.empty()) line << " " << log_note.executor;
      if (!log_note.timing.empty()) line << " " << log_note.timing;
      line << "\n";
      std::cerr << line.str();
    });
  }

  void count_response(int status) {
    std::size_t k = status < 300    ? 0
                    : status < 400  ? 1
                    : status == 429 ? 3
                    : status < 500  ? 2
                    : status == 503 ? 5
                                    : 4;
    responses[k].fetch_add(1, std::memory_order_relaxed);
  }

  // This response is the connection's last: bytes the client sent after it are not a request.
  static void close_after(httplib::Response &res) {
    this_conn.close_after = true;
    res.set_header("Connection", "close");
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

    // Inline renders on this connection's thread: take one of the N inline I/O threads ("seats")
    // for the rest of the connection's life, as N real I/O threads would be taken.
    double seat_wait_ms = 0.0;
    if (kind == ExecutorKind::Inline && this_connection.seat == nullptr) {
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
      this_connection.seat = &inline_seats;
    }

    const std::string label =
        std::to_string(q.tile.z) + "/" + std::to_string(q.tile.x) + "/" + std::to_string(q.tile.y);
    const WorkSpec work = opt.work;
    // The connection's socket stays open while this thread waits for the job (the 504 bug path
    // below withdraws it before returning), so the job may peek at it.
    auto conn_fd = std::make_shared<std::atomic<int>>(this_conn.fd);
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
            IoMeter &m;
            ~Done() { m.rendering(-1); }
          } done{io_meter};
          const auto t0 = Clock::now();
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
      conn_fd->store(-1);
      reply_error(res, 504, "tile took longer than 10 minutes");
      return;
    }
    const TileResult r = future->get();
    if (r.cancelled) {
      close_after(res);
      log_note.timing = "cancelled queue=" + fixed3(r.queue_ms) + " ms";
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
    if (this_connection.requests++ == 0)
      io_ms += ms_between(this_connection.enqueued, this_connection.started);
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
                      " queue=" + fixed3(r.queue_ms) +
                      " render=" + fixed3(r.work_ms + r.render_ms) +
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
      out += "{\"name\":\"" + std::string(ex.name()) +
             "\",\"workers\":" + std::to_string(ex.workers()) +
             ",\"last_seq\":" + std::to_string(s.last_seq) +
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
           json_escape(to_string(opt.work)) +
           "\",\"keep_alive_timeout_s\":" + std::to_string(opt.keep_alive_timeout_s) +
           ",\"request_timeout_s\":" + std::to_string(opt.request_timeout_s) + ",\"isa\":\"" +
           std::string(to_string(best_isa())) + "\"}";
    out += ",\"io\":{\"threads\":" + std::to_string(opt.io_threads) +
           ",\"queued\":" + std::to_string(io.queued) + ",\"busy\":" + std::to_string(io.busy) +
           ",\"rendering\":" + std::to_string(io.rendering) +
           ",\"connections\":" + std::to_string(io.connections) +
           ",\"idle_while_waiting_seconds\":" + fixed3(io.idle_while_waiting_seconds) +
           ",\"live_threads\":" + std::to_string(io_live.load()) +
           ",\"shed\":" + std::to_string(io_shed.load());
    const InlineSeats::Snapshot seats = inline_seats.snapshot();
    out += ",\"inline_seats\":{\"capacity\":" + std::to_string(seats.capacity) +
           ",\"held\":" + std::to_string(seats.held) +
           ",\"waiting\":" + std::to_string(seats.waiting) + "}}";
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
    for (auto &e : executors)
      stats.push_back(e->stats());
    auto per_exec = [&](const char *name, const char *type, const char *help, auto field) {
      metric(name, type, help);
      for (const auto &s : stats)
        m << name << "{executor=\"" << s.name << "\"} " << field(s) << "\n";
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
    return m.str();
  }

  void stop() {
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
};

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
  im.listener = std::thread([&im] { im.svr.listen_after_bind(); });
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
