// The "pool" backend: N std::threads of our own over one FIFO queue, bounded by queue_limit
// (modelled on httplib's ThreadPool and its max_queued_requests).
#include "executors/recorder.hpp"

#include <condition_variable>
#include <deque>
#include <mutex>
#include <thread>

namespace overdrive::detail {

namespace {

class ThreadPoolExecutor final : public RecordedExecutor {
public:
  explicit ThreadPoolExecutor(const ExecutorOptions &options) : RecordedExecutor("pool", options) {
    threads_.reserve(static_cast<std::size_t>(options.workers));
    try {
      for (int w = 0; w < options.workers; ++w)
        threads_.emplace_back([this, w] { run(w); });
    } catch (...) {
      shutdown(); // joins the threads already started
      throw;
    }
  }
  ~ThreadPoolExecutor() override { shutdown(); }

  bool submit(Job job, std::string label) override {
    {
      std::unique_lock lock(mutex_);
      if (stopping_) {
        lock.unlock();
        recorder_.refuse(std::move(label));
        return false;
      }
      Clock::time_point submitted;
      // Admission under our mutex: the recorder's queued count equals queue_.size() because
      // workers call on_start under this mutex too.
      if (!recorder_.try_admit(label, submitted)) return false;
      queue_.push_back(Task{std::move(job), std::move(label), submitted});
    }
    ready_.notify_one();
    return true;
  }

  std::string_view name() const noexcept override { return "pool"; }

  void shutdown() override {
    // Serialises concurrent shutdowns: every caller returns only once the pool is drained.
    std::lock_guard join_lock(join_mutex_);
    {
      std::lock_guard lock(mutex_);
      stopping_ = true;
    }
    ready_.notify_all();
    for (auto &t : threads_)
      if (t.joinable()) t.join();
  }

private:
  struct Task {
    Job job;
    std::string label;
    Clock::time_point submitted;
  };

  void run(int worker) {
    for (;;) {
      Task task;
      Clock::time_point started;
      {
        std::unique_lock lock(mutex_);
        ready_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
        if (queue_.empty()) return; // stopping and drained
        task = std::move(queue_.front());
        queue_.pop_front();
        started = recorder_.on_start(worker);
      }
      const JobContext ctx(worker, task.submitted, started);
      const auto outcome = run_job(task.job, ctx);
      const CpuTimes used = ctx.cpu_times();
      task.job = nullptr; // release the job's captures before it is reported finished
      recorder_.on_finish(worker, std::move(task.label), task.submitted, started, outcome, used);
    }
  }

  std::mutex mutex_; // guards queue_ and stopping_
  std::condition_variable ready_;
  std::deque<Task> queue_;
  bool stopping_ = false;
  std::mutex join_mutex_;
  std::vector<std::thread> threads_;
};

} // namespace

std::unique_ptr<Executor> make_thread_pool_executor(const ExecutorOptions &options) {
  return std::make_unique<ThreadPoolExecutor>(options);
}

} // namespace overdrive::detail
