// Escape counts of a block of rows, with rectangle filling (Mariani-Silver) for interior regions.
//
// When it is used: render_rows() blocks with req.fill (the default), max_iter >= kMinFillIter
// (4096) and at least kMinSide x kMinSide pixels, on any view (the kernel calls name their
// pixels by column, RowsJob::k0 and kstep, so every pixel gets the plain render's c). Otherwise the
// rows go to the kernel in one plain call. Only *interior* is filled: if every pixel on the border
// of a cell has count max_iter, its inside is set to max_iter without computing it (the Mandelbrot
// set, and each of its finite-iteration approximations {c : |z_k| <= 2, k <= N}, has no holes).
// Regions of equal escape count are NOT filled: smooth colouring depends on |z|^2 at escape, which
// differs between pixels of equal count, so filling them would change the picture.
//
// How: grid lines every 64 pixels over the block; cells whose border is all interior are
// filled, cells with interior (other than main-cardioid/period-2-bulb points, which the kernel
// answers without iterating) on their border get lines every 32 pixels, the rest are computed.
//
// Exactness: every computed pixel gets exactly the plain render's c (k0, kstep) and so its
// count. A filled pixel can differ from the plain render only where an escaping filament passes
// between two border pixels without touching one (sub-pixel detail); the tests compare
// pixel-for-pixel on several scenes (Render.FillMatchesPlain*) and allow at most 1e-4 of the
// pixels to differ (0 differ in all of them today).
#include "render/fill.hpp"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <vector>

namespace overdrive::detail {

void count_points(const RenderRequest &req, const RowsJob &job) {
  run_kernel_rows(job, req.precision, req.isa);
}

namespace {

/// Grid lines are drawn every kSteps[0] pixels inside a cell whose border is not all interior,
/// then every kSteps[1] inside the resulting cells; the cells left after that are computed.
constexpr int kSteps[] = {64, 32};
/// Blocks with fewer rows or columns than this are rendered plainly.
constexpr int kMinSide = 16;
/// Below this max_iter blocks are rendered plainly: the narrow kernel calls of the grid columns
/// cost more than filling saves (tile 2/1/1 at 512 and 2048 iterations: 1.7x slower filled).
constexpr int kMinFillIter = 4096;

/// c of pixel column x exactly as a kernel row starting at column 0 computes it (no FMA: this
/// file is built with -ffp-contract=off).
double re_of(double re0, double dre, int x) {
  return re0 + static_cast<double>(x) * dre;
}

// Main cardioid or period-2 bulb (the kernels' interior test, used here only to decide where
// refining can pay).
bool in_cardioid_or_bulb(double x, double y) {
  const double q = (x - 0.25) * (x - 0.25) + y * y;
  if (q * (q + (x - 0.25)) < 0.25 * y * y) return true;
  return (x + 1.0) * (x + 1.0) + y * y < 0.0625;
}

class Filler {
public:
  Filler(const RenderRequest &req, int y0, int y1, std::uint32_t *iters, float *mag2)
      : req_(req), w_(req.view.pixel_width), rows_(y1 - y0), iters_(iters), mag2_(mag2),
        re0_(req.view.re_at(0)), dre_(req.view.pixel_size()) {
    state_.assign(static_cast<std::size_t>(w_) * static_cast<std::size_t>(rows_), kUnknown);
    im_.clear();
    for (int r = 0; r < rows_; ++r)
      im_.push_back(req.view.im_at(y0 + r));
  }

  void run(RenderStats &stats) {
    const auto max_iter = static_cast<std::uint32_t>(req_.max_iter);
    // Level 0: grid lines every kSteps[0] pixels over the whole block, its edges included: the
    // rows whole, the columns as one strided kernel row per block row (and the last column).
    const int s0 = kSteps[0];
    // (The first line is always at 0: blocks narrower than s0 / 2 + 2 have just their edges.)
    xs_.assign(1, 0);
    for (int x = s0; x + s0 / 2 < w_ - 1; x += s0)
      xs_.push_back(x);
    xs_.push_back(w_ - 1);
    rs_.assign(1, 0);
    for (int r = s0; r + s0 / 2 < rows_ - 1; r += s0)
      rs_.push_back(r);
    rs_.push_back(rows_ - 1);
    for (const int r : rs_)
      want(r, 0, w_);
    for (int r = 0; r < rows_; ++r)
      if (state_[at(r, 0)] == kUnknown) {
        want_strided(r, 0, static_cast<int>(xs_.size()) - 1, s0);
        want(r, w_ - 1, w_);
      }
    flush(stats);
    std::vector<Rect> cells, next;
    for (std::size_t i = 0; i + 1 < rs_.size(); ++i)
      for (std::size_t j = 0; j + 1 < xs_.size(); ++j)
        cells.push_back({xs_[j], xs_[j + 1], rs_[i], rs_[i + 1]});
    // Then grid lines every kSteps[i] pixels inside each cell whose border is not all interior,
    // and at last the insides of the remaining cells. Requests of one level share their shapes
    // (a cell column's [x0 + 1, x1), or one strided row of columns), so each level is a few
    // large kernel calls.
    for (std::size_t level = 1; level <= std::size(kSteps); ++level) {
      const bool leaf = level == std::size(kSteps);
      next.clear();
      for (const Rect &c : cells) {
        if (c.x1 - c.x0 < 2 || c.r1 - c.r0 < 2) continue; // no inside
        if (border_interior(c, max_iter)) {
          fill_inside(c, stats);
          continue;
        }
        const int step = leaf ? 0 : kSteps[level];
        const bool split_x = !leaf && c.x1 - c.x0 >= 2 * step;
        const bool split_r = !leaf && c.r1 - c.r0 >= 2 * step;
        // Refine only where it can pay: a cell with no interior on its border other than
        // main-cardioid or period-2-bulb points (which the kernel answers without iterating) is
        // computed whole.
        if (leaf || !costly_interior_on_border(c, max_iter)) {
          for (int r = c.r0 + 1; r < c.r1; ++r)
            want(r, c.x0 + 1, c.x1);
          continue;
        }
        if (!split_x && !split_r) {
          next.push_back(c);
          continue;
        }
        xs_.assign(1, c.x0);
        for (int x = c.x0 + step; split_x && x + step / 2 < c.x1; x += step)
          xs_.push_back(x);
        xs_.push_back(c.x1);
        rs_.assign(1, c.r0);
        for (int r = c.r0 + step; split_r && r + step / 2 < c.r1; r += step)
          rs_.push_back(r);
        rs_.push_back(c.r1);
        for (std::size_t i = 1; i + 1 < rs_.size(); ++i)
          want(rs_[i], c.x0 + 1, c.x1);
        if (xs_.size() > 2)
          for (int r = c.r0 + 1; r < c.r1; ++r)
            if (state_[at(r, xs_[1])] == kUnknown)
              want_strided(r, xs_[1], static_cast<int>(xs_.size()) - 2, step);
        for (std::size_t i = 0; i + 1 < rs_.size(); ++i)
          for (std::size_t j = 0; j + 1 < xs_.size(); ++j)
            next.push_back({xs_[j], xs_[j + 1], rs_[i], rs_[i + 1]});
      }
      flush(stats);
      std::swap(cells, next);
    }
  }

private:
  static constexpr std::uint8_t kUnknown = 0, kComputed = 1, kFilled = 2;
  struct Rect {
    int x0, x1, r0, r1; // inclusive
  };
  struct Seg {
    int x0, n, stride, r; // pixels x0 + k * stride, k in [0, n), of block row r
    bool operator<(const Seg &o) const {
      if (x0 != o.x0) return x0 < o.x0;
      if (n != o.n) return n < o.n;
      return stride != o.stride ? stride < o.stride : r < o.r;
    }
    bool same_shape(const Seg &o) const { return x0 == o.x0 && n == o.n && stride == o.stride; }
  };

  std::size_t at(int r, int x) const {
    return static_cast<std::size_t>(r) * static_cast<std::size_t>(w_) + static_cast<std::size_t>(x);
  }

  bool border_interior(const Rect &r, std::uint32_t max_iter) const {
    for (int x = r.x0; x <= r.x1; ++x)
      if (iters_[at(r.r0, x)] < max_iter || iters_[at(r.r1, x)] < max_iter) return false;
    for (int y = r.r0 + 1; y < r.r1; ++y)
      if (iters_[at(y, r.x0)] < max_iter || iters_[at(y, r.x1)] < max_iter) return false;
    return true;
  }

  bool costly_interior_on_border(const Rect &c, std::uint32_t max_iter) const {
    auto costly = [&](int r, int x) {
      return iters_[at(r, x)] >= max_iter &&
             !in_cardioid_or_bulb(re_of(re0_, dre_, x), im_[static_cast<std::size_t>(r)]);
    };
    for (int x = c.x0; x <= c.x1; ++x)
      if (costly(c.r0, x) || costly(c.r1, x)) return true;
    for (int r = c.r0 + 1; r < c.r1; ++r)
      if (costly(r, c.x0) || costly(r, c.x1)) return true;
    return false;
  }

  void fill_inside(const Rect &c, RenderStats &stats) {
    for (int r = c.r0 + 1; r < c.r1; ++r)
      for (int x = c.x0 + 1; x < c.x1; ++x) {
        const std::size_t i = at(r, x);
        iters_[i] = static_cast<std::uint32_t>(req_.max_iter);
        mag2_[i] = 0.0f;
        state_[i] = kFilled;
        ++stats.filled;
      }
  }

  // Queues the unknown pixels of [x0, x1) on block row r, in runs.
  void want(int r, int x0, int x1) {
    int x = x0;
    while (x < x1) {
      while (x < x1 && state_[at(r, x)] != kUnknown)
        ++x;
      const int a = x;
      while (x < x1 && state_[at(r, x)] == kUnknown)
        state_[at(r, x++)] = kComputed;
      if (x > a) segs_.push_back({a, x - a, 1, r});
    }
  }

  // Queues pixels x0 + k * stride, k in [0, n), of block row r (all unknown: grid lines).
  void want_strided(int r, int x0, int n, int stride) {
    for (int k = 0; k < n; ++k)
      state_[at(r, x0 + k * stride)] = kComputed;
    segs_.push_back({x0, n, stride, r});
  }

  // Counts the queued segments: one kernel call per distinct shape (x0, n, stride) with all its
  // rows (RowsJob::k0 = x0 and kstep = stride: the kernel computes exactly the plain render's c
  // of each of these pixels).
  void flush(RenderStats &stats) {
    std::sort(segs_.begin(), segs_.end());
    for (std::size_t i = 0; i < segs_.size();) {
      std::size_t j = i;
      while (j < segs_.size() && segs_[j].same_shape(segs_[i]))
        ++j;
      count(i, j, stats);
      i = j;
    }
    segs_.clear();
  }

  // Counts the pixels of segs_[i, j) (one shape) in one kernel call.
  void count(std::size_t i, std::size_t j, RenderStats &stats) {
    const Seg &shape = segs_[i];
    const int rows = static_cast<int>(j - i);
    ims_.clear();
    for (std::size_t s = i; s < j; ++s)
      ims_.push_back(im_[static_cast<std::size_t>(segs_[s].r)]);
    const auto total = static_cast<std::size_t>(shape.n) * static_cast<std::size_t>(rows);
    it_.resize(total);
    m2_.resize(total);
    count_points(req_, {re0_, dre_, ims_.data(), rows, shape.n, req_.max_iter, it_.data(),
                        m2_.data(), shape.x0, shape.stride});
    std::size_t from = 0;
    for (std::size_t s = i; s < j; ++s)
      for (int k = 0; k < shape.n; ++k, ++from) {
        const std::size_t to = at(segs_[s].r, shape.x0 + k * shape.stride);
        iters_[to] = it_[from];
        mag2_[to] = m2_[from];
        stats.computed += it_[from];
      }
  }

  const RenderRequest &req_;
  int w_, rows_;
  std::uint32_t *iters_;
  float *mag2_;
  double re0_, dre_;
  // Per-thread scratch, reused across blocks.
  static inline thread_local std::vector<double> im_;
  static inline thread_local std::vector<std::uint8_t> state_;
  static inline thread_local std::vector<Seg> segs_;
  static inline thread_local std::vector<int> xs_, rs_;
  static inline thread_local std::vector<double> ims_;
  static inline thread_local std::vector<std::uint32_t> it_;
  static inline thread_local std::vector<float> m2_;
};

} // namespace

void count_region(const RenderRequest &req, int y0, int y1, std::uint32_t *iters, float *mag2,
                  RenderStats &stats) {
  const Viewport &v = req.view;
  const int rows = y1 - y0;
  if (rows <= 0) return;
  if (req.fill && req.max_iter >= kMinFillIter && rows >= kMinSide && v.pixel_width >= kMinSide) {
    Filler(req, y0, y1, iters, mag2).run(stats);
    return;
  }
  thread_local std::vector<double> im;
  im.resize(static_cast<std::size_t>(rows));
  for (int r = 0; r < rows; ++r)
    im[static_cast<std::size_t>(r)] = v.im_at(y0 + r);
  count_points(
      req, {v.re_at(0), v.pixel_size(), im.data(), rows, v.pixel_width, req.max_iter, iters, mag2});
  const std::size_t n = static_cast<std::size_t>(rows) * static_cast<std::size_t>(v.pixel_width);
  for (std::size_t k = 0; k < n; ++k)
    stats.computed += iters[k];
}

} // namespace overdrive::detail
