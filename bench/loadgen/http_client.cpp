// The load generator's HTTP/1.1 client: non-blocking sockets and poll() against a deadline, so
// no step can hang; Content-Length, chunked and read-until-close bodies.
#include "bench/loadgen/http_client.hpp"

#include <algorithm>
#include <arpa/inet.h>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace overdrive::loadgen::detail {
namespace {

constexpr std::size_t max_header_bytes = 64 * 1024;
constexpr std::size_t max_body_bytes = 64 * 1024 * 1024;

std::string lower(std::string_view s) {
  std::string out(s);
  for (char &c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

std::string trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r'))
    s.remove_suffix(1);
  return std::string(s);
}

std::string errno_text(const char *what) {
  return std::string(what) + ": " + std::strerror(errno);
}

} // namespace

std::string Response::header(std::string_view name) const {
  // Header names are case-insensitive (HAProxy, for one, sends them in lower case).
  auto same = [name](std::string_view k) {
    return k.size() == name.size() &&
           std::equal(k.begin(), k.end(), name.begin(), [](char a, char b) {
             return std::tolower(static_cast<unsigned char>(a)) ==
                    std::tolower(static_cast<unsigned char>(b));
           });
  };
  for (const auto &[k, v] : headers)
    if (same(k)) return v;
  return {};
}

Connection::Connection(Connection &&other) noexcept
    : fd_(std::exchange(other.fd_, -1)), buf_(std::move(other.buf_)) {}

Connection &Connection::operator=(Connection &&other) noexcept {
  if (this != &other) {
    close();
    fd_ = std::exchange(other.fd_, -1);
    buf_ = std::move(other.buf_);
  }
  return *this;
}

void Connection::close() noexcept {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  buf_.clear();
}

std::string Connection::wait_for(short events, Clock::time_point deadline) {
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) return "timed out";
    pollfd p{fd_, events, 0};
    const int n = ::poll(&p, 1, static_cast<int>(std::min<long long>(left.count() + 1, 60000)));
    if (n > 0) return {};
    if (n < 0 && errno != EINTR) return errno_text("poll");
  }
}

std::string Connection::connect(const Endpoint &endpoint, Clock::time_point deadline) {
  close();
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(endpoint.port));
  const std::string host = endpoint.host == "localhost" ? "127.0.0.1" : endpoint.host;
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) return "bad address " + host;
  fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return errno_text("socket");
  const int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (::connect(fd_, reinterpret_cast<const sockaddr *>(&addr), sizeof addr) != 0) {
    if (errno != EINPROGRESS) {
      std::string e = errno_text("connect");
      close();
      return e;
    }
    if (std::string e = wait_for(POLLOUT, deadline); !e.empty()) {
      close();
      return "connect " + e;
    }
    int err = 0;
    socklen_t len = sizeof err;
    ::getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len);
    if (err != 0) {
      close();
      return std::string("connect: ") + std::strerror(err);
    }
  }
  return {};
}

std::string Connection::read_some(Clock::time_point deadline, Response &response, bool &eof) {
  char chunk[64 * 1024];
  for (;;) {
    const ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n > 0) {
      if (response.first_byte == Clock::time_point{}) response.first_byte = Clock::now();
      buf_.append(chunk, static_cast<std::size_t>(n));
      return {};
    }
    if (n == 0) {
      eof = true;
      return {};
    }
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) return errno_text("recv");
    if (std::string e = wait_for(POLLIN, deadline); !e.empty()) return "response " + e;
  }
}

std::string Connection::get(const Endpoint &endpoint, const std::string &path, bool close_after,
                            Clock::time_point deadline, Clock::time_point &sent, Response &response,
                            std::string *body) {
  response = Response{};
  if (!is_open()) return "not connected";
  auto fail = [this](std::string e) {
    close();
    return e;
  };
  const std::string request = "GET " + path + " HTTP/1.1\r\nHost: " + endpoint.host + ":" +
                              std::to_string(endpoint.port) +
                              "\r\nUser-Agent: overdrive-bench\r\nAccept: */*\r\nConnection: " +
                              (close_after ? "close" : "keep-alive") + "\r\n\r\n";
  buf_.clear();
  for (std::size_t off = 0; off < request.size();) {
    const ssize_t n = ::send(fd_, request.data() + off, request.size() - off, MSG_NOSIGNAL);
    if (n > 0) {
      off += static_cast<std::size_t>(n);
    } else if (n < 0 && errno == EINTR) {
      continue;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      if (std::string e = wait_for(POLLOUT, deadline); !e.empty()) return fail("send " + e);
    } else {
      return fail(errno_text("send"));
    }
  }
  sent = Clock::now();

  // Status line and headers.
  bool eof = false;
  std::size_t header_end;
  while ((header_end = buf_.find("\r\n\r\n")) == std::string::npos) {
    if (buf_.size() > max_header_bytes) return fail("response headers too large");
    if (std::string e = read_some(deadline, response, eof); !e.empty()) return fail(e);
    if (eof)
      return fail(buf_.empty() ? "connection closed before a response" : "truncated headers");
  }
  const std::string_view head(buf_.data(), header_end);
  const auto line_end = head.find("\r\n");
  const std::string_view status_line = head.substr(0, line_end);
  if (status_line.substr(0, 7) != "HTTP/1." || status_line.size() < 12)
    return fail("malformed status line");
  const std::string_view code = status_line.substr(9, 3);
  std::from_chars(code.data(), code.data() + 3, response.status);
  if (response.status < 100 || response.status > 599) return fail("malformed status code");
  std::optional<std::size_t> content_length;
  bool chunked = false;
  for (std::size_t p = line_end; p != std::string_view::npos && p < head.size();) {
    const auto next = head.find("\r\n", p + 2);
    const std::string_view line =
        head.substr(p + 2, next == std::string_view::npos ? std::string_view::npos : next - p - 2);
    p = next;
    const auto colon = line.find(':');
    if (colon == std::string_view::npos) continue;
    std::string name = lower(trim(line.substr(0, colon))), value = trim(line.substr(colon + 1));
    if (name == "content-length") {
      std::size_t v = 0;
      const auto [ptr, ec] = std::from_chars(value.data(), value.data() + value.size(), v);
      if (ec != std::errc{} || ptr != value.data() + value.size() || v > max_body_bytes)
        return fail("bad Content-Length");
      content_length = v;
    } else if (name == "transfer-encoding") {
      chunked = lower(value).find("chunked") != std::string::npos;
    } else if (name == "connection") {
      if (lower(value).find("close") != std::string::npos) response.keep_alive = false;
    }
    response.headers.emplace_back(std::move(name), std::move(value));
  }
  if (status_line.substr(0, 8) == "HTTP/1.0" &&
      lower(response.header("connection")) != "keep-alive")
    response.keep_alive = false;
  buf_.erase(0, header_end + 4);

  // Body. 1xx/204/304 have none.
  const bool no_body = response.status < 200 || response.status == 204 || response.status == 304;
  if (no_body) {
    // nothing
  } else if (chunked) {
    std::size_t pos = 0; // parse position in buf_
    std::size_t total = 0;
    for (;;) {
      const auto crlf = buf_.find("\r\n", pos);
      if (crlf == std::string::npos) {
        if (std::string e = read_some(deadline, response, eof); !e.empty()) return fail(e);
        if (eof) return fail("truncated chunked body");
        continue;
      }
      std::size_t size = 0;
      const auto [ptr, ec] = std::from_chars(buf_.data() + pos, buf_.data() + crlf, size, 16);
      if (ec != std::errc{} || ptr == buf_.data() + pos) return fail("bad chunk size");
      if (size > max_body_bytes - total) return fail("body too large");
      if (size == 0) {
        // "0\r\n", optional trailers, then an empty line.
        while (buf_.find("\r\n\r\n", crlf) == std::string::npos) {
          if (std::string e = read_some(deadline, response, eof); !e.empty()) return fail(e);
          if (eof) break;
        }
        break;
      }
      while (buf_.size() < crlf + 2 + size + 2) {
        if (std::string e = read_some(deadline, response, eof); !e.empty()) return fail(e);
        if (eof) return fail("truncated chunk");
      }
      if (body) body->append(buf_, crlf + 2, size);
      total += size;
      pos = crlf + 2 + size + 2;
    }
    response.body_bytes = total;
  } else if (content_length) {
    while (buf_.size() < *content_length) {
      if (std::string e = read_some(deadline, response, eof); !e.empty()) return fail(e);
      if (eof) return fail("truncated body");
    }
    response.body_bytes = *content_length;
    if (body) body->assign(buf_, 0, *content_length);
  } else {
    while (!eof) {
      if (buf_.size() > max_body_bytes) return fail("body too large");
      if (std::string e = read_some(deadline, response, eof); !e.empty()) return fail(e);
    }
    response.body_bytes = buf_.size();
    if (body) *body = buf_;
    response.keep_alive = false;
  }
  response.done = Clock::now();
  buf_.clear();
  if (!response.keep_alive || close_after) close();
  return {};
}

} // namespace overdrive::loadgen::detail
