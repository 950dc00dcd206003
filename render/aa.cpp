// Adaptive anti-aliasing: only pixels whose colour differs from a 4-neighbour's by more than
// kEdgeThreshold (sum of the absolute R, G, B differences) are supersampled, with N x N samples
// on a regular grid inside the pixel, and replaced by the samples' mean colour. Flat and slowly
// varying regions (the black inside, smooth gradients far from the set) keep their plain colour,
// so aa = N costs far less than N^2 plain renders. Deterministic: the edge test looks one row
// beyond the block (the caller renders that context row), so the picture does not depend on how
// the image is split into row blocks.
#include "render/fill.hpp"

#include <cstdlib>
#include <vector>

namespace overdrive::detail {
namespace {

/// A pixel is an edge when some 4-neighbour differs by more than this (|dR| + |dG| + |dB|).
constexpr int kEdgeThreshold = 96;

int diff(const std::uint8_t *a, const std::uint8_t *b) {
  return std::abs(a[0] - b[0]) + std::abs(a[1] - b[1]) + std::abs(a[2] - b[2]);
}

} // namespace

void antialias(const RenderRequest &req, int lo, int hi, const std::uint8_t *rgb, int row_begin,
               int row_end, std::uint8_t *out, RenderStats &stats) {
  const Viewport &v = req.view;
  const int w = v.pixel_width, n = req.aa;
  const auto row = static_cast<std::size_t>(w) * 3;
  auto px = [&](int y, int x) {
    return rgb + static_cast<std::size_t>(y - lo) * row + static_cast<std::size_t>(x) * 3;
  };
  // Edge pixels, grouped by column so that one kernel call takes all of a column's samples.
  std::vector<std::vector<int>> edges(static_cast<std::size_t>(w));
  for (int y = row_begin; y < row_end; ++y)
    for (int x = 0; x < w; ++x) {
      const std::uint8_t *c = px(y, x);
      const bool edge = (x > 0 && diff(c, px(y, x - 1)) > kEdgeThreshold) ||
                        (x + 1 < w && diff(c, px(y, x + 1)) > kEdgeThreshold) ||
                        (y > lo && diff(c, px(y - 1, x)) > kEdgeThreshold) ||
                        (y + 1 < hi && diff(c, px(y + 1, x)) > kEdgeThreshold);
      if (edge) edges[static_cast<std::size_t>(x)].push_back(y);
    }
  for (int y = row_begin; y < row_end; ++y)
    std::copy(px(y, 0), px(y, 0) + row, out + static_cast<std::size_t>(y - row_begin) * row);

  const double pix = v.pixel_size(), sub = pix / n;
  const auto per_px = static_cast<std::size_t>(n) * static_cast<std::size_t>(n);
  std::vector<double> im;
  std::vector<std::uint32_t> iters;
  std::vector<float> mag2;
  std::vector<std::uint8_t> colours;
  for (int x = 0; x < w; ++x) {
    const auto &ys = edges[static_cast<std::size_t>(x)];
    if (ys.empty()) continue;
    // Sample (i, j) of pixel (x, y) sits at the centre of cell (i, j) of an n x n grid.
    im.clear();
    for (const int y : ys)
      for (int j = 0; j < n; ++j)
        im.push_back(v.im_at(y) + 0.5 * pix - (j + 0.5) * sub);
    const std::size_t samples = ys.size() * per_px;
    iters.resize(samples);
    mag2.resize(samples);
    colours.resize(samples * 3);
    count_points(req, {v.re_at(x) - 0.5 * pix + 0.5 * sub, sub, im.data(),
                       static_cast<int>(im.size()), n, req.max_iter, iters.data(), mag2.data()});
    colour_rgb(req, iters.data(), mag2.data(), samples, colours.data());
    for (std::size_t e = 0; e < ys.size(); ++e) {
      unsigned sum[3] = {0, 0, 0};
      for (std::size_t s = 0; s < per_px; ++s) {
        stats.computed += iters[e * per_px + s];
        for (int ch = 0; ch < 3; ++ch)
          sum[ch] += colours[(e * per_px + s) * 3 + static_cast<std::size_t>(ch)];
      }
      std::uint8_t *dst =
          out + static_cast<std::size_t>(ys[e] - row_begin) * row + static_cast<std::size_t>(x) * 3;
      for (int ch = 0; ch < 3; ++ch)
        dst[ch] = static_cast<std::uint8_t>((sum[ch] + per_px / 2) / per_px);
      ++stats.supersampled;
    }
  }
}

} // namespace overdrive::detail
