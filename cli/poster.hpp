// The streaming pipeline behind `overdrive render`: bands of rows rendered and PNG-encoded on the
// executor's workers, written in row order as they complete, so memory stays O(width x band)
// and encoding overlaps rendering. Under mpirun the bands are dealt out across the ranks and
// rank 0 writes the file from the compressed bands the others send it.
#pragma once

#include "executors/executor.hpp"
#include "render/render.hpp"

#include <functional>
#include <span>
#include <string>

namespace overdrive::cli {

/// Renders rows [begin, end) of the image into out (3 x width bytes per row) on a worker.
using BandRenderer =
    std::function<RenderStats(const JobContext &ctx, int begin, int end, std::span<std::uint8_t>)>;

struct PosterResult {
  bool ok = false;
  std::string error; ///< Why the file could not be written (ok false).
  RenderStats stats; ///< Summed over every rank.
  std::uint64_t png_bytes = 0;
  std::size_t bands = 0;
  double wall_ms = 0;   ///< From the first band submitted to the file closed.
  double render_ms = 0; ///< Time in the renderer, summed over workers and ranks.
  double encode_ms = 0; ///< Time filtering and deflating bands, summed over workers and ranks.
  int ranks = 1;
};

/// Streams a width x height PNG to path: bands of png_band_rows() rows rendered by render and
/// encoded on executor, written in order. Under an active MPI world (mpi_world()) every rank
/// calls it; band b is rendered by rank b % ranks and only rank 0 opens and writes path (the
/// result is complete on rank 0). The bytes do not depend on the executor, workers or ranks.
PosterResult render_poster(int width, int height, Executor &executor, const BandRenderer &render,
                           const std::string &path, bool progress);

} // namespace overdrive::cli
