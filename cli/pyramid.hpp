// `overdrive pyramid`, private to cli/: the plan (which tiles, in which order), the work of one
// tile, and the distribution of tiles over MPI ranks (pyramid_mpi.cpp).
#pragma once

#include "render/render.hpp"

#include <array>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <vector>

namespace overdrive::cli::pyramid {

inline constexpr int kZooms = Limits::max_tile_zoom + 1;

/// The tiles of one zoom level that meet the bbox: columns [x0, x0 + nx), rows [y0, y0 + ny).
struct ZoomRange {
  int z = 0;
  std::int64_t x0 = 0, y0 = 0, nx = 0, ny = 0;
  std::int64_t first = 0; ///< index of its first tile in the plan
};

/// Every tile of the pyramid, numbered 0..total-1 zoom by zoom, row by row.
struct Plan {
  std::vector<ZoomRange> zooms;
  std::int64_t total = 0;
  TileId tile(std::int64_t index) const;
};

/// What one rank did; summed or gathered over ranks at the end.
struct RankStats {
  std::array<double, kZooms> rendered{}, skipped{}, bytes{}, seconds{};
  double errors = 0;
};

/// Renders (or skips) tile `index`; runs on an executor worker; adds to the rank's stats through
/// the returned outcome. Throws on an I/O error.
struct TileOutcome {
  int z = 0;
  bool rendered = false;
  std::uint64_t bytes = 0;
  double seconds = 0;
};
using TileWork = std::function<TileOutcome(std::int64_t index)>;

enum class Schedule { Static, Dynamic };

/// How this rank runs its share: `workers` tiles at a time on its executor, window tiles queued.
struct RunOptions {
  Schedule schedule = Schedule::Dynamic;
  int batch = 4;         ///< tiles per request (dynamic)
  int window = 4;        ///< tiles submitted to the local executor at once
  bool progress = false; ///< rank 0 draws progress on stderr
};

/// Runs this rank's share of plan.total tiles through submit (which queues one tile on the local
/// executor and returns a poll-able handle) and returns the rank's stats. Collective: every rank
/// of mpi_world() calls it.
class TileRunner {
public:
  virtual ~TileRunner() = default;
  /// Queues tile index; false if the executor refused it.
  virtual bool submit(std::int64_t index) = 0;
  /// Tiles submitted and not yet reaped.
  virtual std::size_t in_flight() const = 0;
  /// Reaps finished tiles into stats, waiting up to wait_us for one; returns how many.
  virtual int reap(RankStats &stats, int wait_us) = 0;
};
RankStats run_share(const Plan &plan, TileRunner &runner, const RunOptions &options);

/// Gathers every rank's stats on rank 0 (collective); on rank 0 returns one entry per rank.
std::vector<RankStats> gather_stats(const RankStats &mine);

/// Rank 0's verdict (0 = go on, else the exit status) sent to every rank (collective).
int broadcast_status(int status);

} // namespace overdrive::cli::pyramid
