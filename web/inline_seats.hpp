// Inline's N seats: the N I/O threads that inline would have in a server of its own. Private to
// web/.
#pragma once

#include "executors/executor.hpp" // Clock

#include <condition_variable>
#include <mutex>

namespace overdrive::detail {

/// With inline the I/O threads *are* the workers: N inline workers means N connection threads, and
/// a connection holds its thread from its first request until it closes, idle keep-alive included.
/// One server hosts all three executors on one large connection pool, so inline gets N seats: the
/// first inline request on a connection takes a seat (waiting, as it would for one of N I/O
/// threads) and the connection keeps it until it closes. The wait is reported as Server-Timing io.
/// Thread-safe.
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

} // namespace overdrive::detail
