// Public interface of the executors: one small abstract class, three backends chosen at run
// time (inline, tbb, pool), admission control as a return value, and per-job instrumentation.
// Knows nothing of Mandelbrot or HTTP: jobs are opaque callables.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace overdrive {

/// The one clock of the lab. On Linux steady_clock is CLOCK_MONOTONIC, shared by every process
/// on the machine, so a client's timestamps line up with the server's.
using Clock = std::chrono::steady_clock;

/// Nanoseconds since the steady clock's epoch (the form used in traces and JSON).
inline std::int64_t to_ns(Clock::time_point t) noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

enum class ExecutorKind { Inline, Tbb, Pool };

/// Where a thread's (or a job's) wall time went besides waiting on locks or I/O: running on a
/// core, or runnable but waiting for one (the cores were busy elsewhere).
struct CpuTimes {
  std::int64_t cpu_ns = 0; ///< On a core (CLOCK_THREAD_CPUTIME_ID).
  /// Runnable, waiting on a run queue for a core: the second field of Linux's
  /// /proc/thread-self/schedstat. nullopt where the kernel does not offer it (never 0 for
  /// "unknown").
  std::optional<std::int64_t> runq_ns;

  /// Differences (a - b); runq is absent if either side lacks it.
  friend CpuTimes operator-(const CpuTimes &a, const CpuTimes &b) noexcept {
    CpuTimes d;
    d.cpu_ns = a.cpu_ns - b.cpu_ns;
    if (a.runq_ns && b.runq_ns) d.runq_ns = *a.runq_ns - *b.runq_ns;
    return d;
  }
  /// Sums; runq is absent if either side lacks it.
  friend CpuTimes operator+(const CpuTimes &a, const CpuTimes &b) noexcept {
    CpuTimes s;
    s.cpu_ns = a.cpu_ns + b.cpu_ns;
    if (a.runq_ns && b.runq_ns) s.runq_ns = *a.runq_ns + *b.runq_ns;
    return s;
  }
};

/// The calling thread's CPU time and run-queue wait since it started. Costs a clock_gettime and,
/// after the thread's first call, one pread of its own schedstat file.
CpuTimes this_thread_cpu_times() noexcept;

struct ExecutorOptions;
class Executor;

/// One backend in the registry.
struct ExecutorInfo {
  ExecutorKind kind;
  std::string_view name;        ///< "inline", "tbb", "pool": CLI choice, ?executor=, JSON name.
  std::string_view description; ///< One line, for --help and the page.
  /// True if a job runs on the thread that submits it (inline): a server must then give each
  /// connection its own thread, as it would give an I/O thread.
  bool runs_on_caller;
  /// True if ExecutorOptions::split spreads one job over all workers (tbb).
  bool can_split;
  std::unique_ptr<Executor> (*make)(const ExecutorOptions &options); ///< workers already resolved
};

/// Every backend, in ExecutorKind order. To add one, see README "Extending".
std::span<const ExecutorInfo> executor_registry() noexcept;
/// The registry row of kind. Throws ExecutorError for a value outside the enum.
const ExecutorInfo &executor_info(ExecutorKind kind);

/// "inline", "tbb" or "pool".
std::string_view to_string(ExecutorKind kind) noexcept;
/// Parses a kind name; nullopt for an unknown one.
std::optional<ExecutorKind> parse_executor_kind(std::string_view name) noexcept;
/// "inline, tbb, pool", for error messages.
std::string executor_kind_names();
/// All kinds, in registry order.
std::vector<ExecutorKind> all_executor_kinds();
/// All kind names, in registry order (CLI choices).
std::vector<std::string> all_executor_names();

struct ExecutorOptions {
  int workers = 0;                   ///< Concurrent jobs; 0 = number of cores.
  std::size_t queue_limit = 0;       ///< Jobs that may wait for a worker; 0 = unlimited.
  bool split = false;                ///< tbb: JobContext::for_rows spreads a job over all workers.
  std::size_t trace_capacity = 4096; ///< Job events kept in the ring buffer.
};

/// Thrown by make_executor for an invalid option (e.g. negative workers).
class ExecutorError : public std::invalid_argument {
public:
  using std::invalid_argument::invalid_argument;
};

/// What a running job knows about itself. Made by the backend on the thread that runs the job,
/// just before it runs (that is when the job's CPU accounting starts).
class JobContext {
public:
  using RowBody = std::function<void(int begin, int end)>;
  using Splitter = std::function<void(int begin, int end, const RowBody &body)>;

  JobContext(int worker, Clock::time_point submitted, Clock::time_point started,
             const Splitter *splitter = nullptr) noexcept
      : worker_(worker), submitted_(submitted), started_(started), splitter_(splitter),
        owner_(std::this_thread::get_id()), owner_start_(this_thread_cpu_times()) {}
  /// Runs the when_recorded callback, if any: backends destroy the context only after they
  /// recorded the job's end.
  ~JobContext() {
    if (when_recorded_) when_recorded_();
  }
  JobContext(const JobContext &) = delete;
  JobContext &operator=(const JobContext &) = delete;

  /// Index of the worker running the job, in [0, workers).
  int worker() const noexcept { return worker_; }
  Clock::time_point submitted() const noexcept { return submitted_; }
  Clock::time_point started() const noexcept { return started_; }
  /// Runs body over [begin, end), possibly split into chunks run in parallel on the executor's
  /// workers (tbb with split); otherwise body(begin, end) on this thread. Blocks until done.
  void for_rows(int begin, int end, const RowBody &body) const {
    if (splitter_ && *splitter_)
      (*splitter_)(begin, end, [this, &body](int a, int b) { run_chunk(a, b, body); });
    else if (begin < end)
      body(begin, end);
  }
  /// CPU time and run-queue wait of this job so far, summed over threads: the thread running the
  /// job (since this context was made) plus, with split, each other thread while it ran one of
  /// the job's row chunks. So with split cpu_ns may exceed the wall time. Call it on the job's
  /// own thread.
  CpuTimes cpu_times() const noexcept;
  /// Marks the job as failed (recorded in the trace), e.g. when it caught an exception.
  void mark_failed() const noexcept { failed_ = true; }
  /// Marks the job as cancelled (it gave up before doing its work, e.g. the client left).
  void mark_cancelled() const noexcept { cancelled_ = true; }
  bool failed() const noexcept { return failed_; }
  bool cancelled() const noexcept { return cancelled_; }
  /// Runs fn once the executor has recorded the job's end (counters, trace), on the job's
  /// thread: whoever fn wakes (submit_task's future) then sees the job counted. fn must not
  /// throw. A later call replaces an earlier one.
  void when_recorded(std::function<void()> fn) const { when_recorded_ = std::move(fn); }

private:
  /// body(a, b); on a thread other than the job's, its CPU times are added to helpers_.
  void run_chunk(int a, int b, const RowBody &body) const;

  int worker_;
  Clock::time_point submitted_, started_;
  const Splitter *splitter_;
  std::thread::id owner_;
  CpuTimes owner_start_;
  mutable std::mutex helpers_mutex_;
  mutable CpuTimes helpers_{0, 0}; ///< Chunks run on other threads (guarded by helpers_mutex_)
  mutable bool failed_ = false;
  mutable bool cancelled_ = false;
  mutable std::function<void()> when_recorded_;
};

/// A unit of work. Exceptions escaping it are caught by the executor and counted as failed.
using Job = std::function<void(const JobContext &)>;

enum class JobOutcome { Done, Refused, Failed, Cancelled };
std::string_view to_string(JobOutcome outcome) noexcept;

/// One finished (or refused) job in the trace. Times are to_ns() of Clock; start and end are 0
/// for a refused job. worker is -1 for a refused job.
struct JobEvent {
  std::uint64_t seq = 0; ///< Increases by one per event, from 1.
  std::string label;
  int worker = -1;
  std::int64_t submit_ns = 0, start_ns = 0, end_ns = 0;
  JobOutcome outcome = JobOutcome::Done;
  /// Where the job's wall time (end - start) went, as JobContext::cpu_times() at its end: CPU
  /// time and run-queue wait, summed over the threads it ran on (with split, the worker's thread
  /// plus others while running its row chunks). 0 / nullopt for a refused job.
  std::int64_t cpu_ns = 0;
  std::optional<std::int64_t> runq_ns; ///< nullopt where the kernel does not report it
};

/// Cumulative counters and the current state of an executor.
struct ExecutorStats {
  std::string name;
  int workers = 0;
  std::size_t queue_limit = 0;
  std::size_t queued = 0;           ///< Waiting for a worker now.
  int busy = 0;                     ///< Running a job now.
  std::uint64_t accepted = 0;       ///< Calls to submit that queued (or ran) the job.
  std::uint64_t refused = 0;        ///< Calls to submit that returned false (full, or shut down).
  std::uint64_t completed = 0;      ///< Accepted jobs that ran to their end.
  std::uint64_t failed = 0;         ///< Accepted jobs that threw.
  std::uint64_t cancelled = 0;      ///< Accepted jobs that gave up before their work.
  std::vector<double> busy_seconds; ///< Per worker, since start.
  /// Per worker: CPU time of its finished jobs (JobEvent::cpu_ns summed; split jobs' helper
  /// threads are counted on the job's worker).
  std::vector<double> cpu_seconds;
  /// Per worker: run-queue wait of its finished jobs (JobEvent::runq_ns summed). nullopt where the
  /// kernel does not report it.
  std::optional<std::vector<double>> runq_seconds;
  /// Core-seconds during which a job was queued while a worker was idle: the integral over time
  /// of min(queued, idle workers). ~0 means the "every worker busy or nobody waiting" invariant
  /// held.
  double idle_while_waiting_seconds = 0.0;
  std::uint64_t last_seq = 0; ///< Sequence number of the newest trace event.
};

/// The executor interface. All member functions are thread-safe.
class Executor {
public:
  virtual ~Executor() = default;
  Executor() = default;
  Executor(const Executor &) = delete;
  Executor &operator=(const Executor &) = delete;

  /// Queues job (or, for inline, runs it now). Never blocks on a full queue: returns false at
  /// once when the queue limit is reached or after shutdown, and records the refusal.
  virtual bool submit(Job job, std::string label = {}) = 0;
  /// "inline", "tbb" or "pool".
  virtual std::string_view name() const noexcept = 0;
  /// Maximum number of jobs running at once.
  virtual int workers() const noexcept = 0;
  /// Counters and current queue depth / busy workers.
  virtual ExecutorStats stats() const = 0;
  /// Trace events with seq > since, oldest first (older ones may have left the ring buffer).
  virtual std::vector<JobEvent> trace_since(std::uint64_t since) const = 0;
  /// Stops accepting jobs, runs every queued job, waits for running ones. Idempotent.
  virtual void shutdown() = 0;
};

/// Builds an executor of the given kind. Throws ExecutorError on invalid options.
std::unique_ptr<Executor> make_executor(ExecutorKind kind, const ExecutorOptions &options = {});
/// Builds an executor from a kind name; throws ExecutorError listing the valid names if unknown.
std::unique_ptr<Executor> make_executor(std::string_view kind, const ExecutorOptions &options = {});

/// Submits f(const JobContext&) and returns a future of its result, or nullopt if the executor
/// refused it. An exception thrown by f reaches the future's get(); the job is then counted as
/// failed. The future becomes ready only after the executor has recorded the job, so stats()
/// and trace_since() read right after get() include it.
template <typename F>
auto submit_task(Executor &ex, F f, std::string label = {})
    -> std::optional<std::future<std::invoke_result_t<F &, const JobContext &>>> {
  using R = std::invoke_result_t<F &, const JobContext &>;
  auto promise = std::make_shared<std::promise<R>>();
  auto future = promise->get_future();
  const bool accepted = ex.submit(
      [promise, fn = std::move(f)](const JobContext &ctx) mutable {
        try {
          if constexpr (std::is_void_v<R>) {
            fn(ctx);
            ctx.when_recorded([promise] { promise->set_value(); });
          } else {
            ctx.when_recorded([promise, result = std::make_shared<R>(fn(ctx))] {
              promise->set_value(std::move(*result));
            });
          }
        } catch (...) {
          ctx.mark_failed();
          ctx.when_recorded(
              [promise, error = std::current_exception()] { promise->set_exception(error); });
        }
      },
      std::move(label));
  if (!accepted) return std::nullopt;
  return future;
}

} // namespace overdrive
