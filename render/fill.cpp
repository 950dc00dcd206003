// Escape counts of a block of rows, with rectangle filling (Mariani-Silver) for interior regions.
//
// When it is used: for every render_rows() call with req.fill (the default) on a block of at
// least kMinSide x kMinSide pixels; otherwise (req.fill false, or a thin block) the rows go to the
// kernel in one plain call. Only *interior* is filled: if every pixel on the border of a
// rectangle has count max_iter, its inside is set to max_iter without computing it (the
// Mandelbrot set, and each of its finite-iteration approximations {c : |z_k| <= 2, k <= N}, has
// no holes). Regions of equal escape count are NOT filled: smooth colouring depends on |z|^2 at
// escape, which differs between pixels of equal count, so filling them would change the picture.
//
// Exactness: every pixel that is computed gets exactly the c and count of the plain render (a
// kernel row starting at column x0 reproduces c = re0 + x * dre of column x only when the
// arithmetic is exact, which count_segments() checks per segment; otherwise it computes the
// segment column by column, where c is reproduced exactly). A filled pixel can differ from the
// plain render only where an escaping filament of the sampled picture passes between two border
// pixels without touching one (sub-pixel detail of a pinched neck); the tests measure this on
// several scenes (Render.FillMatchesPlain*) and allow at most 1e-4 of the pixels.
#include "render/fill.hpp"

#include <algorithm>
#include <cassert>
#include <vector>

namespace overdrive::detail {

void count_points(const RenderRequest &req, const RowsJob &job) {
  run_kernel_rows(job, req.precision, req.isa);
}

namespace {

/// Rectangles with a side below this are computed, not split further (their border would be
/// most of them); blocks thinner than this are rendered plainly.
constexpr int kMinSide = 12;

/// c of pixel column x exactly as a kernel row starting at column 0 computes it (no FMA: this
/// file is built with -ffp-contract=off).
double re_of(double re0, double dre, int x) {
  return re0 + static_cast<double>(x) * dre;
}

class Filler {
public:
  Filler(const RenderRequest &req, int y0, int y1, std::uint32_t *iters, float *mag2)
      : req_(req), w_(req.view.pixel_width), rows_(y1 - y0), iters_(iters), mag2_(mag2),
        re0_(req.view.re_at(0)), dre_(req.view.pixel_size()),
        state_(static_cast<std::size_t>(w_) * static_cast<std::size_t>(rows_), kUnknown) {
    im_.reserve(static_cast<std::size_t>(rows_));
    for (int r = 0; r < rows_; ++r)
      im_.push_back(req.view.im_at(y0 + r));
  }

  void run(RenderStats &stats) {
    const auto max_iter = static_cast<std::uint32_t>(req_.max_iter);
    std::vector<Rect> active{{0, w_ - 1, 0, rows_ - 1}}, next;
    while (!active.empty()) {
      for (const Rect &r : active) {
        want(r.r0, r.x0, r.x1 + 1);
        want(r.r1, r.x0, r.x1 + 1);
        for (int y = r.r0 + 1; y < r.r1; ++y) {
          want(y, r.x0, r.x0 + 1);
          want(y, r.x1, r.x1 + 1);
        }
      }
      flush(stats);
      next.clear();
      for (const Rect &r : active) {
        if (r.x1 - r.x0 < 2 || r.r1 - r.r0 < 2) continue; // no inside
        if (border_interior(r, max_iter)) {
          for (int y = r.r0 + 1; y < r.r1; ++y)
            for (int x = r.x0 + 1; x < r.x1; ++x) {
              const std::size_t i = at(y, x);
              iters_[i] = max_iter;
              mag2_[i] = 0.0f;
              state_[i] = kFilled;
              ++stats.filled;
            }
          continue;
        }
        const bool split_x = r.x1 - r.x0 + 1 >= 2 * kMinSide;
        const bool split_y = r.r1 - r.r0 + 1 >= 2 * kMinSide;
        if (!split_x && !split_y) {
          for (int y = r.r0 + 1; y < r.r1; ++y)
            want(y, r.x0 + 1, r.x1);
          continue;
        }
        const int xm = split_x ? (r.x0 + r.x1) / 2 : r.x1;
        const int rm = split_y ? (r.r0 + r.r1) / 2 : r.r1;
        next.push_back({r.x0, xm, r.r0, rm});
        if (split_x) next.push_back({xm, r.x1, r.r0, rm});
        if (split_y) next.push_back({r.x0, xm, rm, r.r1});
        if (split_x && split_y) next.push_back({xm, r.x1, rm, r.r1});
      }
      std::swap(active, next);
    }
    flush(stats); // the last leaves
  }

private:
  static constexpr std::uint8_t kUnknown = 0, kComputed = 1, kFilled = 2;
  struct Rect {
    int x0, x1, r0, r1; // inclusive
  };
  struct Seg {
    int x0, x1, r; // pixels [x0, x1) of block row r
    bool operator<(const Seg &o) const {
      return x0 != o.x0 ? x0 < o.x0 : x1 != o.x1 ? x1 < o.x1 : r < o.r;
    }
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

  // Queues the unknown pixels of [x0, x1) on block row r, in runs.
  void want(int r, int x0, int x1) {
    int x = x0;
    while (x < x1) {
      while (x < x1 && state_[at(r, x)] != kUnknown)
        ++x;
      const int a = x;
      while (x < x1 && state_[at(r, x)] == kUnknown)
        state_[at(r, x++)] = kComputed;
      if (x > a) segs_.push_back({a, x, r});
    }
  }

  // Counts the queued segments: one kernel call per distinct [x0, x1) (all its rows at once).
  void flush(RenderStats &stats) {
    std::sort(segs_.begin(), segs_.end());
    for (std::size_t i = 0; i < segs_.size();) {
      std::size_t j = i;
      while (j < segs_.size() && segs_[j].x0 == segs_[i].x0 && segs_[j].x1 == segs_[i].x1)
        ++j;
      count_segments(segs_[i].x0, segs_[i].x1, i, j, stats);
      i = j;
    }
    segs_.clear();
  }

  // Counts pixels [x0, x1) of the rows of segs_[i, j).
  void count_segments(int x0, int x1, std::size_t i, std::size_t j, RenderStats &stats) {
    const int n = x1 - x0, rows = static_cast<int>(j - i);
    ims_.clear();
    for (std::size_t s = i; s < j; ++s)
      ims_.push_back(im_[static_cast<std::size_t>(segs_[s].r)]);
    const auto total = static_cast<std::size_t>(n) * static_cast<std::size_t>(rows);
    it_.resize(total);
    m2_.resize(total);
    const double start = re_of(re0_, dre_, x0);
    bool exact = true;
    for (int k = 1; k < n && exact; ++k)
      exact = re_of(start, dre_, k) == re_of(re0_, dre_, x0 + k);
    if (exact) {
      count_points(req_,
                   {start, dre_, ims_.data(), rows, n, req_.max_iter, it_.data(), m2_.data()});
    } else {
      // Column by column: a one-pixel row at c = re_of(re0, dre, x) is that pixel exactly.
      for (int k = 0; k < n; ++k) {
        auto *ci = it_.data() + static_cast<std::size_t>(k) * static_cast<std::size_t>(rows);
        auto *cm = m2_.data() + static_cast<std::size_t>(k) * static_cast<std::size_t>(rows);
        count_points(
            req_, {re_of(re0_, dre_, x0 + k), dre_, ims_.data(), rows, 1, req_.max_iter, ci, cm});
      }
    }
    for (int s = 0; s < rows; ++s)
      for (int k = 0; k < n; ++k) {
        // Row-major (exact) or column-major (column by column) scratch.
        const std::size_t from =
            exact ? static_cast<std::size_t>(s) * static_cast<std::size_t>(n) +
                        static_cast<std::size_t>(k)
                  : static_cast<std::size_t>(k) * static_cast<std::size_t>(rows) +
                        static_cast<std::size_t>(s);
        const std::size_t to = at(segs_[i + static_cast<std::size_t>(s)].r, x0 + k);
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
  std::vector<double> im_;
  std::vector<std::uint8_t> state_;
  std::vector<Seg> segs_;
  std::vector<double> ims_;
  std::vector<std::uint32_t> it_;
  std::vector<float> m2_;
};

} // namespace

void count_region(const RenderRequest &req, int y0, int y1, std::uint32_t *iters, float *mag2,
                  RenderStats &stats) {
  const Viewport &v = req.view;
  const int rows = y1 - y0;
  if (rows <= 0) return;
  if (req.fill && rows >= kMinSide && v.pixel_width >= kMinSide) {
    Filler(req, y0, y1, iters, mag2).run(stats);
    return;
  }
  std::vector<double> im(static_cast<std::size_t>(rows));
  for (int r = 0; r < rows; ++r)
    im[static_cast<std::size_t>(r)] = v.im_at(y0 + r);
  count_points(
      req, {v.re_at(0), v.pixel_size(), im.data(), rows, v.pixel_width, req.max_iter, iters, mag2});
  const std::size_t n = static_cast<std::size_t>(rows) * static_cast<std::size_t>(v.pixel_width);
  for (std::size_t k = 0; k < n; ++k)
    stats.computed += iters[k];
}

} // namespace overdrive::detail
