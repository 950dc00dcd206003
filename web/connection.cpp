// One HTTP connection (see connection.hpp): the stream with deadlines and header caps, canned
// replies, lingering close and the connection loop.
#include "web/connection.hpp"

#include "web/io_pool.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <netinet/in.h>
#include <poll.h>
#include <stdexcept>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

namespace overdrive::detail {
namespace {

template <typename F> void address(int fd, F f, std::string &ip, int &port) {
  sockaddr_storage a{};
  socklen_t len = sizeof a;
  ip.clear();
  port = 0;
  if (f(fd, reinterpret_cast<sockaddr *>(&a), &len) != 0) return;
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

} // namespace

ConnectionState &this_conn() noexcept {
  thread_local ConnectionState state;
  return state;
}

bool peer_gone(int fd) noexcept {
  if (fd < 0) return false;
  char c;
  const ssize_t n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n == 0) return true;
  return n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

ConnStream::Wait ConnStream::wait_for_request(std::chrono::milliseconds timeout) {
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

void ConnStream::begin_request() {
  deadline_ = Clock::now() + cfg_.request_timeout;
  in_headers_ = true;
  header_bytes_ = 0;
  line_bytes_ = 0;
  lines_ = 0;
  line_colon_ = line_fold_ = false;
  this_conn().limit = ConnectionState::Limit::None;
  this_conn().in_request_line = true;
}

bool ConnStream::is_readable() const {
  if (pos_ < len_) return true;
  pollfd p{fd_, POLLIN, 0};
  return ::poll(&p, 1, static_cast<int>(cfg_.read_timeout.count())) > 0;
}

bool ConnStream::is_writable() const {
  pollfd p{fd_, POLLOUT, 0};
  return ::poll(&p, 1, static_cast<int>(cfg_.write_timeout.count())) > 0;
}

ssize_t ConnStream::read(char *ptr, size_t size) {
  if (this_conn().limit != ConnectionState::Limit::None) return -1;
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
        this_conn().in_request_line = false;
        line_bytes_ = 0;
        line_colon_ = line_fold_ = false;
      } else {
        if (line_bytes_ == 0 && (c == ' ' || c == '\t')) line_fold_ = true;
        if (c == ':') line_colon_ = true;
        ++line_bytes_;
      }
      if (header_bytes_ > HeaderLimits::max_header_bytes)
        return fail(ConnectionState::Limit::HeaderBytes);
      if (lines_ > HeaderLimits::max_header_lines) return fail(ConnectionState::Limit::HeaderLines);
      if (lines_ > 0 &&
          line_bytes_ + 1 > HeaderLimits::max_line_bytes) // + 1: the '\n'; like httplib's check
        return fail(ConnectionState::Limit::LineLength);
    }
  }
  std::memcpy(ptr, buf_ + pos_, n);
  pos_ += n;
  return static_cast<ssize_t>(n);
}

ssize_t ConnStream::write(const char *ptr, size_t size) {
  if (!is_writable()) return -1;
  for (;;) {
    const ssize_t n = ::send(fd_, ptr, size, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    return n;
  }
}

void ConnStream::get_remote_ip_and_port(std::string &ip, int &port) const {
  address(fd_, &::getpeername, ip, port);
}

void ConnStream::get_local_ip_and_port(std::string &ip, int &port) const {
  address(fd_, &::getsockname, ip, port);
}

ssize_t ConnStream::fail(ConnectionState::Limit why) {
  this_conn().limit = why;
  return -1;
}

// Reads into the buffer, waiting at most the read timeout, the request deadline and, once the
// server stops, one second past the stop.
ssize_t ConnStream::fill() {
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

HttpServer::HttpServer() : stop_fd_(::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) {
  if (stop_fd_ < 0) throw std::runtime_error("eventfd failed");
  warm_up();
}

HttpServer::~HttpServer() {
  ::close(stop_fd_);
}

void HttpServer::raise_backlog() {
  const socket_t s = svr_sock_;
  if (s != INVALID_SOCKET) ::listen(s, 1024);
}

void HttpServer::stop_now() {
  std::int64_t expected = 0;
  if (stop_at_ns_.compare_exchange_strong(expected,
                                          std::max<std::int64_t>(1, to_ns(Clock::now())))) {
    const std::uint64_t one = 1;
    [[maybe_unused]] const auto n = ::write(stop_fd_, &one, sizeof one);
  }
  stop();
}

// cpp-httplib builds function-local statics (its method set, the Range regexes) on first use.
// It is not built with tsan, whose view of the static's guard is then missing: the first
// requests parsed at once on two connection threads are reported as a race. One request
// through memory, before any connection thread exists (no routes yet: a 404 to nobody), builds
// them here.
void HttpServer::warm_up() {
  MemStream s("GET /warm-up?a=b HTTP/1.1\r\nHost: x\r\nRange: bytes=0-1\r\n\r\n");
  bool closed = false;
  process_request(s, true, closed, nullptr);
}

bool HttpServer::process_and_close_socket(socket_t sock) {
  ConnectionState &conn = this_conn();
  conn = {};
  conn.fd = sock;
  if (this_connection().shed) {
    send_canned(sock, 503, "Service Unavailable", "too many connections; retry later");
    close_lingering(sock, std::chrono::milliseconds(100));
    conn.fd = -1;
    return false;
  }
  ConnStream strm(sock, stop_fd_, stop_at_ns_, {cfg_.read, cfg_.write, cfg_.request});
  bool ret = false, linger = false;
  for (std::size_t count = std::max<std::size_t>(1, cfg_.keep_alive_max); count > 0; --count) {
    const bool first = count == std::max<std::size_t>(1, cfg_.keep_alive_max);
    if (strm.wait_for_request(first ? cfg_.first_byte : cfg_.keep_alive) != ConnStream::Wait::Data)
      break;
    const bool close_connection = count == 1 || stop_at_ns_.load() != 0;
    bool connection_closed = false;
    strm.begin_request();
    conn.close_after = false;
    ret = process_request(strm, close_connection, connection_closed, nullptr);
    if (!ret) {
      // cpp-httplib gave up without answering (the request line never ended): answer for it.
      if (strm.header_bytes() > 0) {
        switch (conn.limit) {
        case ConnectionState::Limit::Timeout:
          send_canned(sock, 408, "Request Timeout", "request line not received in time");
          linger = true;
          break;
        case ConnectionState::Limit::HeaderBytes:
          send_canned(sock, 414, "URI Too Long",
                      "request line longer than " + std::to_string(HeaderLimits::max_header_bytes) +
                          " bytes");
          linger = true;
          break;
        default:
          break;
        }
      }
      break;
    }
    if (conn.close_after) {
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
  conn.fd = -1;
  return ret;
}

} // namespace overdrive::detail
