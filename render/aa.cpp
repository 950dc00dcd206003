// Adaptive anti-aliasing: only pixels whose colour differs from a 4-neighbour's by more than
// kEdgeThreshold (sum of the absolute R, G, B differences) are supersampled, with N x N samples
// on a regular grid inside the pixel, and replaced by the samples' mean colour. Flat and slowly
// varying regions (the black inside, smooth gradients far from the set) keep their plain colour,
// so aa = N costs far less than N^2 plain renders. Deterministic: the edge test looks one row
// beyond the block (the caller renders that context row), so the picture does not depend on how
// the image is split into row blocks.
#include "render/fill.hpp"

#include <algorithm>
#include <cstdlib>
#include <vector>

namespace overdrive::detail {
namespace {

/// A pixel is an edge when some 4-neighbour differs by more than this (|dR| + |dG| + |dB|).
constexpr int kEdgeThreshold = 128;

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
  std::vector<std::uint8_t> edge(static_cast<std::size_t>(row_end - row_begin) *
                                 static_cast<std::size_t>(w));
  auto is_edge = [&](int y, int x) -> std::uint8_t & {
    return edge[static_cast<std::size_t>(y - row_begin) * static_cast<std::size_t>(w) +
                static_cast<std::size_t>(x)];
  };
  for (int y = row_begin; y < row_end; ++y)
    for (int x = 0; x < w; ++x) {
      const std::uint8_t *c = px(y, x);
      is_edge(y, x) = (x > 0 && diff(c, px(y, x - 1)) > kEdgeThreshold) ||
                      (x + 1 < w && diff(c, px(y, x + 1)) > kEdgeThreshold) ||
                      (y > lo && diff(c, px(y - 1, x)) > kEdgeThreshold) ||
                      (y + 1 < hi && diff(c, px(y + 1, x)) > kEdgeThreshold);
    }
  for (int y = row_begin; y < row_end; ++y)
    std::copy(px(y, 0), px(y, 0) + row, out + static_cast<std::size_t>(y - row_begin) * row);

  // Samples go to the kernel in strips of m columns: kernel row = sample row j of image row y
  // across the strip (n * m >= 32 samples, so the SIMD kernels' vectors stay full). A strip's
  // row is sampled whole when at least half its pixels are edges (the rest of its samples are
  // discarded); the edges of sparser strip rows are sampled pixel by pixel, one kernel call per
  // column. Sample (i, j) of a pixel sits at the centre of cell (i, j) of an n x n grid in it.
  const double pix = v.pixel_size(), sub = pix / n;
  const auto per_px = static_cast<std::size_t>(n) * static_cast<std::size_t>(n);
  const int m = (32 + n - 1) / n;
  std::vector<double> im;
  std::vector<int> ys;
  std::vector<std::uint32_t> iters;
  std::vector<float> mag2;
  std::vector<std::uint8_t> colours;
  // Averages the samples of pixel (x, y), found at colours[first + (j * stride + i) * 3].
  auto average = [&](int y, int x, std::size_t first, std::size_t stride) {
    unsigned sum[3] = {0, 0, 0};
    for (int j = 0; j < n; ++j)
      for (int i = 0; i < n; ++i) {
        const std::size_t s =
            first + static_cast<std::size_t>(j) * stride + static_cast<std::size_t>(i);
        for (int ch = 0; ch < 3; ++ch)
          sum[ch] += colours[s * 3 + static_cast<std::size_t>(ch)];
      }
    std::uint8_t *dst =
        out + static_cast<std::size_t>(y - row_begin) * row + static_cast<std::size_t>(x) * 3;
    for (int ch = 0; ch < 3; ++ch)
      dst[ch] = static_cast<std::uint8_t>((sum[ch] + per_px / 2) / per_px);
    ++stats.supersampled;
  };
  auto run = [&](double re0, int len) {
    const std::size_t samples = im.size() * static_cast<std::size_t>(len);
    iters.resize(samples);
    mag2.resize(samples);
    colours.resize(samples * 3);
    count_points(req, {re0, sub, im.data(), static_cast<int>(im.size()), len, req.max_iter,
                       iters.data(), mag2.data()});
    colour_rgb(req, iters.data(), mag2.data(), samples, colours.data());
    for (std::size_t k = 0; k < samples; ++k)
      stats.computed += iters[k];
  };
  std::vector<std::vector<int>> sparse(static_cast<std::size_t>(w)); // column -> rows
  for (int x0 = 0; x0 < w; x0 += m) {
    const int x1 = std::min(w, x0 + m), len = (x1 - x0) * n;
    im.clear();
    ys.clear();
    for (int y = row_begin; y < row_end; ++y) {
      int count = 0;
      for (int x = x0; x < x1; ++x)
        count += is_edge(y, x);
      if (count == 0) continue;
      if (2 * count < x1 - x0) {
        for (int x = x0; x < x1; ++x)
          if (is_edge(y, x)) sparse[static_cast<std::size_t>(x)].push_back(y);
        continue;
      }
      ys.push_back(y);
      for (int j = 0; j < n; ++j)
        im.push_back(v.im_at(y) + 0.5 * pix - (j + 0.5) * sub);
    }
    if (ys.empty()) continue;
    run(v.re_at(x0) - 0.5 * pix + 0.5 * sub, len);
    for (std::size_t e = 0; e < ys.size(); ++e)
      for (int x = x0; x < x1; ++x)
        if (is_edge(ys[e], x))
          average(ys[e], x,
                  e * static_cast<std::size_t>(n) * static_cast<std::size_t>(len) +
                      static_cast<std::size_t>((x - x0) * n),
                  static_cast<std::size_t>(len));
  }
  for (int x = 0; x < w; ++x) {
    const auto &col = sparse[static_cast<std::size_t>(x)];
    if (col.empty()) continue;
    im.clear();
    for (const int y : col)
      for (int j = 0; j < n; ++j)
        im.push_back(v.im_at(y) + 0.5 * pix - (j + 0.5) * sub);
    run(v.re_at(x) - 0.5 * pix + 0.5 * sub, n);
    for (std::size_t e = 0; e < col.size(); ++e)
      average(col[e], x, e * per_px, static_cast<std::size_t>(n));
  }
}

} // namespace overdrive::detail
