// The "inline" backend: submit runs the job on the calling thread. N slots cap how many calling
// threads run jobs at once; callers beyond that wait for a slot (they are its queue, bounded by
// queue_limit) or are refused when the queue is full.
#include "executors/recorder.hpp"

#include <condition_variable>
#include <mutex>

namespace overdrive::detail {

namespace {

class InlineExecutor final : public RecordedExecutor {
public:
  explicit InlineExecutor(const ExecutorOptions &options) : RecordedExecutor("inline", options) {
    free_slots_.reserve(static_cast<std::size_t>(options.workers));
    // Highest first so that pop_back hands out slot 0 first.
    for (int w = options.workers - 1; w >= 0; --w)
      free_slots_.push_back(w);
  }
  ~InlineExecutor() override { shutdown(); }

  // Blocks while waiting for a slot (the caller is then "queued"), never on a full queue.
  // Note: a job that submits to its own executor while every slot is taken deadlocks, as a
  // nested call into any bounded executor would.
  bool submit(Job job, std::string label) override {
    Clock::time_point submitted, started;
    int slot = -1;
    {
      std::unique_lock lock(mutex_);
      const bool can_queue = recorder_.queue_limit() == 0 || waiting_ < recorder_.queue_limit();
      if (stopping_ || ((waiting_ != 0 || free_slots_.empty()) && !can_queue)) {
        lock.unlock();
        recorder_.refuse(std::move(label));
        return false;
      }
      submitted = recorder_.admit();
      if (waiting_ != 0 || free_slots_.empty()) {
        ++waiting_;
        slot_freed_.wait(lock, [this] { return !free_slots_.empty(); });
        --waiting_;
      }
      slot = free_slots_.back();
      free_slots_.pop_back();
      started = recorder_.on_start(slot);
    }
    const JobContext ctx(slot, submitted, started);
    const auto outcome = run_job(job, ctx);
    const CpuTimes used = ctx.cpu_times();
    job = nullptr;
    recorder_.on_finish(slot, std::move(label), submitted, started, outcome, used);
    {
      std::lock_guard lock(mutex_);
      free_slots_.push_back(slot);
      if (stopping_ && waiting_ == 0 && free_slots_.size() == slots()) idle_.notify_all();
    }
    slot_freed_.notify_one();
    return true;
  }

  std::string_view name() const noexcept override { return "inline"; }

  // Waiting callers still run their jobs (they were accepted); shutdown waits for them too.
  void shutdown() override {
    std::unique_lock lock(mutex_);
    stopping_ = true;
    idle_.wait(lock, [this] { return waiting_ == 0 && free_slots_.size() == slots(); });
  }

private:
  std::size_t slots() const noexcept { return static_cast<std::size_t>(recorder_.workers()); }

  std::mutex mutex_; // guards free_slots_, waiting_, stopping_
  std::condition_variable slot_freed_, idle_;
  std::vector<int> free_slots_;
  std::size_t waiting_ = 0;
  bool stopping_ = false;
};

} // namespace

std::unique_ptr<Executor> make_inline_executor(const ExecutorOptions &options) {
  return std::make_unique<InlineExecutor>(options);
}

} // namespace overdrive::detail
