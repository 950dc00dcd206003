// The connection thread pool and its meter (see io_pool.hpp).
#include "web/io_pool.hpp"

#include <algorithm>
#include <chrono>

namespace overdrive::detail {

void IoMeter::queued(int delta) {
  std::lock_guard lock(mu_);
  advance(Clock::now());
  queued_ += delta;
}

void IoMeter::rendering(int delta) {
  std::lock_guard lock(mu_);
  advance(Clock::now());
  rendering_ += delta;
}

void IoMeter::busy(int delta) {
  std::lock_guard lock(mu_);
  busy_ += delta;
}

IoMeter::Snapshot IoMeter::snapshot() {
  std::lock_guard lock(mu_);
  advance(Clock::now());
  return {queued_, busy_, rendering_, connections_.load(), idle_while_waiting_};
}

void IoMeter::advance(Clock::time_point now) {
  const int idle = std::max(0, capacity_ - rendering_);
  idle_while_waiting_ +=
      std::min(queued_, idle) * std::chrono::duration<double>(now - last_).count();
  last_ = now;
}

ConnectionClock &this_connection() noexcept {
  thread_local ConnectionClock clock;
  return clock;
}

IoPool::IoPool(int max_threads, std::size_t queue_limit, IoMeter &meter, std::atomic<int> &live,
               std::atomic<std::uint64_t> &shed, std::chrono::milliseconds retire_after)
    : meter_(meter), max_(std::max(1, max_threads)), core_(std::min(max_, 16)),
      queue_limit_(queue_limit), retire_after_(retire_after), live_out_(live), shed_(shed) {}

IoPool::~IoPool() {
  shutdown();
}

void IoPool::enqueue(std::function<void()> fn) {
  meter_.connection();
  std::vector<std::thread> zombies;
  {
    std::unique_lock lock(mu_);
    if (!stopping_ && queue_limit_ > 0 && queue_.size() >= queue_limit_) {
      lock.unlock();
      // Runs on the accept thread: the connection loop answers 503 without waiting.
      shed_.fetch_add(1, std::memory_order_relaxed);
      this_connection().shed = true;
      fn();
      this_connection().shed = false;
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

void IoPool::shutdown() {
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

void IoPool::run() {
  for (;;) {
    Item item;
    {
      std::unique_lock lock(mu_);
      ++idle_;
      const bool woke =
          cv_.wait_for(lock, retire_after_, [this] { return stopping_ || !queue_.empty(); });
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
    ConnectionClock &conn = this_connection();
    conn = {item.enqueued, Clock::now(), 0, false, {}};
    item.fn();
    if (conn.on_close) conn.on_close();
    conn.on_close = nullptr;
    meter_.busy(-1);
  }
}

} // namespace overdrive::detail
