// The streaming poster pipeline (see poster.hpp). Each band is one executor job that renders its
// rows into a per-worker buffer and encodes them (encode_png_band): rendering and encoding both
// scale with the workers, and only compressed bands wait for their turn to be written. At most
// a window of bands is in flight, so memory stays O(workers x band) whatever the image size.
#include "cli/poster.hpp"

#include "cli/mpi_session.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <fstream>
#include <future>
#include <malloc.h>
#include <mpi.h>
#include <stdexcept>
#include <thread>
#include <vector>

namespace overdrive::cli {
namespace {

using Ms = std::chrono::duration<double, std::milli>;

struct DoneBand {
  PngBand band;
  RenderStats stats;
  double render_ms = 0, encode_ms = 0;
};

// This rank's bands (b = rank, rank + ranks, ...) in order, at most `window` of them submitted
// ahead of the one being consumed. The destructor waits for every submitted job (they reference
// the caller's state), so an exception on the writing side unwinds safely.
class BandPipeline {
public:
  BandPipeline(int width, int height, int rank, int ranks, Executor &ex, const BandRenderer &render)
      : width_(width), height_(height), ranks_(ranks), ex_(ex), render_(render),
        band_rows_(png_band_rows(width, height)), bands_((height + band_rows_ - 1) / band_rows_),
        next_(rank), window_(static_cast<std::size_t>(std::max(2, 4 * ex.workers()))) {
    fill();
  }
  BandPipeline(const BandPipeline &) = delete;
  BandPipeline &operator=(const BandPipeline &) = delete;
  ~BandPipeline() {
    for (auto &f : inflight_)
      if (f.valid()) f.wait();
  }

  int bands() const noexcept { return bands_; }

  /// The next of this rank's bands, in order (blocks until it is encoded).
  DoneBand next() {
    if (inflight_.empty()) throw std::logic_error("poster: no band left on this rank");
    auto f = std::move(inflight_.front());
    inflight_.pop_front();
    DoneBand d = f.get();
    fill();
    return d;
  }

private:
  void fill() {
    while (inflight_.size() < window_ && next_ < bands_) {
      inflight_.push_back(submit(next_));
      next_ += ranks_;
    }
  }

  std::future<DoneBand> submit(int b) {
    const int begin = b * band_rows_, end = std::min(height_, begin + band_rows_);
    auto f = submit_task(
        ex_,
        [this, begin, end](const JobContext &ctx) {
          thread_local std::vector<std::uint8_t> rgb; // one band per worker, reused
          rgb.resize(static_cast<std::size_t>(end - begin) * static_cast<std::size_t>(width_) * 3);
          DoneBand d;
          const auto t0 = std::chrono::steady_clock::now();
          d.stats = render_(ctx, begin, end, rgb);
          const auto t1 = std::chrono::steady_clock::now();
          d.band = encode_png_band(rgb, width_, end == height_);
          d.render_ms = Ms(t1 - t0).count();
          d.encode_ms = Ms(std::chrono::steady_clock::now() - t1).count();
          return d;
        },
        "band " + std::to_string(b));
    if (!f) throw std::runtime_error("the executor refused work"); // unlimited queue
    return std::move(*f);
  }

  int width_, height_, ranks_;
  Executor &ex_;
  const BandRenderer &render_;
  int band_rows_, bands_, next_;
  std::size_t window_;
  std::deque<std::future<DoneBand>> inflight_;
};

// A band on the wire to the writer rank: its header, then the deflate segment (compressed bytes,
// a fraction of the pixels).
constexpr int kBandTag = 14;

// Waits until done() without spinning: Open MPI's blocking calls poll at full speed, and on the
// writer rank (or a sender in a rendezvous) that core is taken from the workers rendering bands.
// The pause doubles from 20 us to 1 ms, so a wait adds at most about 1 ms.
template <typename Done> void politely(Done done) {
  for (auto pause = std::chrono::microseconds(20); !done();
       pause = std::min(pause * 2, std::chrono::microseconds(1000)))
    std::this_thread::sleep_for(pause);
}

void send_band(const PngBand &band) {
  std::vector<std::uint8_t> msg(4 * sizeof(std::uint64_t) + band.deflate.size());
  const std::uint64_t head[4] = {static_cast<std::uint64_t>(band.rows), band.last ? 1u : 0u,
                                 band.adler, band.filtered_bytes};
  std::memcpy(msg.data(), head, sizeof head);
  std::copy(band.deflate.begin(), band.deflate.end(), msg.begin() + sizeof head);
  MPI_Request req;
  MPI_Isend(msg.data(), static_cast<int>(msg.size()), MPI_BYTE, 0, kBandTag, MPI_COMM_WORLD, &req);
  politely([&req] {
    int done = 0;
    MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    return done != 0;
  });
}

PngBand receive_band(int from) {
  MPI_Status st;
  politely([&] {
    int ready = 0;
    MPI_Iprobe(from, kBandTag, MPI_COMM_WORLD, &ready, &st);
    return ready != 0;
  });
  int count = 0;
  MPI_Get_count(&st, MPI_BYTE, &count);
  std::uint64_t head[4];
  if (count < static_cast<int>(sizeof head)) throw std::runtime_error("poster: short band message");
  std::vector<std::uint8_t> msg(static_cast<std::size_t>(count));
  MPI_Recv(msg.data(), count, MPI_BYTE, from, kBandTag, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
  std::memcpy(head, msg.data(), sizeof head);
  PngBand band;
  band.rows = static_cast<int>(head[0]);
  band.last = head[1] != 0;
  band.adler = static_cast<std::uint32_t>(head[2]);
  band.filtered_bytes = head[3];
  band.deflate.assign(msg.begin() + sizeof head, msg.end());
  return band;
}

} // namespace

PosterResult render_poster(int width, int height, Executor &executor, const BandRenderer &render,
                           const std::string &path, bool progress) {
  const MpiWorld &mpi = mpi_world();
  const int rank = mpi.active ? mpi.rank : 0, ranks = mpi.active ? mpi.size : 1;
  PosterResult res;
  res.ranks = ranks;

  // Fail before any rendering if the output cannot be written (every rank learns it).
  std::ofstream file;
  int cannot_write = 0;
  if (rank == 0) {
    file.open(path, std::ios::binary | std::ios::trunc);
    if (!file) {
      res.error = "cannot write '" + path + "': " + std::strerror(errno);
      cannot_write = 1;
    }
  }
  if (mpi.active) MPI_Bcast(&cannot_write, 1, MPI_INT, 0, MPI_COMM_WORLD);
  if (cannot_write) {
    if (res.error.empty()) res.error = "rank 0 cannot write '" + path + "'";
    return res;
  }

  // Every band allocates the same few blocks of ~0.3-1 MB (render_rows' scratch, the band's
  // segment). With glibc's defaults these are mmap'ed or trimmed and faulted in again band after
  // band: at 8192x8192, 100 thousand page faults and more CPU than the encoding itself. Fixed
  // thresholds keep them in the heap; memory in use stays what the bands in flight need.
  mallopt(M_MMAP_THRESHOLD, 8 << 20);
  mallopt(M_TRIM_THRESHOLD, 64 << 20);

  const auto t0 = std::chrono::steady_clock::now();
  double ms[2] = {0, 0}; // render, encode
  std::uint64_t iterations = 0;
  auto count = [&](const DoneBand &d) {
    iterations += d.stats.iterations;
    ms[0] += d.render_ms;
    ms[1] += d.encode_ms;
  };
  {
    BandPipeline mine(width, height, rank, ranks, executor, render);
    res.bands = static_cast<std::size_t>(mine.bands());
    if (rank == 0) {
      PngStream png(width, height, [&file](std::span<const std::uint8_t> b) {
        file.write(reinterpret_cast<const char *>(b.data()),
                   static_cast<std::streamsize>(b.size()));
      });
      for (int b = 0; b < mine.bands(); ++b) {
        if (b % ranks == 0) {
          DoneBand d = mine.next();
          count(d);
          png.append(d.band);
        } else {
          png.append(receive_band(b % ranks));
        }
        if (progress) std::fprintf(stderr, "\rrendering %3d%%", (b + 1) * 100 / mine.bands());
      }
      png.finish();
      res.png_bytes = png.bytes_written();
      if (progress) std::fprintf(stderr, "\r               \r");
    } else {
      for (int b = rank; b < mine.bands(); b += ranks) {
        DoneBand d = mine.next();
        count(d);
        send_band(d.band);
      }
    }
  }
  if (mpi.active) {
    // Totals on the writer rank: iterations exactly, times summed.
    std::uint64_t all_iterations = 0;
    MPI_Reduce(&iterations, &all_iterations, 1, MPI_UINT64_T, MPI_SUM, 0, MPI_COMM_WORLD);
    double all[2] = {0, 0};
    MPI_Reduce(ms, all, 2, MPI_DOUBLE, MPI_SUM, 0, MPI_COMM_WORLD);
    iterations = all_iterations;
    std::copy(std::begin(all), std::end(all), ms);
  }
  res.stats.iterations = iterations;
  res.render_ms = ms[0];
  res.encode_ms = ms[1];
  if (rank == 0) {
    file.close();
    if (!file) {
      res.error = "writing '" + path + "' failed";
      return res;
    }
  }
  res.wall_ms = Ms(std::chrono::steady_clock::now() - t0).count();
  res.ok = true;
  return res;
}

} // namespace overdrive::cli
