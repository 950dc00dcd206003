// The "tbb" backend: a oneTBB task_arena of N slots, jobs put in with arena.enqueue (callers
// never join the arena). With split, JobContext::for_rows runs a parallel_for inside the arena.
#include "executors/recorder.hpp"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <map>
#include <mutex>
#include <oneapi/tbb/blocked_range.h>
#include <oneapi/tbb/global_control.h>
#include <oneapi/tbb/parallel_for.h>
#include <oneapi/tbb/task_arena.h>
#include <thread>

#if defined(__SANITIZE_THREAD__)
extern "C" void __tsan_acquire(void *addr);
extern "C" void __tsan_release(void *addr);
#endif

namespace overdrive::detail {

namespace {

inline void tsan_release(const void *p) {
#if defined(__SANITIZE_THREAD__)
  __tsan_release(const_cast<void *>(p));
#else
  (void)p;
#endif
}
inline void tsan_acquire(const void *p) {
#if defined(__SANITIZE_THREAD__)
  __tsan_acquire(const_cast<void *>(p));
#else
  (void)p;
#endif
}

// TBB's process-wide worker pool defaults to hardware_concurrency - 1 threads, which would cap
// an arena of N slots (reserved_for_masters = 0, so only workers run our jobs) below N on a
// small machine. Every live tbb executor registers its N here; one global_control holds
// max_allowed_parallelism = max(max N + 1, hardware_concurrency), so the limit is never lowered
// below TBB's default for other TBB users in the process. Only one object is kept because TBB
// applies the *minimum* of all active max_allowed_parallelism controls. The control is replaced
// when the maximum changes and dropped with the last executor.
class ParallelismRegistry {
public:
  static ParallelismRegistry &instance() {
    static ParallelismRegistry registry; // outlives every executor made after first use
    return registry;
  }
  void add(int workers) {
    std::lock_guard lock(mutex_);
    ++counts_[workers];
    update_locked();
  }
  void remove(int workers) {
    std::lock_guard lock(mutex_);
    if (--counts_[workers] == 0) counts_.erase(workers);
    update_locked();
  }

private:
  void update_locked() {
    if (counts_.empty()) {
      control_.reset();
      value_ = 0;
      return;
    }
    const auto hw = static_cast<std::size_t>(std::max(1u, std::thread::hardware_concurrency()));
    const auto wanted = std::max(static_cast<std::size_t>(counts_.rbegin()->first) + 1, hw);
    if (wanted == value_) return;
    // Make the new control before dropping the old one: while both exist TBB applies the
    // smaller, which is never below the default, so the limit never dips to the default.
    auto next =
        std::make_unique<tbb::global_control>(tbb::global_control::max_allowed_parallelism, wanted);
    control_ = std::move(next);
    value_ = wanted;
  }

  std::mutex mutex_;
  std::map<int, int> counts_; // requested arena size -> live executors with that size
  std::unique_ptr<tbb::global_control> control_;
  std::size_t value_ = 0;
};

class ParallelismLease {
public:
  explicit ParallelismLease(int workers) : workers_(workers) {
    ParallelismRegistry::instance().add(workers_);
  }
  ~ParallelismLease() { ParallelismRegistry::instance().remove(workers_); }
  ParallelismLease(const ParallelismLease &) = delete;
  ParallelismLease &operator=(const ParallelismLease &) = delete;

private:
  int workers_;
};

class TbbArenaExecutor final : public RecordedExecutor {
public:
  explicit TbbArenaExecutor(const ExecutorOptions &options)
      : RecordedExecutor("tbb", options), lease_(options.workers),
        arena_(options.workers, /*reserved_for_masters=*/0) {
    if (options.split) {
      splitter_ = [](int begin, int end, const JobContext::RowBody &body) {
        // Isolation keeps a thread waiting in this parallel_for from picking up another of our
        // enqueued jobs, which would run more than N jobs at once (nested on one thread).
        tsan_release(&body);
        tbb::this_task_arena::isolate([&] {
          tbb::parallel_for(tbb::blocked_range<int>(begin, end),
                            [&](const tbb::blocked_range<int> &r) {
                              tsan_acquire(&body);
                              body(r.begin(), r.end());
                              tsan_release(&body);
                            });
        });
        tsan_acquire(&body);
      };
    }
    arena_.initialize();
  }
  ~TbbArenaExecutor() override { shutdown(); }

  bool submit(Job job, std::string label) override {
    Clock::time_point submitted;
    {
      std::unique_lock lock(mutex_);
      if (stopping_) {
        lock.unlock();
        recorder_.refuse(std::move(label));
        return false;
      }
      // The recorder's queued count (admitted, not started) is the admission counter.
      if (!recorder_.try_admit(label, submitted)) return false;
      ++outstanding_;
      fifo_.push_back(std::make_unique<Task>(Task{std::move(job), std::move(label), submitted}));
    }
    tsan_release(this);
    try {
      arena_.enqueue(Runner{this});
    } catch (...) {
      // Out of memory inside TBB: account one waiting job as started and failed so counts stay
      // whole (every runner takes one job, so one job must go without a runner).
      std::unique_ptr<Task> orphan;
      {
        std::lock_guard lock(mutex_);
        orphan = std::move(fifo_.back());
        fifo_.pop_back();
      }
      const auto started = recorder_.on_start(0);
      recorder_.on_finish(0, std::move(orphan->label), orphan->submitted, started,
                          JobOutcome::Failed);
      orphan.reset();
      finished();
      throw;
    }
    return true;
  }

  std::string_view name() const noexcept override { return "tbb"; }

  void shutdown() override {
    std::unique_lock lock(mutex_);
    stopping_ = true;
    all_done_.wait(lock, [this] { return outstanding_ == 0; });
  }

private:
  struct Task {
    Job job;
    std::string label;
    Clock::time_point submitted;
  };
  // The arena's own queue is not strictly FIFO (it has several lanes), which showed as a long
  // latency tail under shedding. So jobs wait in our FIFO and each enqueued runner takes the
  // oldest one when a thread picks it up: tiles start in arrival order.
  struct Runner {
    TbbArenaExecutor *self;
    void operator()() const {
      tsan_acquire(self);
      std::unique_ptr<Task> task;
      {
        std::lock_guard lock(self->mutex_);
        task = std::move(self->fifo_.front());
        self->fifo_.pop_front();
      }
      self->run(*task);
      task.reset(); // the job's captures go before the executor may be destroyed
      self->finished();
    }
  };

  void run(Task &task) {
    // Slot indices are unique among the threads in the arena. oneTBB 2021.x gives every arena
    // max(2, N) slots, so for N >= 2 they are exactly [0, N); with N = 1 the one worker may sit
    // in slot 1, but only one job ever runs, so it is worker 0.
    const int worker = recorder_.workers() == 1 ? 0 : tbb::this_task_arena::current_thread_index();
    const auto started = recorder_.on_start(worker);
    const JobContext ctx(worker, task.submitted, started, splitter_ ? &splitter_ : nullptr);
    const auto outcome = run_job(task.job, ctx);
    const CpuTimes used = ctx.cpu_times();
    task.job = nullptr;
    recorder_.on_finish(worker, std::move(task.label), task.submitted, started, outcome, used);
  }

  void finished() {
    std::lock_guard lock(mutex_);
    // Notify under the lock: once shutdown sees 0 the executor may be destroyed at once.
    if (--outstanding_ == 0) all_done_.notify_all();
  }

  ParallelismLease lease_; // before arena_: released after the arena is gone
  JobContext::Splitter splitter_;
  tbb::task_arena arena_;
  std::mutex mutex_;                       // guards stopping_, outstanding_ and fifo_
  std::deque<std::unique_ptr<Task>> fifo_; // admitted, waiting for a runner
  std::condition_variable all_done_;
  std::size_t outstanding_ = 0; // admitted and not yet finished
  bool stopping_ = false;
};

} // namespace

std::unique_ptr<Executor> make_tbb_arena_executor(const ExecutorOptions &options) {
  return std::make_unique<TbbArenaExecutor>(options);
}

} // namespace overdrive::detail

#if defined(__SANITIZE_THREAD__)
// ThreadSanitizer suppressions for every program that can run the tbb executor: Debian's libtbb
// and libstdc++ are not built with -fsanitize=thread, so the synchronisation inside them is
// invisible to tsan. The list is executors/tsan.supp (comments there), embedded at build time.
// Defined in this file because a static library only links objects something references.
extern "C" const char *__tsan_default_suppressions() {
  return
#include "tsan_supp.inc"
      ;
}
#endif
