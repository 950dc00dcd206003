// The tile server against hostile and careless clients: malformed bytes on a raw socket, clients
// that leave while their tile waits, idle and trickling connections, SIGTERM under load.
#include "common/loopback_server.hpp"

#include <arpa/inet.h>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <doctest/doctest.h>
#include <future>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <set>
#include <string>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace overdrive;
using namespace std::chrono_literals;
using overdrive::test::eventually;
using overdrive::test::LoopbackServer;
using SteadyClock = std::chrono::steady_clock;

namespace {

// A plain TCP connection to 127.0.0.1 with bounded send and receive timeouts, for requests that
// httplib's client would normalise (or refuse to send).
class RawConn {
public:
  explicit RawConn(int port, std::chrono::milliseconds timeout = 5s) {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd_ < 0) return;
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    const int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr *>(&a), sizeof a) != 0) close();
  }
  ~RawConn() { close(); }
  RawConn(const RawConn &) = delete;
  RawConn &operator=(const RawConn &) = delete;
  RawConn(RawConn &&o) noexcept : fd_(o.fd_) { o.fd_ = -1; }

  bool ok() const { return fd_ >= 0; }
  void close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

  bool send_all(const std::string &data) {
    std::size_t off = 0;
    while (off < data.size()) {
      const ssize_t n = ::send(fd_, data.data() + off, data.size() - off, MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      off += static_cast<std::size_t>(n);
    }
    return true;
  }

  struct Response {
    int status = 0;
    std::string head, body;
  };

  // Reads one response: the head, then Content-Length bytes (or up to EOF). Each recv waits at
  // most the socket timeout; the whole read at most `bound`.
  Response read_response(std::chrono::milliseconds bound = 10s) {
    Response r;
    const auto until = SteadyClock::now() + bound;
    std::string data;
    std::size_t head_end = std::string::npos;
    std::size_t need = std::string::npos;
    char buf[4096];
    while (SteadyClock::now() < until) {
      if (head_end == std::string::npos) {
        head_end = data.find("\r\n\r\n");
        if (head_end != std::string::npos) {
          r.head = data.substr(0, head_end + 2);
          const auto cl = lower(r.head).find("\r\ncontent-length:");
          if (cl != std::string::npos) need = head_end + 4 + std::stoul(r.head.substr(cl + 17));
        }
      }
      if (need != std::string::npos && data.size() >= need) break;
      const ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) break;
      data.append(buf, static_cast<std::size_t>(n));
    }
    if (head_end == std::string::npos) return r;
    if (data.rfind("HTTP/1.", 0) == 0 && data.size() > 12) r.status = std::atoi(data.c_str() + 9);
    r.body = data.substr(head_end + 4,
                         need == std::string::npos ? std::string::npos : need - head_end - 4);
    return r;
  }

  /// Whether the server closed the connection (EOF or reset) within bound.
  bool closed_by_peer(std::chrono::milliseconds bound) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(bound.count())) <= 0) return false;
    char c;
    const ssize_t n = ::recv(fd_, &c, 1, MSG_DONTWAIT);
    return n == 0 || (n < 0 && errno != EAGAIN);
  }

  static std::string lower(std::string s) {
    for (char &c : s)
      c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return s;
  }

private:
  int fd_ = -1;
};

ServerOptions small(int workers = 2) {
  ServerOptions o;
  o.workers = workers;
  o.io_threads = 32;
  return o;
}

std::string get(const std::string &target, const std::string &extra = "") {
  return "GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + "\r\n";
}

bool normal_tile_ok(const LoopbackServer &s) {
  auto res = s.client().Get("/tile/1/0/0.png?size=16&iter=10");
  return res && res->status == 200 && res->get_header_value("Content-Type") == "image/png";
}

struct Case {
  std::string name;
  std::string request; // raw bytes
  int status;
  std::string says; // substring of the one-line body
};

std::vector<Case> malformed_cases() {
  const std::string tile = "/tile/1/0/0.png";
  std::vector<Case> c = {
      // Numbers
      {"leading zero", get("/tile/1/00/0.png"), 400, "x '00'"},
      {"plus sign", get("/tile/1/+1/0.png"), 400, "x '+1'"},
      {"space in number", get("/tile/1/%201/0.png"), 400, "x ' 1'"},
      {"hex", get("/tile/1/0x1/0.png"), 400, "x '0x1'"},
      {"decimal point", get("/tile/1/1.0/0.png"), 400, "x '1.0'"},
      {"exponent", get("/tile/1/1e0/0.png"), 400, "x '1e0'"},
      {"zoom 121", get("/tile/121/0/0.png"), 400, "zoom 121 is out of range"},
      {"zoom 2^70", get("/tile/1180591620717411303424/0/0.png"), 400, "zoom"},
      {"x 2^70", get("/tile/3/1180591620717411303424/0.png"), 400, "outside zoom 3"},
      {"x int64 max", get("/tile/3/9223372036854775807/0.png"), 400, "outside zoom 3"},
      {"x int64 max + 1", get("/tile/3/9223372036854775808/0.png"), 400, "outside zoom 3"},
      {"x 2^126", get("/tile/3/85070591730234615865843651857942052864/0.png"), 400,
       "x '85070591730234615865843651857942052864'"},
      {"negative x", get("/tile/1/-1/0.png"), 400, "x '-1'"},
      {"negative zero y", get("/tile/1/0/-0.png"), 400, "y '-0'"},
      {"x out of range", get("/tile/2/4/0.png"), 400, "outside zoom 2"},
      {"y out of range", get("/tile/2/0/4.png"), 400, "outside zoom 2"},
      {"empty x", get("/tile/1//0.png"), 400, "x ''"},
      {"all empty", get("/tile///.png"), 400, "expected /tile/Z/X/Y.png"},
      {"empty zoom", get("/tile//0/0.png"), 400, "zoom ''"},
      {"huge iter", get(tile + "?iter=99999999999999999999"), 400, "iter"},
      {"iter over cap", get(tile + "?iter=100001"), 400, "iter '100001'"},
      {"huge size", get(tile + "?size=1000000000"), 400, "size"},
      {"negative size", get(tile + "?size=-256"), 400, "size '-256'"},
      {"empty iter", get(tile + "?iter="), 400, "iter ''"},
      {"iter without =", get(tile + "?iter"), 400, "iter ''"},
      {"budget", get(tile + "?size=1024&iter=65536"), 400, "budget"},
      // Names
      {"unknown executor", get(tile + "?executor=gpu"), 400, "unknown executor 'gpu'"},
      {"executor wrong case", get(tile + "?executor=Pool"), 400, "unknown executor 'Pool'"},
      {"executor with NUL", get(tile + "?executor=pool%00"), 400, "unknown executor 'pool?'"},
      {"unknown palette", get(tile + "?palette=plaid"), 400, "unknown palette 'plaid'"},
      {"palette traversal", get(tile + "?palette=../../etc/passwd"), 400, "unknown palette"},
      {"unknown parameter", get(tile + "?callback=alert(1)"), 400, "unknown parameter 'callback'"},
      {"empty parameter name", get(tile + "?=5"), 400, "unknown parameter"},
      {"duplicate parameter", get(tile + "?size=16&size=32"), 400, "more than once"},
      {"long nonce", get(tile + "?nonce=" + std::string(100, 'n')), 400, "nonce"},
      // Paths and percent-encoding
      {"traversal in tile", get("/tile/../../etc/passwd"), 400, "expected /tile/Z/X/Y.png"},
      {"traversal at root", get("/../../etc/passwd"), 404, "no such path: /../../etc/passwd"},
      {"encoded dots", get("/tile/%2e%2e/%2e%2e/etc/passwd"), 400, "expected /tile/Z/X/Y.png"},
      {"encoded slash in number", get("/tile/1/0%2F0/0.png"), 400, "expected /tile/Z/X/Y.png"},
      {"NUL in y", get("/tile/1/0/0%00.png"), 400, "y '0?'"},
      {"overlong UTF-8 dot", get("/tile/1/%c0%ae/0.png"), 400, "x '\?\?'"},
      {"overlong UTF-8 traversal", get("/%c0%ae%c0%ae/etc/passwd"), 404,
       "no such path: /\?\?\?\?/etc"},
      {"CRLF in path", get("/x%0d%0aSet-Cookie:%20a=b"), 404,
       "no such path: /x\?\?Set-Cookie: a=b"},
      {"wrong extension", get("/tile/1/0/0.jpg"), 400, "expected /tile/Z/X/Y.png"},
      {"absolute form", get("http://127.0.0.1/tile/1/0/0.png"), 404, "no such path"},
      // Lengths
      {"URI over 8192", get(tile + "?nonce=" + std::string(9000, 'a')), 414, "request line longer"},
      {"URI of 100 KiB", get(tile + "?nonce=" + std::string(100 * 1024, 'a')), 414,
       "request line longer"},
      {"header over 8192", get(tile, "X-Big: " + std::string(9000, 'b') + "\r\n"), 431,
       "header line is longer than 8192"},
      {"header without colon", get(tile, "NoColonHere\r\n"), 400, "malformed header line"},
      {"folded header", get(tile, "X-A: 1\r\n  folded\r\n"), 400, "malformed header line"},
      {"bare LF line ends", "GET " + tile + " HTTP/1.1\nHost: x\n\n", 400, "malformed"},
      {"headers over 32 KiB",
       get(tile,
           [] {
             std::string h;
             for (int i = 0; i < 6; ++i)
               h += "X-H" + std::to_string(i) + ": " + std::string(6000, 'h') + "\r\n";
             return h;
           }()),
       431, "longer than 32768 bytes"},
      {"200 headers",
       get(tile,
           [] {
             std::string h;
             for (int i = 0; i < 200; ++i)
               h += "X-H" + std::to_string(i) + ": v\r\n";
             return h;
           }()),
       431, "more than 100 header lines"},
      {"payload too large",
       "POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n", 413,
       "413 payload too large"},
      // Methods
      {"POST tile", "POST " + tile + " HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 405,
       "method POST not allowed on tiles"},
      {"PUT tile", "PUT " + tile + " HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405,
       "method PUT"},
      {"DELETE tile", "DELETE " + tile + " HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method DELETE"},
      {"PATCH tile", "PATCH " + tile + " HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}", 405,
       "method PATCH"},
      {"OPTIONS tile", "OPTIONS " + tile + " HTTP/1.1\r\nHost: x\r\n\r\n", 405, "method OPTIONS"},
      {"POST stats", "POST /api/stats HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405,
       "not allowed on /api/stats"},
      {"chunked POST tile",
       "POST " + tile +
           " HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
       405, "method POST"},
      // Request lines
      {"garbage line", "HELLO\r\n\r\n", 400, "malformed request line"},
      {"method only", "GET\r\n\r\n", 400, "malformed request line"},
      {"HTTP/0.9", "GET " + tile + "\r\n\r\n", 400, "malformed request line"},
      {"HTTP/2.0 version", "GET " + tile + " HTTP/2.0\r\nHost: x\r\n\r\n", 400, "malformed"},
      {"unknown method", "FOO " + tile + " HTTP/1.1\r\nHost: x\r\n\r\n", 400, "malformed"},
      {"lowercase method", "get " + tile + " HTTP/1.1\r\nHost: x\r\n\r\n", 400, "malformed"},
      {"TLS hello", std::string("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", 15), 400,
       "malformed"},
      {"NUL in request line", std::string("GET /tile/1/0/0.png\0 HTTP/1.1\r\nHost: x\r\n\r\n", 43),
       400, "malformed request line"},
      {"missing Host", "GET " + tile + " HTTP/1.1\r\n\r\n", 400, "without a Host header"},
      {"two Hosts", "GET " + tile + " HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400,
       "more than one Host"},
  };
  return c;
}

} // namespace

TEST_CASE("Hostile.MalformedRequestsGet4xx" * doctest::timeout(180)) {
  ServerOptions o = small();
  LoopbackServer s(o);
  const auto cases = malformed_cases();
  std::set<std::string> names;
  for (const auto &k : cases) {
    CAPTURE(k.name);
    CHECK_MESSAGE(names.insert(k.name).second, "two cases share a name");
    CHECK_MESSAGE(!k.says.empty(), "every case names the reason the body must give");
    RawConn c(s.port);
    REQUIRE(c.ok());
    c.send_all(k.request); // the server may answer (and close) before it has read everything
    const auto r = c.read_response();
    CHECK(r.status == k.status);
    CHECK(r.body.find(k.says) != std::string::npos);
    CHECK_MESSAGE(std::count(r.body.begin(), r.body.end(), '\n') == 1, r.body); // one line
    CHECK(r.body.ends_with('\n')); // false for an empty body too
    if (k.status == 405)
      CHECK(RawConn::lower(r.head).find("\r\nallow: get, head\r\n") != std::string::npos);
    CHECK(normal_tile_ok(s));
  }
}

TEST_CASE("Hostile.ErrorClosesAConnectionWithUnreadBytes" * doctest::timeout(60)) {
  LoopbackServer s(small());
  // A body the server did not read must not be taken for the next request.
  RawConn c(s.port);
  REQUIRE(c.ok());
  c.send_all("POST /tile/1/0/0.png HTTP/1.1\r\nHost: x\r\nContent-Length: 40\r\n\r\n" +
             get("/tile/1/0/0.png?size=16&iter=3").substr(0, 40));
  const auto r = c.read_response();
  CHECK(r.status == 405);
  CHECK(RawConn::lower(r.head).find("connection: close") != std::string::npos);
  CHECK(c.closed_by_peer(5s));
  // A bad tile parameter keeps the connection: the next request on it works.
  RawConn k(s.port);
  k.send_all(get("/tile/1/0/0.png?iter=0"));
  CHECK(k.read_response().status == 400);
  k.send_all(get("/tile/1/0/0.png?size=16&iter=10"));
  CHECK(k.read_response().status == 200);
}

TEST_CASE("Hostile.SlowRequestGets408" * doctest::timeout(60)) {
  ServerOptions o = small();
  o.request_timeout_s = 1;
  LoopbackServer s(o);
  // Each byte comes well within the read timeout, the whole request not within 1 s: a
  // slowloris client is answered 408 and dropped instead of holding its thread.
  for (const std::string prefix : {"", "GET /tile/1/0/0.png HTTP/1.1\r\nHost: x\r\n"}) {
    CAPTURE(prefix);
    RawConn c(s.port);
    REQUIRE(c.ok());
    const auto t0 = SteadyClock::now();
    c.send_all(prefix);
    const std::string trickle = "GET /tile/1/0/0.png?size=16 HTTP/1.1\r\nX-Slow: 1\r\n";
    for (std::size_t i = 0; i < trickle.size() && SteadyClock::now() - t0 < 2s; ++i) {
      if (!c.send_all(trickle.substr(i, 1))) break;
      std::this_thread::sleep_for(100ms);
    }
    const auto r = c.read_response(5s);
    CHECK(r.status == 408);
    CHECK(r.body.find("in time") + r.body.find("within") != 2 * std::string::npos);
    CHECK(std::count(r.body.begin(), r.body.end(), '\n') == 1);
    CHECK(SteadyClock::now() - t0 < 6s);
  }
  CHECK(normal_tile_ok(s));
}

TEST_CASE("Hostile.ClientGoneWhileQueuedIsCancelledNotRendered" * doctest::timeout(60)) {
  ServerOptions o = small(1);
  o.work = {WorkSpec::Kind::Sleep, 600};
  LoopbackServer s(o);
  Executor &pool = s.server.executor(ExecutorKind::Pool);
  // Occupy the only worker.
  auto first = std::async(std::launch::async,
                          [&] { return s.client().Get("/tile/0/0/0.png?size=16&iter=10"); });
  REQUIRE(eventually([&] { return pool.stats().busy == 1; }));
  {
    // Queue a second tile from a raw socket, then leave before a worker takes it.
    RawConn c(s.port);
    REQUIRE(c.ok());
    REQUIRE(c.send_all(get("/tile/0/0/0.png?size=16&iter=11")));
    REQUIRE(eventually([&] { return pool.stats().queued == 1; }));
  }
  auto r = first.get();
  REQUIRE(r);
  CHECK(r->status == 200);
  REQUIRE(eventually([&] {
    const auto st = pool.stats();
    return st.cancelled == 1 && st.busy == 0 && st.queued == 0;
  }));
  const auto st = pool.stats();
  CHECK(st.completed == 1); // only the first tile was rendered
  CHECK(st.failed == 0);
  // The trace shows it cancelled at once: no 600 ms of work, no render.
  auto trace = s.client().Get("/api/trace?executor=pool&since=0");
  REQUIRE(trace);
  CHECK_MESSAGE(trace->body.find("\"outcome\":\"cancelled\"") != std::string::npos, trace->body);
  auto metrics = s.client().Get("/metrics");
  REQUIRE(metrics);
  CHECK(metrics->body.find("overdrive_jobs_cancelled_total{executor=\"pool\"} 1") !=
        std::string::npos);
  CHECK(normal_tile_ok(s));
}

namespace {

struct SlowlorisResult {
  double baseline_ms = 0, under_attack_ms = 0; // wall time for the browser's 16 tiles
  double worst_tile_ms = 0;                    // slowest single tile under attack
  int failed = 0;
  int hostile_open = 0; // hostile connections still open at the end
};

// A browser: 6 keep-alive connections fetching 16 tiles between them. Returns the wall time;
// adds each tile's latency to worst and failures to failed.
double browser_burst(int port, int nonce, double &worst, int &failed) {
  std::atomic<int> next{0};
  std::mutex mu;
  const auto t0 = SteadyClock::now();
  std::vector<std::thread> conns;
  for (int c = 0; c < 6; ++c)
    conns.emplace_back([&, c] {
      httplib::Client cli("127.0.0.1", port);
      cli.set_keep_alive(true);
      cli.set_connection_timeout(5);
      cli.set_read_timeout(20);
      for (int i = next++; i < 16; i = next++) {
        const auto s = SteadyClock::now();
        auto r = cli.Get("/tile/2/" + std::to_string(i % 4) + "/" + std::to_string(i / 4) +
                         ".png?size=16&iter=20&nonce=" + std::to_string(nonce) + "c" +
                         std::to_string(c));
        const double ms = std::chrono::duration<double, std::milli>(SteadyClock::now() - s).count();
        std::lock_guard lock(mu);
        worst = std::max(worst, ms);
        if (!r || r->status != 200) ++failed;
      }
    });
  for (auto &t : conns)
    t.join();
  return std::chrono::duration<double, std::milli>(SteadyClock::now() - t0).count();
}

int io_busy(TileServer &srv) {
  const std::string j = srv.stats_json();
  const auto at = j.find("\"busy\":"); // the first one is the I/O pool's
  return at == std::string::npos ? -1 : std::atoi(j.c_str() + at + 7);
}

SlowlorisResult slowloris(int idle, int slow, int io_threads, int tile_ms) {
  ServerOptions o;
  o.workers = 6; // the browser's 6 tiles at a time never queue for a worker
  o.io_threads = io_threads;
  o.work = {WorkSpec::Kind::Sleep, tile_ms};
  LoopbackServer s(o);
  SlowlorisResult res;
  double ignore = 0;
  res.baseline_ms = browser_burst(s.port, 0, ignore, res.failed);

  std::vector<RawConn> hostile;
  for (int i = 0; i < idle + slow; ++i)
    hostile.emplace_back(s.port, 2s);
  // Let the server take them all before the browser comes.
  eventually([&] { return io_busy(s.server) >= std::min(io_threads, idle + slow); }, 10s);
  std::atomic<bool> done{false};
  std::thread trickler([&] {
    const std::string req = get("/tile/1/0/0.png?size=16&iter=10");
    for (std::size_t b = 0; !done && b < req.size(); ++b) {
      for (int i = idle; i < idle + slow; ++i)
        hostile[static_cast<std::size_t>(i)].send_all(req.substr(b, 1));
      for (int w = 0; w < 100 && !done; ++w)
        std::this_thread::sleep_for(10ms); // 1 byte/s
    }
  });
  res.under_attack_ms = browser_burst(s.port, 1, res.worst_tile_ms, res.failed);
  done = true;
  trickler.join();
  for (auto &h : hostile)
    res.hostile_open += h.closed_by_peer(0ms) ? 0 : 1;
  return res;
}

} // namespace

TEST_CASE("Hostile.IdleAndSlowClientsDoNotStarveABrowser" * doctest::timeout(120)) {
  // Scaled down from 200 idle + 50 slow (run Hostile.Slowloris.Full by hand) to stay quick
  // under tsan.
  const int tile_ms = 200;
  const auto r = slowloris(100, 20, ServerOptions{}.io_threads, tile_ms);
  MESSAGE("baseline " << r.baseline_ms << " ms, under attack " << r.under_attack_ms
                      << " ms, worst tile " << r.worst_tile_ms << " ms, hostile still open "
                      << r.hostile_open);
  CHECK(r.failed == 0);
  CHECK(r.hostile_open > 0); // the attack was still on while the browser loaded
  // 16 tiles over 6 connections with 6 workers: 3 waves of one tile-time each.
  CHECK(r.worst_tile_ms < tile_ms + 400);
  CHECK(r.under_attack_ms < r.baseline_ms + 500);
}

TEST_CASE("Hostile.Slowloris.Full" * doctest::skip() * doctest::timeout(300)) {
  // By hand (about 25 s): test_hostile -tc=Hostile.Slowloris.Full --no-skip -s
  // 250 hostile connections against 64, 512 and 1024 I/O threads (a connection holds its thread).
  const int idle = 200, slow = 50, tile_ms = 500;
  for (int io : {64, 512, 1024}) {
    CAPTURE(io);
    const auto r = slowloris(idle, slow, io, tile_ms);
    MESSAGE("io_threads " << io << ": baseline " << r.baseline_ms << " ms, under attack "
                          << r.under_attack_ms << " ms, worst tile " << r.worst_tile_ms
                          << " ms, failed " << r.failed << ", hostile still open "
                          << r.hostile_open);
    CHECK(r.failed == 0);
    if (io >= idle + slow) {
      // Threads to spare: the browser loads as fast as without the attack, which was still on.
      CHECK(r.hostile_open == idle + slow);
      CHECK(r.worst_tile_ms < tile_ms + 400);
      CHECK(r.under_attack_ms < r.baseline_ms + 500);
    } else {
      // The control: with fewer threads than hostile connections the attack does bite (the
      // browser waits for hostile connections to time out), so it is a real attack above.
      CHECK(r.under_attack_ms > r.baseline_ms + 2000);
    }
  }
}

namespace {

// `overdrive serve` as a child process on an ephemeral port; killed (SIGKILL) if still running
// when destroyed.
struct ServeProcess {
  explicit ServeProcess(const std::vector<std::string> &args) {
    int out[2];
    REQUIRE(::pipe(out) == 0);
    std::vector<std::string> argv_s = {OVERDRIVE_BIN_PATH, "serve", "--port", "0", "--quiet"};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char *> argv;
    for (auto &a : argv_s)
      argv.push_back(a.data());
    argv.push_back(nullptr);
    pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::dup2(out[1], 1);
      ::close(out[0]);
      ::close(out[1]);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(out[1]);
    // "Fractal Overdrive serving on http://127.0.0.1:PORT/ ..."
    std::string line;
    const auto until = SteadyClock::now() + 20s;
    while (line.find('\n') == std::string::npos && SteadyClock::now() < until) {
      pollfd p{out[0], POLLIN, 0};
      if (::poll(&p, 1, 200) <= 0) continue;
      char buf[256];
      const ssize_t n = ::read(out[0], buf, sizeof buf);
      if (n <= 0) break;
      line.append(buf, static_cast<std::size_t>(n));
    }
    ::close(out[0]);
    const auto at = line.find("127.0.0.1:");
    if (at != std::string::npos) port = std::atoi(line.c_str() + at + 10);
  }
  ~ServeProcess() {
    if (pid > 0 && !reaped) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  }
  /// Waits up to bound for the process to exit; its exit code, or -1 (still running or killed).
  int wait_exit(std::chrono::milliseconds bound) {
    const auto until = SteadyClock::now() + bound;
    while (SteadyClock::now() < until) {
      int st = 0;
      if (::waitpid(pid, &st, WNOHANG) == pid) {
        reaped = true;
        return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
      }
      std::this_thread::sleep_for(10ms);
    }
    return -1;
  }
  httplib::Client client() const {
    httplib::Client c("127.0.0.1", port);
    c.set_connection_timeout(5);
    c.set_read_timeout(30);
    return c;
  }

  pid_t pid = -1;
  int port = 0;
  bool reaped = false;
};

} // namespace

TEST_CASE("Serve.SigtermDrainsInFlightTiles" * doctest::timeout(90)) {
  ServeProcess p({"--workers", "2", "--work", "sleep:1000"});
  REQUIRE(p.port > 0);
  // Idle and half-sent connections must not hold the exit up (they would for the 5 s read
  // timeout without the stop wake-up).
  std::vector<RawConn> idle;
  for (int i = 0; i < 5; ++i)
    idle.emplace_back(p.port);
  idle.back().send_all("GET /tile/1/0/0.png HTTP/1.1\r\nHo");
  // Four tiles: two render, two wait in the executor's queue.
  std::vector<std::future<httplib::Result>> tiles;
  for (int i = 0; i < 4; ++i)
    tiles.push_back(std::async(std::launch::async, [&p, i] {
      return p.client().Get("/tile/2/" + std::to_string(i) + "/1.png?size=16&iter=10");
    }));
  REQUIRE(eventually([&] {
    auto st = p.client().Get("/api/stats");
    return st && st->body.find(
                     "\"name\":\"pool\",\"workers\":2,\"queue_limit\":0,\"queued\":2,\"busy\":2") !=
                     std::string::npos;
  }));
  const auto t0 = SteadyClock::now();
  REQUIRE(::kill(p.pid, SIGTERM) == 0);
  // The listener closes at once: a new connection is refused.
  CHECK(eventually(
      [&] {
        auto probe = p.client().Get("/healthz");
        return !probe && probe.error() == httplib::Error::Connection;
      },
      5s));
  // The half-sent request, completed now, is answered 503, not rendered. (Idle connections that
  // sent nothing are closed without an answer.)
  {
    REQUIRE(idle.back().send_all("st: x\r\n\r\n"));
    const auto late = idle.back().read_response(5s);
    CHECK(late.status == 503);
    CHECK_MESSAGE(late.body.find("shutting down") != std::string::npos, late.body);
  }
  for (auto &t : tiles) {
    auto r = t.get();
    REQUIRE(r);
    CHECK(r->status == 200);
    CHECK(r->get_header_value("Content-Type") == "image/png");
  }
  const int code = p.wait_exit(15s);
  const double exit_s = std::chrono::duration<double>(SteadyClock::now() - t0).count();
  MESSAGE("exited " << exit_s << " s after SIGTERM");
  CHECK(code == 0);
  // Two waves of 1 s tiles, plus little: not the 5 s read timeout of the idle connections.
  CHECK(exit_s < 4.0);
}
