// Private to executors/: the instrumentation every backend shares (counters, per-worker busy
// time, idle-while-waiting integral, ring buffer of job events) and the backend factories.
#pragma once

#include "executors/executor.hpp"

#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace overdrive::detail {

/// Runs job with ctx and classifies the result. Never throws: an escaping exception is Failed.
JobOutcome run_job(const Job &job, const JobContext &ctx) noexcept;

/// Counters, busy time, idle-while-waiting and the trace of one executor.
///
/// Thread-safe: one mutex guards everything; each job costs three short critical sections
/// (admit, start, finish), each reading the clock once under the lock so that the recorded
/// state changes are totally ordered in time. Every call to submit counts once, as accepted or
/// as refused. Backends must pair every accepted job with
/// exactly one on_start and one on_finish. Lock order: a backend may call the recorder while
/// holding its own mutex, never the reverse.
class Recorder {
public:
  Recorder(std::string name, int workers, std::size_t queue_limit, std::size_t trace_capacity);

  /// Admits a job unless `queue_limit` jobs already wait (0 = unlimited). On success counts it
  /// as accepted and queued, stores its submit time in `submitted` and returns true; on refusal
  /// records a Refused event (moving `label` into it) and returns false.
  bool try_admit(std::string &label, Clock::time_point &submitted);
  /// Counts a job as accepted and queued without a limit check (for backends that
  /// decide admission themselves); returns its submit time.
  Clock::time_point admit();
  /// Records a refused submit (after shutdown, or a full queue decided by the backend).
  void refuse(std::string label);
  /// A queued job starts on `worker` (in [0, workers)); returns its start time.
  Clock::time_point on_start(int worker);
  /// A job that started on `worker` at `started` finished with `outcome`, having used `used`
  /// (its JobContext::cpu_times() at the end; nothing for a job that never ran).
  void on_finish(int worker, std::string label, Clock::time_point submitted,
                 Clock::time_point started, JobOutcome outcome, const CpuTimes &used = {0, 0});

  /// Snapshot of the counters; still-open intervals (running jobs, the current idle-while-
  /// waiting state) are included up to now.
  ExecutorStats stats() const;
  /// Events with seq > since still in the ring buffer, oldest first.
  std::vector<JobEvent> trace_since(std::uint64_t since) const;

  int workers() const noexcept { return workers_; }
  std::size_t queue_limit() const noexcept { return queue_limit_; }

private:
  std::size_t index(int worker) const noexcept;
  double waiting_on_idle_locked() const noexcept;
  void advance_locked(Clock::time_point now) noexcept;
  void admit_locked(Clock::time_point now) noexcept;
  void refuse_locked(std::string &label, Clock::time_point now);
  void push_locked(std::string &label, int worker, std::int64_t submit_ns, std::int64_t start_ns,
                   std::int64_t end_ns, JobOutcome outcome, const CpuTimes &used);

  const std::string name_;
  const int workers_;
  const std::size_t queue_limit_;
  mutable std::mutex mutex_;
  std::size_t queued_ = 0;
  int busy_ = 0;
  std::uint64_t accepted_ = 0, refused_ = 0, completed_ = 0, failed_ = 0, cancelled_ = 0;
  std::vector<std::int64_t> busy_ns_;       // finished jobs, per worker
  std::vector<std::int64_t> open_since_ns_; // start of the running job per worker, 0 = idle
  std::vector<std::int64_t> cpu_ns_;        // finished jobs, per worker
  std::vector<std::int64_t> runq_ns_;       // finished jobs, per worker
  bool runq_absent_ = false;                // some finished job had no run-queue figure
  std::vector<JobEvent> ring_;              // event seq s lives at (s - 1) % size
  std::uint64_t last_seq_ = 0;
  double idle_waiting_core_seconds_ = 0.0; // closed intervals only
  Clock::time_point last_change_;          // start of the open interval
};

/// Backend factories; options are already validated and workers resolved (> 0).
/// The part every backend shares: its Recorder and the members answered from it.
class RecordedExecutor : public Executor {
public:
  RecordedExecutor(std::string name, const ExecutorOptions &options)
      : recorder_(std::move(name), options.workers, options.queue_limit, options.trace_capacity) {}

  int workers() const noexcept override { return recorder_.workers(); }
  ExecutorStats stats() const override { return recorder_.stats(); }
  std::vector<JobEvent> trace_since(std::uint64_t since) const override {
    return recorder_.trace_since(since);
  }

protected:
  Recorder recorder_;
};

} // namespace overdrive::detail
