// A TileServer on 127.0.0.1 and an ephemeral port for the duration of a test, with a client.
#pragma once

#include "common/eventually.hpp"
#include "web/server.hpp"

#include <chrono>
#include <functional>
#include <httplib.h>
#include <thread>

namespace overdrive::test {

struct LoopbackServer {
  explicit LoopbackServer(ServerOptions o) : server(with_defaults(std::move(o))) {
    port = server.start();
  }
  ~LoopbackServer() { server.stop(); }

  static ServerOptions with_defaults(ServerOptions o) {
    o.host = "127.0.0.1";
    o.port = 0;
    o.access_log = false;
    return o;
  }

  /// A fresh client with bounded timeouts.
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_connection_timeout(5);
    c.set_read_timeout(30);
    c.set_write_timeout(5);
    return c;
  }

  TileServer server;
  int port = 0;
};

} // namespace overdrive::test
