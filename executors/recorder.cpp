// The instrumentation shared by the three backends (see recorder.hpp).
#include "executors/recorder.hpp"

#include <algorithm>
#include <chrono>

namespace overdrive::detail {

namespace {
double seconds(Clock::duration d) noexcept {
  return std::chrono::duration<double>(d).count();
}
} // namespace

JobOutcome run_job(const Job &job, const JobContext &ctx) noexcept {
  try {
    if (job) job(ctx);
  } catch (...) {
    return JobOutcome::Failed;
  }
  if (ctx.failed()) return JobOutcome::Failed;
  if (ctx.cancelled()) return JobOutcome::Cancelled;
  return JobOutcome::Done;
}

Recorder::Recorder(std::string name, int workers, std::size_t queue_limit,
                   std::size_t trace_capacity)
    : name_(std::move(name)), workers_(workers), queue_limit_(queue_limit),
      busy_ns_(static_cast<std::size_t>(workers), 0),
      open_since_ns_(static_cast<std::size_t>(workers), 0),
      cpu_ns_(static_cast<std::size_t>(workers), 0), runq_ns_(static_cast<std::size_t>(workers), 0),
      runq_absent_(!this_thread_cpu_times().runq_ns), ring_(trace_capacity),
      last_change_(Clock::now()) {}

bool Recorder::try_admit(std::string &label, Clock::time_point &submitted) {
  std::lock_guard lock(mutex_);
  const auto now = Clock::now();
  if (queue_limit_ != 0 && queued_ >= queue_limit_) {
    refuse_locked(label, now);
    return false;
  }
  admit_locked(now);
  submitted = now;
  return true;
}

Clock::time_point Recorder::admit() {
  std::lock_guard lock(mutex_);
  const auto now = Clock::now();
  admit_locked(now);
  return now;
}

void Recorder::refuse(std::string label) {
  std::lock_guard lock(mutex_);
  refuse_locked(label, Clock::now());
}

Clock::time_point Recorder::on_start(int worker) {
  std::lock_guard lock(mutex_);
  const auto now = Clock::now();
  advance_locked(now);
  --queued_;
  ++busy_;
  open_since_ns_[index(worker)] = to_ns(now);
  return now;
}

void Recorder::on_finish(int worker, std::string label, Clock::time_point submitted,
                         Clock::time_point started, JobOutcome outcome, const CpuTimes &used) {
  std::lock_guard lock(mutex_);
  const auto now = Clock::now();
  advance_locked(now);
  --busy_;
  const auto w = index(worker);
  busy_ns_[w] += to_ns(now) - to_ns(started);
  open_since_ns_[w] = 0;
  cpu_ns_[w] += used.cpu_ns;
  if (used.runq_ns)
    runq_ns_[w] += *used.runq_ns;
  else
    runq_absent_ = true;
  switch (outcome) {
  case JobOutcome::Done:
    ++completed_;
    break;
  case JobOutcome::Failed:
    ++failed_;
    break;
  case JobOutcome::Cancelled:
    ++cancelled_;
    break;
  case JobOutcome::Refused:
    break; // not an outcome of a job that ran
  }
  push_locked(label, worker, to_ns(submitted), to_ns(started), to_ns(now), outcome, used);
}

ExecutorStats Recorder::stats() const {
  std::lock_guard lock(mutex_);
  const auto now = Clock::now();
  ExecutorStats s;
  s.name = name_;
  s.workers = workers_;
  s.queue_limit = queue_limit_;
  s.queued = queued_;
  s.busy = busy_;
  s.accepted = accepted_;
  s.refused = refused_;
  s.completed = completed_;
  s.failed = failed_;
  s.cancelled = cancelled_;
  s.busy_seconds.reserve(busy_ns_.size());
  for (std::size_t w = 0; w < busy_ns_.size(); ++w) {
    auto ns = busy_ns_[w];
    if (open_since_ns_[w] != 0) ns += to_ns(now) - open_since_ns_[w];
    s.busy_seconds.push_back(static_cast<double>(ns) * 1e-9);
  }
  for (const auto ns : cpu_ns_)
    s.cpu_seconds.push_back(static_cast<double>(ns) / 1e9);
  if (!runq_absent_) {
    s.runq_seconds.emplace();
    for (const auto ns : runq_ns_)
      s.runq_seconds->push_back(static_cast<double>(ns) / 1e9);
  }
  s.idle_while_waiting_seconds =
      idle_waiting_core_seconds_ + seconds(now - last_change_) * waiting_on_idle_locked();
  s.last_seq = last_seq_;
  return s;
}

std::vector<JobEvent> Recorder::trace_since(std::uint64_t since) const {
  std::lock_guard lock(mutex_);
  std::vector<JobEvent> out;
  const std::uint64_t cap = ring_.size();
  if (cap == 0 || since >= last_seq_) return out;
  const std::uint64_t oldest = last_seq_ > cap ? last_seq_ - cap + 1 : 1;
  const std::uint64_t first = std::max(oldest, since + 1);
  out.reserve(static_cast<std::size_t>(last_seq_ - first + 1));
  for (auto seq = first; seq <= last_seq_; ++seq)
    out.push_back(ring_[static_cast<std::size_t>((seq - 1) % cap)]);
  return out;
}

std::size_t Recorder::index(int worker) const noexcept {
  // A backend bug must not corrupt memory: clamp (the tests check the real index).
  return static_cast<std::size_t>(std::clamp(worker, 0, workers_ - 1));
}

double Recorder::waiting_on_idle_locked() const noexcept {
  const auto idle = static_cast<std::size_t>(std::max(workers_ - busy_, 0));
  return static_cast<double>(std::min(queued_, idle));
}

// Closes the interval since the previous state change: all through it, min(queued, idle) cores
// could have been running a waiting job and were not.
void Recorder::advance_locked(Clock::time_point now) noexcept {
  const auto waiting = waiting_on_idle_locked();
  if (waiting > 0.0) idle_waiting_core_seconds_ += seconds(now - last_change_) * waiting;
  last_change_ = now;
}

void Recorder::admit_locked(Clock::time_point now) noexcept {
  advance_locked(now);
  ++accepted_;
  ++queued_;
}

void Recorder::refuse_locked(std::string &label, Clock::time_point now) {
  ++refused_;
  push_locked(label, -1, to_ns(now), 0, 0, JobOutcome::Refused, CpuTimes{0, std::nullopt});
}

void Recorder::push_locked(std::string &label, int worker, std::int64_t submit_ns,
                           std::int64_t start_ns, std::int64_t end_ns, JobOutcome outcome,
                           const CpuTimes &used) {
  const auto seq = ++last_seq_;
  if (ring_.empty()) return;
  auto &e = ring_[static_cast<std::size_t>((seq - 1) % ring_.size())];
  e.seq = seq;
  e.label = std::move(label);
  e.worker = worker;
  e.submit_ns = submit_ns;
  e.start_ns = start_ns;
  e.end_ns = end_ns;
  e.outcome = outcome;
  e.cpu_ns = used.cpu_ns;
  e.runq_ns = used.runq_ns;
}

} // namespace overdrive::detail
