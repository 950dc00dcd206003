// The server's internals, tested directly rather than over loopback (as cpp-httplib tests its
// ThreadPool): the connection pool, a connection's header limits and deadlines, inline's seats,
// the JSON writer, and the tile cache, flights and histograms.
#include "common/latch_job.hpp"
#include "web/connection.hpp"
#include "web/inline_seats.hpp"
#include "web/io_pool.hpp"
#include "web/json.hpp"
#include "web/tile_cache.hpp"

#include <atomic>
#include <doctest/doctest.h>
#include <future>
#include <limits>
#include <optional>
#include <string>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace overdrive;
using namespace overdrive::detail;
using overdrive::test::eventually;
using overdrive::test::Gate;

namespace {

// Everything an IoPool needs, owned by the test.
struct PoolRig {
  IoMeter meter{2};
  std::atomic<int> live{0};
  std::atomic<std::uint64_t> shed{0};
};

// A connected pair of stream sockets and a stop eventfd; closes them at the end.
struct SocketRig {
  int fds[2] = {-1, -1};
  int stop_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  std::atomic<std::int64_t> stop_at_ns{0};
  SocketRig() { REQUIRE(::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) == 0); }
  ~SocketRig() {
    ::close(fds[0]);
    ::close(fds[1]);
    ::close(stop_fd);
  }
  void send(const std::string &s) const {
    REQUIRE(::send(fds[1], s.data(), s.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(s.size()));
  }
  ConnStream stream(std::chrono::milliseconds request_timeout = std::chrono::seconds(5)) {
    using std::chrono::milliseconds;
    return ConnStream(fds[0], stop_fd, stop_at_ns,
                      {milliseconds(2000), milliseconds(2000), request_timeout});
  }
};

// Reads the request head a byte at a time, as cpp-httplib does, until a read fails or the blank
// line; returns the limit that stopped it (None if the head was accepted).
ConnectionState::Limit read_head(ConnStream &s) {
  s.begin_request();
  std::string line;
  char c;
  for (int i = 0; i < 1 << 20; ++i) {
    if (s.read(&c, 1) != 1) return this_conn().limit;
    line += c;
    if (c == '\n') {
      if (line == "\r\n") return this_conn().limit;
      line.clear();
    }
  }
  FAIL("head never ended");
  return this_conn().limit;
}

} // namespace

TEST_CASE("IoPool.StartsThreadsOnDemandUpToTheCapThenQueues" * doctest::timeout(30)) {
  PoolRig rig;
  IoPool pool(2, 0, rig.meter, rig.live, rig.shed);
  Gate gate;
  std::atomic<int> started{0}, finished{0};
  for (int i = 0; i < 3; ++i)
    pool.enqueue([&] {
      ++started;
      gate.wait();
      ++finished;
    });
  REQUIRE(eventually([&] { return started.load() == 2; }));
  CHECK(rig.live.load() == 2);
  CHECK(rig.meter.snapshot().queued == 1); // the third waits: the cap is 2 threads
  CHECK(rig.meter.snapshot().busy == 2);
  gate.open();
  REQUIRE(eventually([&] { return finished.load() == 3; }));
  pool.shutdown();
  CHECK(rig.live.load() == 0);
  CHECK(rig.meter.snapshot().connections == 3);
}

TEST_CASE("IoPool.ShedsBeyondTheQueueLimitOnTheCallingThread" * doctest::timeout(30)) {
  PoolRig rig;
  IoPool pool(1, 1, rig.meter, rig.live, rig.shed);
  Gate gate;
  std::atomic<int> started{0};
  pool.enqueue([&] {
    ++started;
    gate.wait();
  });
  REQUIRE(eventually([&] { return started.load() == 1; }));
  bool second_shed = true;
  pool.enqueue([&] { second_shed = this_connection().shed; }); // queued: the limit is 1
  const auto caller = std::this_thread::get_id();
  std::thread::id ran_on;
  bool third_shed = false;
  pool.enqueue([&] {
    ran_on = std::this_thread::get_id();
    third_shed = this_connection().shed;
  });
  CHECK(ran_on == caller);
  CHECK(third_shed);
  CHECK_FALSE(this_connection().shed); // reset once the shed connection is answered
  CHECK(rig.shed.load() == 1);
  gate.open();
  pool.shutdown();
  CHECK_FALSE(second_shed);
}

TEST_CASE("IoPool.ShutdownRunsWhatIsQueuedThenJoins" * doctest::timeout(30)) {
  PoolRig rig;
  Gate gate;
  std::atomic<int> ran{0};
  {
    IoPool pool(1, 0, rig.meter, rig.live, rig.shed);
    pool.enqueue([&] {
      gate.wait();
      ++ran;
    });
    pool.enqueue([&] { ++ran; });
    std::thread opener([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      gate.open();
    });
    pool.shutdown(); // blocks until both ran
    CHECK(ran.load() == 2);
    opener.join();
  }
  CHECK(rig.live.load() == 0);
}

TEST_CASE("IoPool.RetiresIdleThreadsBeyondTheCoreOf16" * doctest::timeout(30)) {
  PoolRig rig;
  IoPool pool(20, 0, rig.meter, rig.live, rig.shed, std::chrono::milliseconds(50));
  Gate gate;
  std::atomic<int> started{0};
  for (int i = 0; i < 20; ++i)
    pool.enqueue([&] {
      ++started;
      gate.wait();
    });
  REQUIRE(eventually([&] { return started.load() == 20; }));
  CHECK(rig.live.load() == 20);
  gate.open();
  CHECK(eventually([&] { return rig.live.load() == 16; }));
  pool.shutdown();
}

TEST_CASE("IoMeter.CountsIdleCapacityOnlyWhileConnectionsWait" * doctest::timeout(30)) {
  IoMeter meter(2);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK(meter.snapshot().idle_while_waiting_seconds == 0.0); // nobody waited
  meter.rendering(+2);                                       // both workers busy
  meter.queued(+1);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  CHECK(meter.snapshot().idle_while_waiting_seconds == 0.0); // waited, but nobody idled
  meter.rendering(-1);
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  meter.queued(-1);
  const double idle = meter.snapshot().idle_while_waiting_seconds;
  CHECK(idle >= 0.019); // one idle worker x >= 20 ms of waiting
}

TEST_CASE("ConnStream.AcceptsAHeadWithinTheLimits" * doctest::timeout(30)) {
  SocketRig rig;
  ConnStream s = rig.stream();
  rig.send("GET / HTTP/1.1\r\nHost: x\r\nX-A: b\r\n\r\n");
  CHECK(read_head(s) == ConnectionState::Limit::None);
  CHECK(s.header_bytes() == 35);
}

TEST_CASE("ConnStream.CapsHeaderLines" * doctest::timeout(30)) {
  SocketRig rig;
  ConnStream s = rig.stream();
  std::string head = "GET / HTTP/1.1\r\n";
  for (int i = 0; i < HeaderLimits::max_header_lines; ++i)
    head += "X-" + std::to_string(i) + ": v\r\n";
  rig.send(head + "\r\n");
  CHECK(read_head(s) == ConnectionState::Limit::HeaderLines);
}

TEST_CASE("ConnStream.CapsOneLineAndTheWholeHead" * doctest::timeout(30)) {
  SUBCASE("one line") {
    SocketRig rig;
    ConnStream s = rig.stream();
    rig.send("GET / HTTP/1.1\r\nX-Long: " + std::string(HeaderLimits::max_line_bytes, 'a') +
             "\r\n\r\n");
    CHECK(read_head(s) == ConnectionState::Limit::LineLength);
  }
  SUBCASE("whole head") {
    SocketRig rig;
    ConnStream s = rig.stream();
    std::string head = "GET / HTTP/1.1\r\n";
    while (head.size() <= HeaderLimits::max_header_bytes)
      head += "X-" + std::to_string(head.size()) + ": " + std::string(4000, 'b') + "\r\n";
    rig.send(head + "\r\n");
    CHECK(read_head(s) == ConnectionState::Limit::HeaderBytes);
  }
}

TEST_CASE("ConnStream.RefusesFoldedAndColonlessHeaderLines" * doctest::timeout(30)) {
  for (const char *bad : {"X-A: b\r\n folded\r\n", "NoColonHere\r\n"}) {
    SocketRig rig;
    ConnStream s = rig.stream();
    rig.send(std::string("GET / HTTP/1.1\r\n") + bad + "\r\n");
    CHECK_MESSAGE(read_head(s) == ConnectionState::Limit::BadHeader, bad);
  }
}

TEST_CASE("ConnStream.EnforcesTheRequestDeadline" * doctest::timeout(30)) {
  SocketRig rig;
  ConnStream s = rig.stream(std::chrono::milliseconds(200));
  rig.send("GET / HTTP/1.1\r\nHost: x\r\n"); // never finished
  const auto t0 = Clock::now();
  CHECK(read_head(s) == ConnectionState::Limit::Timeout);
  CHECK(Clock::now() - t0 < std::chrono::seconds(2)); // the deadline, not the 2 s read timeout
}

TEST_CASE("ConnStream.WaitForRequestSeesDataIdleAndStop" * doctest::timeout(30)) {
  SocketRig rig;
  ConnStream s = rig.stream();
  CHECK(s.wait_for_request(std::chrono::milliseconds(20)) == ConnStream::Wait::Idle);
  rig.stop_at_ns = 1;
  const std::uint64_t one = 1;
  REQUIRE(::write(rig.stop_fd, &one, sizeof one) == sizeof one);
  CHECK(s.wait_for_request(std::chrono::seconds(5)) == ConnStream::Wait::Stopped);
  rig.send("G");
  CHECK(s.wait_for_request(std::chrono::seconds(5)) == ConnStream::Wait::Data);
}

TEST_CASE("Connection.PeerGoneSeesCloseNotPendingBytes" * doctest::timeout(30)) {
  SocketRig rig;
  CHECK_FALSE(peer_gone(rig.fds[0]));
  rig.send("GET"); // a pipelined request: still there
  CHECK_FALSE(peer_gone(rig.fds[0]));
  char buf[3];
  REQUIRE(::recv(rig.fds[0], buf, 3, 0) == 3);
  ::shutdown(rig.fds[1], SHUT_WR);
  CHECK(peer_gone(rig.fds[0]));
  CHECK_FALSE(peer_gone(-1));
}

TEST_CASE("InlineSeats.HandsOutNSeatsAndWakesAWaiterOnRelease" * doctest::timeout(30)) {
  InlineSeats seats(2);
  const auto soon = [] { return Clock::now() + std::chrono::milliseconds(30); };
  CHECK(seats.acquire(soon()));
  CHECK(seats.acquire(soon()));
  CHECK_FALSE(seats.acquire(soon())); // all taken: times out
  CHECK(seats.snapshot().held == 2);
  std::atomic<bool> got{false};
  std::thread waiter([&] { got = seats.acquire(Clock::now() + std::chrono::seconds(10)); });
  REQUIRE(eventually([&] { return seats.snapshot().waiting == 1; }));
  seats.release();
  waiter.join();
  CHECK(got.load());
  CHECK(seats.snapshot().held == 2);
}

TEST_CASE("InlineSeats.StopWakesWaitersEmptyHanded" * doctest::timeout(30)) {
  InlineSeats seats(1);
  REQUIRE(seats.acquire(Clock::now() + std::chrono::seconds(1)));
  std::atomic<int> result{-1};
  std::thread waiter([&] { result = seats.acquire(Clock::now() + std::chrono::seconds(10)); });
  REQUIRE(eventually([&] { return seats.snapshot().waiting == 1; }));
  const auto t0 = Clock::now();
  seats.stop();
  waiter.join();
  CHECK(result.load() == 0);
  CHECK(Clock::now() - t0 < std::chrono::seconds(5));
}

TEST_CASE("Json.WriterSeparatesEscapesAndFormats") {
  JsonWriter j;
  j.open('{')
      .field("s", "q\" b\\ n\n c\x01")
      .field("i", -3)
      .field("u", std::uint64_t{18446744073709551615u})
      .field("d", 0.5)
      .field("inf", std::numeric_limits<double>::infinity())
      .field("b", true)
      .field("none", std::optional<int>{})
      .key("a")
      .open('[');
  j.value(1).value("x").open('{').close('}');
  j.close(']').key("f").fixed(1.23456, 3).close('}');
  CHECK(j.str() == R"({"s":"q\" b\\ n\n c\u0001","i":-3,"u":18446744073709551615,"d":0.5,)"
                   R"("inf":null,"b":true,"none":null,"a":[1,"x",{}],"f":1.235})");
}

namespace {

TileCache::Body body_of(std::size_t n, char c = 'x') {
  return std::make_shared<const std::string>(n, c);
}

} // namespace

TEST_CASE("TileCache.EvictsTheLeastRecentlyUsedBySize") {
  constexpr std::size_t per = 1000 + 1 + TileCache::kEntryOverhead; // body + 1-byte key
  TileCache cache(3 * per);
  cache.insert("a", body_of(1000, 'a'));
  cache.insert("b", body_of(1000, 'b'));
  cache.insert("c", body_of(1000, 'c'));
  CHECK(cache.snapshot().bytes == 3 * per);
  CHECK(cache.snapshot().entries == 3);
  REQUIRE(cache.find("a")); // a is now the most recently used: b goes first
  cache.insert("d", body_of(1000, 'd'));
  CHECK_FALSE(cache.find("b"));
  REQUIRE(cache.find("a"));
  CHECK(*cache.find("a") == std::string(1000, 'a'));
  CHECK(cache.find("c"));
  CHECK(cache.find("d"));
  // A large entry evicts as many as it needs, oldest first (a was used before c and d).
  cache.insert("e", body_of(2000, 'e'));
  const auto s = cache.snapshot();
  CHECK(s.entries == 2);
  CHECK(s.bytes == per + 2000 + 1 + TileCache::kEntryOverhead);
  CHECK(s.bytes <= s.capacity_bytes);
  CHECK(s.evictions == 3);
  CHECK(cache.find("d"));
  CHECK(cache.find("e"));
  CHECK_FALSE(cache.find("a"));
  CHECK_FALSE(cache.find("c"));
}

TEST_CASE("TileCache.CountsHitsAndMissesAndReplacesAKey") {
  TileCache cache(1 << 20);
  CHECK_FALSE(cache.find("k"));
  cache.insert("k", body_of(10, '1'));
  cache.insert("k", body_of(20, '2'));
  REQUIRE(cache.find("k"));
  CHECK(*cache.find("k") == std::string(20, '2'));
  const auto s = cache.snapshot();
  CHECK(s.hits == 2);
  CHECK(s.misses == 1);
  CHECK(s.entries == 1);
  CHECK(s.bytes == 20 + 1 + TileCache::kEntryOverhead);
  CHECK(s.evictions == 0);
}

TEST_CASE("TileCache.ZeroCapacityIsOffAndOversizedEntriesAreNotKept") {
  TileCache off(0);
  off.insert("k", body_of(1));
  CHECK_FALSE(off.find("k"));
  CHECK(off.snapshot().misses == 0); // off: nothing counted
  TileCache small(100);
  small.insert("k", body_of(10)); // 10 + 1 + overhead > 100
  CHECK_FALSE(small.find("k"));
  CHECK(small.snapshot().entries == 0);
  CHECK(small.snapshot().bytes == 0);
}

TEST_CASE("Flights.FollowersGetTheLeadersTileAndANewFlightStartsAfterLanding" *
          doctest::timeout(30)) {
  Flights flights;
  const auto leader = flights.join("k");
  REQUIRE(leader.leader);
  std::vector<std::future<std::optional<Flights::Result>>> followers;
  for (int i = 0; i < 4; ++i) {
    const auto t = flights.join("k");
    CHECK_FALSE(t.leader);
    CHECK(t.flight == leader.flight);
    followers.push_back(std::async(std::launch::async, [f = t.flight] {
      return Flights::wait(*f, Clock::now() + std::chrono::seconds(10));
    }));
  }
  CHECK(leader.flight->followers.load() == 4);
  CHECK(flights.join("other").leader); // another key flies on its own
  flights.land("k", leader, {std::make_shared<const std::string>("png"), "pool", 1});
  for (auto &f : followers) {
    const auto r = f.get();
    REQUIRE(r);
    REQUIRE(r->png);
    CHECK(*r->png == "png");
    CHECK(r->executor == "pool");
    CHECK(r->worker == 1);
  }
  CHECK(flights.join("k").leader);
}

TEST_CASE("Flights.LandingWithoutATileWakesFollowersAndWaitsAreBounded" * doctest::timeout(30)) {
  Flights flights;
  const auto leader = flights.join("k");
  const auto follower = flights.join("k");
  // Nothing landed yet: a bounded wait times out.
  CHECK_FALSE(Flights::wait(*follower.flight, Clock::now() + std::chrono::milliseconds(20)));
  flights.land("k", leader, {});
  const auto r = Flights::wait(*follower.flight, Clock::now() + std::chrono::seconds(10));
  REQUIRE(r);
  CHECK_FALSE(r->png);
  CHECK(flights.in_air() == 0);
}

TEST_CASE("TileKey.EtagMatchingFollowsIfNoneMatch") {
  TileQuery q;
  q.tile = {2, 1, 3};
  q.request.view = tile_viewport(q.tile, 256);
  q.request.max_iter = 512;
  const std::string key = tile_key(q);
  CHECK(key == std::string(kRendererVersion) + ":2/1/3:256:512:classic:f64");
  TileQuery other = q;
  other.executor = ExecutorKind::Tbb;
  other.nonce = true;
  CHECK(tile_key(other) == key); // neither executor nor nonce is part of the bytes
  const std::string etag = tile_etag(key);
  CHECK(etag == "\"" + key + "\"");
  CHECK(etag_matches(etag, etag));
  CHECK(etag_matches(" *", etag));
  CHECK(etag_matches("\"a\", W/" + etag + " ,\"b\"", etag));
  CHECK_FALSE(etag_matches("\"a\", \"b\"", etag));
  CHECK_FALSE(etag_matches(key, etag)); // unquoted is not the tag
  CHECK_FALSE(etag_matches("", etag));
}

TEST_CASE("LatencyHistogram.BucketsAreCumulativeAndLeInclusive") {
  LatencyHistogram h;
  for (const double v : {0.0001, 0.0005, 0.003, 0.2, 29.0, 31.0})
    h.observe(v);
  const auto s = h.snapshot();
  CHECK(s.count == 6);
  CHECK(s.sum == doctest::Approx(0.0001 + 0.0005 + 0.003 + 0.2 + 29.0 + 31.0));
  CHECK(s.cumulative[0] == 2);     // le 0.0005 includes 0.0005
  CHECK(s.cumulative[1] == 2);     // le 0.001
  CHECK(s.cumulative[3] == 3);     // le 0.005
  CHECK(s.cumulative[8] == 4);     // le 0.25
  CHECK(s.cumulative.back() == 5); // le 30; 31 s only in +Inf (count)
  for (std::size_t i = 1; i < s.cumulative.size(); ++i)
    CHECK(s.cumulative[i] >= s.cumulative[i - 1]);
}
