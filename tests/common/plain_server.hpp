// A bare cpp-httplib server on 127.0.0.1 and an ephemeral port, for tests that need "any HTTP
// server" rather than a TileServer: routes set up by the caller, stopped and joined at the end.
#pragma once

#include "common/eventually.hpp"

#include <doctest/doctest.h>
#include <functional>
#include <httplib.h>
#include <thread>

namespace overdrive::test {

class PlainHttpServer {
public:
  /// Runs setup(server) to add routes, binds, starts listening and answers one request alone
  /// first: cpp-httplib (not built with tsan) builds function-local statics on its first parse,
  /// which tsan reports as a race when two connections parse at once (TileServer does the same).
  explicit PlainHttpServer(const std::function<void(httplib::Server &)> &setup) {
    setup(server_);
    port_ = server_.bind_to_any_port("127.0.0.1");
    REQUIRE(port_ > 0);
    thread_ = std::thread([this] { server_.listen_after_bind(); });
    REQUIRE(eventually([this] { return server_.is_running(); }));
    httplib::Client warm("127.0.0.1", port_);
    warm.set_read_timeout(10);
    REQUIRE(warm.Get("/__warm-up"));
  }
  ~PlainHttpServer() {
    server_.stop();
    thread_.join();
  }
  PlainHttpServer(const PlainHttpServer &) = delete;
  PlainHttpServer &operator=(const PlainHttpServer &) = delete;

  int port() const noexcept { return port_; }

private:
  httplib::Server server_;
  int port_ = 0;
  std::thread thread_;
};

} // namespace overdrive::test
