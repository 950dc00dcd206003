// How the tiles of a pyramid are shared among MPI ranks. Each rank renders on its own executor;
// only its main thread calls MPI (MPI_THREAD_FUNNELED).
// - static: rank r takes tiles r, r + R, r + 2R, ... (no messages at all);
// - dynamic: rank 0 holds the next-tile counter and hands out batches of `batch` tiles on request
//   (MPI_Send/MPI_Recv, tag kRequest/kGrant); it renders too and answers requests between its own
//   tiles. A rank asks for its next batch while it still has one queued, so it never idles on the
//   round trip; an empty grant tells it to stop.
#include "cli/mpi_session.hpp"
#include "cli/pyramid.hpp"

#include <chrono>
#include <cstdio>
#include <deque>
#include <iostream>
#include <mpi.h>
#include <thread>
#include <unistd.h>

namespace overdrive::cli::pyramid {
namespace {

constexpr int kRequest = 101;
constexpr int kGrant = 102;

/// Where a rank's tile indices come from.
class Source {
public:
  virtual ~Source() = default;
  /// MPI progress: answer requests (rank 0), ask for and receive batches (others).
  virtual void poll() {}
  /// The next index for this rank, if one is at hand now.
  virtual bool take(std::int64_t &index) = 0;
  /// No index will ever come again, and this rank owes no one an answer.
  virtual bool done() const = 0;
  /// Estimate of tiles handed out over all ranks (progress display on rank 0).
  virtual std::int64_t handed_out() const = 0;
};

class StaticSource final : public Source {
public:
  StaticSource(std::int64_t total, int rank, int size) : total_(total), next_(rank), step_(size) {}
  bool take(std::int64_t &index) override {
    if (next_ >= total_) return false;
    index = next_;
    next_ += step_;
    return true;
  }
  bool done() const override { return next_ >= total_; }
  std::int64_t handed_out() const override { return std::min(total_, next_); }

private:
  std::int64_t total_, next_, step_;
};

/// Rank 0 of the dynamic schedule: owns the counter, serves its peers and itself.
class Coordinator final : public Source {
public:
  Coordinator(std::int64_t total, int batch, int size)
      : total_(total), batch_(batch), peers_left_(size - 1) {}
  void poll() override {
    for (;;) {
      int flag = 0;
      MPI_Status st;
      MPI_Iprobe(MPI_ANY_SOURCE, kRequest, MPI_COMM_WORLD, &flag, &st);
      if (flag == 0) return;
      int dummy = 0;
      MPI_Recv(&dummy, 1, MPI_INT, st.MPI_SOURCE, kRequest, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
      std::int64_t grant[2];
      grab(grant[0], grant[1]);
      if (grant[0] == grant[1]) --peers_left_;
      MPI_Send(grant, 2, MPI_INT64_T, st.MPI_SOURCE, kGrant, MPI_COMM_WORLD);
    }
  }
  bool take(std::int64_t &index) override {
    if (begin_ == end_) grab(begin_, end_);
    if (begin_ == end_) return false;
    index = begin_++;
    return true;
  }
  bool done() const override { return begin_ == end_ && next_ >= total_ && peers_left_ == 0; }
  std::int64_t handed_out() const override { return next_; }

private:
  void grab(std::int64_t &b, std::int64_t &e) {
    b = next_;
    e = std::min(total_, next_ + batch_);
    next_ = e;
  }
  std::int64_t total_, batch_;
  int peers_left_;
  std::int64_t next_ = 0, begin_ = 0, end_ = 0;
};

/// Ranks 1.. of the dynamic schedule: ask rank 0 for batches, one request outstanding at most.
class Client final : public Source {
public:
  explicit Client(int batch) : batch_(batch) {}
  ~Client() override {
    if (waiting_) MPI_Cancel(&recv_); // not reached in a normal run: done() needs the last grant
  }
  void poll() override {
    if (waiting_) {
      int flag = 0;
      MPI_Test(&recv_, &flag, MPI_STATUS_IGNORE);
      if (flag == 0) return;
      waiting_ = false;
      if (grant_[0] == grant_[1]) {
        exhausted_ = true;
      } else {
        ranges_.push_back({grant_[0], grant_[1]});
        queued_ += grant_[1] - grant_[0];
      }
    }
    if (!exhausted_ && queued_ < batch_) {
      int dummy = 0;
      MPI_Irecv(grant_, 2, MPI_INT64_T, 0, kGrant, MPI_COMM_WORLD, &recv_);
      MPI_Send(&dummy, 1, MPI_INT, 0, kRequest, MPI_COMM_WORLD);
      waiting_ = true;
    }
  }
  bool take(std::int64_t &index) override {
    if (ranges_.empty()) return false;
    auto &r = ranges_.front();
    index = r.first++;
    --queued_;
    if (r.first == r.second) ranges_.pop_front();
    return true;
  }
  bool done() const override { return exhausted_ && ranges_.empty(); }
  std::int64_t handed_out() const override { return 0; }

private:
  std::int64_t batch_;
  std::deque<std::pair<std::int64_t, std::int64_t>> ranges_;
  std::int64_t queued_ = 0;
  std::int64_t grant_[2] = {0, 0};
  MPI_Request recv_ = MPI_REQUEST_NULL;
  bool waiting_ = false, exhausted_ = false;
};

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

} // namespace

TileId Plan::tile(std::int64_t index) const {
  for (const auto &zr : zooms) {
    const std::int64_t local = index - zr.first;
    if (local >= 0 && local < zr.nx * zr.ny)
      return {zr.z, zr.x0 + local % zr.nx, zr.y0 + local / zr.nx};
  }
  return {};
}

RankStats run_share(const Plan &plan, TileRunner &runner, const RunOptions &options) {
  const MpiWorld &world = mpi_world();
  std::unique_ptr<Source> source;
  if (options.schedule == Schedule::Static || world.size == 1)
    source = std::make_unique<StaticSource>(plan.total, world.rank, world.size);
  else if (world.rank == 0)
    source = std::make_unique<Coordinator>(plan.total, options.batch, world.size);
  else
    source = std::make_unique<Client>(options.batch);

  RankStats stats;
  const auto t0 = std::chrono::steady_clock::now();
  auto last_draw = t0;
  double local_done = 0;
  const bool draw = options.progress && world.rank == 0;
  for (;;) {
    if (world.active) source->poll();
    bool progressed = false;
    std::int64_t index = 0;
    while (runner.in_flight() < static_cast<std::size_t>(options.window) && source->take(index)) {
      if (!runner.submit(index)) throw std::runtime_error("the executor refused a tile");
      progressed = true;
    }
    if (runner.in_flight() == 0 && source->done()) break;
    // Wait briefly for a tile, so that rank 0 still answers its peers every few hundred us.
    const int reaped = runner.reap(stats, progressed ? 0 : (world.size > 1 ? 200 : 20000));
    if (reaped == 0 && !progressed && runner.in_flight() == 0)
      std::this_thread::sleep_for(std::chrono::microseconds(100)); // waiting for a grant
    if (draw) {
      local_done += reaped;
      const auto now = std::chrono::steady_clock::now();
      if (now - last_draw > std::chrono::milliseconds(250)) {
        last_draw = now;
        // Global progress is an estimate on rank 0: its own share times the ranks (static), or
        // the tiles handed out minus its own queue (dynamic).
        const double done = std::min<double>(static_cast<double>(plan.total),
                                             options.schedule == Schedule::Dynamic && world.size > 1
                                                 ? static_cast<double>(source->handed_out()) -
                                                       static_cast<double>(runner.in_flight())
                                                 : local_done * world.size);
        const double rate = done / std::max(1e-9, seconds_since(t0));
        const double eta = rate > 0 ? (static_cast<double>(plan.total) - done) / rate : 0.0;
        std::fprintf(stderr, "\r  tiles %.0f/%lld  %.0f tiles/s  ETA %.0f s   ", done,
                     static_cast<long long>(plan.total), rate, eta);
      }
    }
  }
  if (draw) std::fprintf(stderr, "\r%60s\r", "");
  return stats;
}

std::vector<RankStats> gather_stats(const RankStats &mine) {
  const MpiWorld &world = mpi_world();
  if (!world.active) return {mine};
  constexpr int n = 4 * kZooms + 1;
  std::vector<double> send(n);
  for (int z = 0; z < kZooms; ++z) {
    send[static_cast<std::size_t>(z)] = mine.rendered[static_cast<std::size_t>(z)];
    send[static_cast<std::size_t>(kZooms + z)] = mine.skipped[static_cast<std::size_t>(z)];
    send[static_cast<std::size_t>(2 * kZooms + z)] = mine.bytes[static_cast<std::size_t>(z)];
    send[static_cast<std::size_t>(3 * kZooms + z)] = mine.seconds[static_cast<std::size_t>(z)];
  }
  send[4 * kZooms] = mine.errors;
  std::vector<double> all(world.rank == 0 ? static_cast<std::size_t>(n * world.size) : 0);
  MPI_Gather(send.data(), n, MPI_DOUBLE, all.data(), n, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  std::vector<RankStats> out;
  if (world.rank != 0) return out;
  for (int r = 0; r < world.size; ++r) {
    const double *p = all.data() + static_cast<std::ptrdiff_t>(r) * n;
    RankStats s;
    for (std::size_t z = 0; z < kZooms; ++z) {
      s.rendered[z] = p[z];
      s.skipped[z] = p[kZooms + z];
      s.bytes[z] = p[2 * kZooms + z];
      s.seconds[z] = p[3 * kZooms + z];
    }
    s.errors = p[4 * kZooms];
    out.push_back(s);
  }
  return out;
}

int broadcast_status(int status) {
  if (!mpi_world().active) return status;
  MPI_Bcast(&status, 1, MPI_INT, 0, MPI_COMM_WORLD);
  return status;
}

} // namespace overdrive::cli::pyramid
