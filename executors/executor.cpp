// Kind names and the factory.
#include "executors/executor.hpp"

#include "executors/recorder.hpp"

#include <algorithm>
#include <array>
#include <thread>

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
