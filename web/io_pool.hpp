// The connection thread pool handed to cpp-httplib (one thread per open connection, started on
// demand up to a cap, FIFO beyond it, shed beyond a queue limit) and the meter that measures how
// long connections waited for it while workers idled. Private to web/.
#pragma once

#include "executors/executor.hpp" // Clock

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <httplib.h>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <vector>

namespace overdrive::detail {

/// Idle capacity while connections wait for an I/O thread: the integral over time of
/// min(connections queued, workers not running a tile). With inline, the I/O threads are the
/// workers, so this is where its lost core time shows; for pool/tbb it stays ~0 when the
/// connection pool is large enough. Thread-safe.
class IoMeter {
public:
  explicit IoMeter(int capacity) : capacity_(capacity), last_(Clock::now()) {}

  /// A connection (or an inline request) starts or stops waiting for a thread.
  void queued(int delta);
  /// A tile starts or stops rendering (any executor).
  void rendering(int delta);
  /// A connection thread starts or stops serving a connection.
  void busy(int delta);
  /// A connection was accepted.
  void connection() { connections_.fetch_add(1, std::memory_order_relaxed); }

  struct Snapshot {
    int queued, busy, rendering;
    std::uint64_t connections;
    double idle_while_waiting_seconds;
  };
  Snapshot snapshot();

private:
  void advance(Clock::time_point now);

  std::mutex mu_;
  const int capacity_;
  Clock::time_point last_;
  int queued_ = 0, busy_ = 0, rendering_ = 0;
  std::atomic<std::uint64_t> connections_{0};
  double idle_while_waiting_ = 0.0;
};

/// What the pool knows about the connection the calling thread serves. The tile handler reports
/// started - enqueued as Server-Timing "io" on the connection's first request.
struct ConnectionClock {
  Clock::time_point enqueued, started;
  int requests = 0;
  /// True while the accept thread runs a connection it sheds (queue limit reached): the
  /// connection loop answers 503 at once.
  bool shed = false;
  /// Called once when the connection closes (e.g. to give back an inline seat).
  std::function<void()> on_close;
};
/// The calling connection thread's clock.
ConnectionClock &this_connection() noexcept;

/// cpp-httplib runs each connection to its end on one thread of this pool. Threads start on
/// demand up to max_threads (one per open connection) and retire after retire_after idle beyond
/// a core of 16, so a large cap is free until used; past the cap connections wait FIFO, and past
/// queue_limit waiting connections (0 = unlimited) a new one is run at once on the enqueuing
/// thread with this_connection().shed set. It replaces the library's default pool, whose size
/// (max(8, cores-1)) is a hidden limit. Thread-safe; shutdown() runs what is queued, then joins.
class IoPool final : public httplib::TaskQueue {
public:
  /// live and shed are written with the number of threads and the connections shed so far.
  /// retire_after is how long a thread beyond the core of 16 may sit idle.
  IoPool(int max_threads, std::size_t queue_limit, IoMeter &meter, std::atomic<int> &live,
         std::atomic<std::uint64_t> &shed,
         std::chrono::milliseconds retire_after = std::chrono::seconds(10));
  ~IoPool() override;

  void enqueue(std::function<void()> fn) override;
  void shutdown() override;

private:
  struct Item {
    std::function<void()> fn;
    Clock::time_point enqueued;
  };
  void run();

  IoMeter &meter_;
  const int max_, core_;
  const std::size_t queue_limit_;
  const std::chrono::milliseconds retire_after_;
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

} // namespace overdrive::detail
