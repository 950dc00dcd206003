// Canary for the tsan preset: two jobs on the tbb executor write one plain int at the same time.
// ThreadSanitizer must report the data race; ctest (Sanitizer.TsanCatchesRaceInTbbJob) passes
// only when the report is in the output. If it passes silently, a suppression in
// executors/tsan.supp hides races in jobs that run on oneTBB's workers.
#include "executors/executor.hpp"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>

namespace {

int shared_value = 0; // deliberately not atomic and not guarded

/// Both jobs call this once both are running; the writes are unordered.
__attribute__((noinline)) void racy_write(int v) {
  shared_value = v;
}

} // namespace

int main() {
  using namespace std::chrono_literals;
  auto executor = overdrive::make_executor(overdrive::ExecutorKind::Tbb, {.workers = 2});
  std::atomic<int> arrived{0};
  std::atomic<int> overlapped{0};
  for (int i = 1; i <= 2; ++i) {
    const bool accepted =
        executor->submit([&arrived, &overlapped, i](const overdrive::JobContext &) {
          // A bounded rendezvous: both jobs must be running before either writes.
          arrived.fetch_add(1);
          const auto until = std::chrono::steady_clock::now() + 10s;
          while (arrived.load() < 2 && std::chrono::steady_clock::now() < until)
            std::this_thread::yield();
          if (arrived.load() < 2) return;
          overlapped.fetch_add(1);
          racy_write(i);
        });
    if (!accepted) {
      std::fprintf(stderr, "canary: the tbb executor refused a job\n");
      return 2;
    }
  }
  executor->shutdown();
  if (overlapped.load() != 2) {
    std::fprintf(stderr, "canary: the two jobs never ran at the same time\n");
    return 3;
  }
  std::printf("canary: both jobs wrote shared_value (now %d)\n", shared_value);
  return 0;
}
