// Private to render/: the stages of render_rows() (render.cpp) as functions of their own.
//   1. escape counts of a block of rows: count_region() (fill.cpp; rectangle filling or plain),
//      which asks count_points() - the one place rendering enters the kernels - for the pixels;
//   2. colouring: colour_rgb() (render.cpp);
//   3. adaptive anti-aliasing: antialias() (aa.cpp), which counts its sub-samples through
//      count_points() too.
#pragma once

#include "render/render.hpp"

#include <cstddef>
#include <cstdint>

namespace overdrive::detail {

/// Escape counts of the points of job with req's number format and kernel: today
/// run_kernel_rows(job, req.precision, req.isa). Every count rendering needs goes through here.
void count_points(const RenderRequest &req, const RowsJob &job);

/// Escape counts of the whole rows [y0, y1) of req's view into iters/mag2 ((y1 - y0) * width
/// each, row-major), equal to one plain run_kernel_rows over the rows (see fill.cpp for when
/// rectangle filling is used and its exactness). Adds work to stats.computed and stats.filled;
/// stats.iterations is left to the caller.
void count_region(const RenderRequest &req, int y0, int y1, std::uint32_t *iters, float *mag2,
                  RenderStats &stats);

/// RGB (3 bytes per point) of n escape counts under req's palette: smooth colouring, black inside.
void colour_rgb(const RenderRequest &req, const std::uint32_t *iters, const float *mag2,
                std::size_t n, std::uint8_t *rgb);

/// Adaptive anti-aliasing of rows [row_begin, row_end) of req's view (req.aa > 1). rgb holds the
/// plain colours of rows [lo, hi) (lo <= row_begin, hi >= row_end: one row of context on each side
/// where the image has one); out receives rows [row_begin, row_end) with edge pixels replaced by
/// the mean of req.aa x req.aa samples. Adds the samples' work to stats.computed.
void antialias(const RenderRequest &req, int lo, int hi, const std::uint8_t *rgb, int row_begin,
               int row_end, std::uint8_t *out, RenderStats &stats);

} // namespace overdrive::detail
