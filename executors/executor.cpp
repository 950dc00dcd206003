// Kind names and the factory.
#include "executors/executor.hpp"

#include "executors/recorder.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <ctime>
#include <fcntl.h>
#include <thread>
#include <unistd.h>

namespace overdrive {

namespace detail {
// One factory per backend, each defined in its own file (NAME_executor.cpp).
std::unique_ptr<Executor> make_inline_executor(const ExecutorOptions &options);
std::unique_ptr<Executor> make_thread_pool_executor(const ExecutorOptions &options);
std::unique_ptr<Executor> make_tbb_arena_executor(const ExecutorOptions &options);
} // namespace detail

namespace {

// The one list of backends. Row i has kind i (checked below); everything that names executors
// (CLI choices, the server, the bench, /api/stats, the page) derives from it.
const std::array<ExecutorInfo, 3> kRegistry{{
    {ExecutorKind::Inline, "inline", "on the connection thread that read the request", true, false,
     &detail::make_inline_executor},
    {ExecutorKind::Tbb, "tbb", "in a oneTBB task_arena, fed in arrival order", false, true,
     &detail::make_tbb_arena_executor},
    {ExecutorKind::Pool, "pool", "on a dedicated FIFO thread pool; the caller only waits", false,
     false, &detail::make_thread_pool_executor},
}};

const bool kRegistryInKindOrder = [] {
  for (std::size_t i = 0; i < kRegistry.size(); ++i)
    if (static_cast<std::size_t>(kRegistry[i].kind) != i) return false;
  return true;
}();

} // namespace

std::span<const ExecutorInfo> executor_registry() noexcept {
  return kRegistry;
}

const ExecutorInfo &executor_info(ExecutorKind kind) {
  const auto i = static_cast<std::size_t>(kind);
  if (!kRegistryInKindOrder || i >= kRegistry.size())
    throw ExecutorError("executor registry out of order, or invalid ExecutorKind");
  return kRegistry[i];
}

std::string_view to_string(ExecutorKind kind) noexcept {
  const auto i = static_cast<std::size_t>(kind);
  return i < kRegistry.size() ? kRegistry[i].name : "unknown";
}

std::optional<ExecutorKind> parse_executor_kind(std::string_view name) noexcept {
  for (const ExecutorInfo &info : kRegistry)
    if (info.name == name) return info.kind;
  return std::nullopt;
}

std::string executor_kind_names() {
  std::string names;
  for (const ExecutorInfo &info : kRegistry) {
    if (!names.empty()) names += ", ";
    names += info.name;
  }
  return names;
}

std::vector<ExecutorKind> all_executor_kinds() {
  std::vector<ExecutorKind> kinds;
  for (const ExecutorInfo &info : kRegistry)
    kinds.push_back(info.kind);
  return kinds;
}

std::vector<std::string> all_executor_names() {
  std::vector<std::string> names;
  for (const ExecutorInfo &info : kRegistry)
    names.emplace_back(info.name);
  return names;
}

namespace {

// Each thread keeps its own /proc/thread-self/schedstat open: the path names the opening thread,
// so the descriptor goes on reading that thread's counters, with one pread per sample.
class SchedstatFile {
public:
  SchedstatFile() noexcept {
    do
      fd_ = ::open("/proc/thread-self/schedstat", O_RDONLY | O_CLOEXEC);
    while (fd_ < 0 && errno == EINTR);
  }
  ~SchedstatFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  SchedstatFile(const SchedstatFile &) = delete;
  SchedstatFile &operator=(const SchedstatFile &) = delete;

  /// The second field ("run_delay": ns spent runnable on a run queue), or nullopt.
  std::optional<std::int64_t> run_delay_ns() const noexcept {
    if (fd_ < 0) return std::nullopt;
    char buf[96];
    ssize_t n;
    do
      n = ::pread(fd_, buf, sizeof buf, 0);
    while (n < 0 && errno == EINTR);
    if (n <= 0) return std::nullopt;
    // "<cpu ns> <run_delay ns> <timeslices>\n"
    std::size_t i = 0;
    const auto end = static_cast<std::size_t>(n);
    auto field = [&]() -> std::optional<std::int64_t> {
      while (i < end && buf[i] == ' ')
        ++i;
      if (i >= end || buf[i] < '0' || buf[i] > '9') return std::nullopt;
      std::int64_t v = 0;
      for (; i < end && buf[i] >= '0' && buf[i] <= '9'; ++i)
        v = v * 10 + (buf[i] - '0');
      return v;
    };
    if (!field()) return std::nullopt;
    return field();
  }

private:
  int fd_ = -1;
};

} // namespace

CpuTimes this_thread_cpu_times() noexcept {
  thread_local const SchedstatFile schedstat;
  CpuTimes t;
  timespec ts{};
  if (::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) == 0)
    t.cpu_ns = static_cast<std::int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
  t.runq_ns = schedstat.run_delay_ns();
  return t;
}

CpuTimes JobContext::cpu_times() const noexcept {
  CpuTimes helpers;
  {
    std::lock_guard lock(helpers_mutex_);
    helpers = helpers_;
  }
  return (this_thread_cpu_times() - owner_start_) + helpers;
}

void JobContext::run_chunk(int a, int b, const RowBody &body) const {
  if (std::this_thread::get_id() == owner_) {
    body(a, b);
    return;
  }
  // Counted also when body throws: the time was spent.
  struct Account {
    const JobContext &ctx;
    CpuTimes start = this_thread_cpu_times();
    ~Account() {
      const CpuTimes used = this_thread_cpu_times() - start;
      std::lock_guard lock(ctx.helpers_mutex_);
      ctx.helpers_ = ctx.helpers_ + used;
    }
  } account{*this};
  body(a, b);
}

std::string_view to_string(JobOutcome outcome) noexcept {
  switch (outcome) {
  case JobOutcome::Done:
    return "done";
  case JobOutcome::Refused:
    return "refused";
  case JobOutcome::Failed:
    return "failed";
  case JobOutcome::Cancelled:
    return "cancelled";
  }
  return "unknown";
}

std::unique_ptr<Executor> make_executor(ExecutorKind kind, const ExecutorOptions &options) {
  if (options.workers < 0)
    throw ExecutorError("executor workers must be >= 0 (0 = number of cores), got " +
                        std::to_string(options.workers));
  ExecutorOptions resolved = options;
  if (resolved.workers == 0)
    resolved.workers = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return executor_info(kind).make(resolved);
}

std::unique_ptr<Executor> make_executor(std::string_view kind, const ExecutorOptions &options) {
  const auto parsed = parse_executor_kind(kind);
  if (!parsed)
    throw ExecutorError("unknown executor '" + std::string(kind) +
                        "' (valid: " + executor_kind_names() + ")");
  return make_executor(*parsed, options);
}

} // namespace overdrive
