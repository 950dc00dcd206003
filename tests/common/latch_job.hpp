// Test helpers for building executor states deterministically: a gate jobs block on, an
// arrival counter, a bounded poll, and a way to submit from other threads (inline blocks).
// Every wait is bounded so that a broken executor fails a test instead of hanging it.
#pragma once

#include "common/eventually.hpp"
#include "executors/executor.hpp"

#include <chrono>
#include <condition_variable>
#include <functional>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

namespace overdrive::test {

using namespace std::chrono_literals;

/// A one-shot gate. Thread-safe.
class Gate {
public:
  void open() {
    {
      std::lock_guard lock(mutex_);
      open_ = true;
    }
    cv_.notify_all();
  }
  /// Blocks until open() or the limit; returns whether the gate opened.
  bool wait(std::chrono::milliseconds limit = kWaitLimit) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, limit, [this] { return open_; });
  }

private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool open_ = false;
};

/// Counts arrivals; waiters block until a count is reached. Thread-safe.
class Arrivals {
public:
  void arrive() {
    {
      std::lock_guard lock(mutex_);
      ++count_;
    }
    cv_.notify_all();
  }
  /// Blocks until at least n arrived or the limit; returns whether n was reached.
  bool wait_for(int n, std::chrono::milliseconds limit = kWaitLimit) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, limit, [&] { return count_ >= n; });
  }
  int count() {
    std::lock_guard lock(mutex_);
    return count_;
  }

private:
  std::mutex mutex_;
  std::condition_variable cv_;
  int count_ = 0;
};

/// Submits jobs either directly or each from its own thread. Inline runs the job inside submit
/// and a caller waiting for a slot blocks, so inline tests submit from threads. Joins on
/// destruction.
class Submitter {
public:
  Submitter(Executor &executor, bool threaded) : executor_(executor), threaded_(threaded) {}
  Submitter(const Submitter &) = delete;
  Submitter &operator=(const Submitter &) = delete;
  ~Submitter() { join(); }

  /// Submits job; the acceptance is known at once unless threaded.
  void submit(Job job, std::string label = {}) {
    if (threaded_) {
      results_.push_back(
          std::async(std::launch::async, [this, job = std::move(job), label = std::move(label)] {
            return executor_.submit(job, label);
          }));
    } else {
      std::promise<bool> accepted;
      accepted.set_value(executor_.submit(std::move(job), std::move(label)));
      results_.push_back(accepted.get_future());
    }
  }
  /// Waits for every pending submit to return; the total accepted so far.
  int join() {
    int accepted = 0;
    for (auto &r : results_)
      if (r.valid() && r.get()) ++accepted;
    results_.clear();
    accepted_ += accepted;
    return accepted_;
  }

private:
  Executor &executor_;
  bool threaded_;
  std::vector<std::future<bool>> results_;
  int accepted_ = 0;
};

/// Runs a callable on scope exit (opens gates before threads are joined on a failed REQUIRE).
template <typename F> class ScopeExit {
public:
  explicit ScopeExit(F f) : f_(std::move(f)) {}
  ~ScopeExit() { f_(); }
  ScopeExit(const ScopeExit &) = delete;
  ScopeExit &operator=(const ScopeExit &) = delete;

private:
  F f_;
};

} // namespace overdrive::test
