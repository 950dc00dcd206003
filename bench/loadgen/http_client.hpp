// Private to bench/loadgen: a minimal HTTP/1.1 client over one TCP connection, written on raw
// sockets so that connecting, sending, the first response byte and the end of the body are
// separate, timed steps (a library client hides them), and so that a connection can be opened
// ahead of its request. Every step is bounded by a deadline.
#pragma once

#include "bench/loadgen/loadgen.hpp"

#include <string>
#include <utility>
#include <vector>

namespace overdrive::loadgen::detail {

struct Response {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers; ///< Names lower-cased
  std::size_t body_bytes = 0;
  Clock::time_point first_byte, done;
  bool keep_alive = true; ///< The server left the connection open

  /// Value of the first header with this (lower-case) name, or "".
  std::string header(std::string_view name) const;
};

/// One client connection. Not thread-safe: one thread uses it at a time. Move-only.
class Connection {
public:
  Connection() = default;
  ~Connection() { close(); }
  Connection(Connection &&other) noexcept;
  Connection &operator=(Connection &&other) noexcept;
  Connection(const Connection &) = delete;
  Connection &operator=(const Connection &) = delete;

  /// Opens a TCP connection (TCP_NODELAY) to the endpoint. Returns "" or an error message.
  std::string connect(const Endpoint &endpoint, Clock::time_point deadline);
  /// Sends a GET and reads its whole response. Returns "" or an error message; on error the
  /// connection is closed. `sent` is set when the request has been written. The body is only
  /// counted, unless `body` is given to receive it.
  std::string get(const Endpoint &endpoint, const std::string &path, bool close_after,
                  Clock::time_point deadline, Clock::time_point &sent, Response &response,
                  std::string *body = nullptr);
  bool is_open() const noexcept { return fd_ >= 0; }
  void close() noexcept;

private:
  std::string wait_for(short events, Clock::time_point deadline);
  std::string read_some(Clock::time_point deadline, Response &response, bool &eof);

  int fd_ = -1;
  std::string buf_;
};

} // namespace overdrive::loadgen::detail
