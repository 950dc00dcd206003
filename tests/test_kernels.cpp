// Kernels: every SIMD path and precision against an independent long double loop and known escape
// counts, rows batched against row by row, ISA dispatch against /proc/cpuinfo, interior skipping,
// row tails and iteration-count edge cases.
#include "common/require_isa.hpp"
#include "common/stb_decode.hpp"
#include "render/render.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <doctest/doctest.h>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

using namespace overdrive;
using overdrive::test::require_isa;

namespace {

struct Counts {
  std::vector<std::uint32_t> iters;
  std::vector<float> mag2;
};

// The textbook loop, written out here so that no expectation shares code with the kernels: z
// starts at 0, z <- z^2 + c in long double (64-bit mantissa on x86-64, 11 bits more than the
// f64 kernels), escape once |z|^2 > 4. Returns the escape iteration (max_iter if none) and
// |z|^2 then.
std::pair<std::uint32_t, long double> naive_escape(long double cr, long double ci, int max_iter) {
  long double zr = 0, zi = 0;
  for (int n = 1; n <= max_iter; ++n) {
    const long double r = zr * zr - zi * zi + cr;
    zi = 2 * zr * zi + ci;
    zr = r;
    const long double m = zr * zr + zi * zi;
    if (m > 4) return {static_cast<std::uint32_t>(n), m};
  }
  return {static_cast<std::uint32_t>(max_iter), 0};
}

// The points of pixel k of a row, as RowJob defines them (re0 + k * dre in double); the f32
// kernels round c to float first, and so does the expectation for them.
long double point(double x, Precision p) {
  return p == Precision::F32 ? static_cast<long double>(static_cast<float>(x))
                             : static_cast<long double>(x);
}

// Counts of a w x h view by the naive loop (computed once per view, iterations and precision).
const Counts &naive_view(const Viewport &v, int max_iter, Precision p) {
  static std::map<std::tuple<double, double, double, int, int, int, int>, Counts> cache;
  const auto key = std::tuple{v.center_re,
                              v.center_im,
                              v.width,
                              v.pixel_width,
                              v.pixel_height,
                              max_iter,
                              static_cast<int>(p.kind())};
  if (const auto it = cache.find(key); it != cache.end()) return it->second;
  Counts c;
  for (int y = 0; y < v.pixel_height; ++y)
    for (int k = 0; k < v.pixel_width; ++k) {
      const auto [n, m] =
          naive_escape(point(v.re_at(0) + k * v.pixel_size(), p), point(v.im_at(y), p), max_iter);
      c.iters.push_back(n);
      c.mag2.push_back(static_cast<float>(m));
    }
  return cache.emplace(key, std::move(c)).first->second;
}

// Counts of a w x h view, row by row through run_kernel.
Counts run_view(const Viewport &v, int max_iter, Precision p, Isa isa, KernelOptions opt = {}) {
  const auto w = static_cast<std::size_t>(v.pixel_width);
  Counts c{std::vector<std::uint32_t>(w * static_cast<std::size_t>(v.pixel_height)),
           std::vector<float>(w * static_cast<std::size_t>(v.pixel_height))};
  for (int y = 0; y < v.pixel_height; ++y)
    run_kernel({v.re_at(0), v.pixel_size(), v.im_at(y), v.pixel_width, max_iter,
                c.iters.data() + static_cast<std::size_t>(y) * w,
                c.mag2.data() + static_cast<std::size_t>(y) * w},
               p, isa, opt);
  return c;
}

// Counts of a w x h view, row by row through kernel_reference.
Counts reference_view(const Viewport &v, int max_iter) {
  const auto w = static_cast<std::size_t>(v.pixel_width);
  Counts c{std::vector<std::uint32_t>(w * static_cast<std::size_t>(v.pixel_height)),
           std::vector<float>(w * static_cast<std::size_t>(v.pixel_height))};
  for (int y = 0; y < v.pixel_height; ++y)
    kernel_reference({v.re_at(0), v.pixel_size(), v.im_at(y), v.pixel_width, max_iter,
                      c.iters.data() + static_cast<std::size_t>(y) * w,
                      c.mag2.data() + static_cast<std::size_t>(y) * w});
  return c;
}

std::size_t mismatches(const Counts &a, const Counts &b) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < a.iters.size(); ++i)
    n += a.iters[i] != b.iters[i];
  return n;
}

const Viewport full_view{-0.5, 0.0, 3.0, 512, 512};
// Outside the set, away from its boundary: no chaotic pixels, counts 2..20.
const Viewport calm_tile{-1.2, 0.75, 0.25, 96, 96};

void matches_reference(Isa isa, Precision p) {
  if (!require_isa(isa)) return;
  const Counts &ref = naive_view(full_view, 1000, p);
  const Counts &tref = naive_view(calm_tile, 2000, p);
  for (const bool skip : {false, true}) {
    CAPTURE(skip);
    const Counts got = run_view(full_view, 1000, p, isa, KernelOptions{skip});
    const double frac =
        static_cast<double>(mismatches(ref, got)) / static_cast<double>(ref.iters.size());
    MESSAGE(to_string(isa) << " " << to_string(p) << " skip=" << skip
                           << " full-view mismatch fraction " << frac);
    // Chaotic pixels on the boundary flip with the last bit of rounding (and with FMA
    // contraction in the SIMD kernels); f32 rounds 2^29 times more coarsely than f64. Measured
    // against the long double loop: f64 6.9e-5 (scalar) and 7.6e-5 (SIMD), f32 2.2e-3.
    CHECK(frac < (p == Precision::F64 ? 2e-4 : 1e-2));
    const Counts tgot = run_view(calm_tile, 2000, p, isa, KernelOptions{skip});
    CHECK(mismatches(tref, tgot) == 0);
    // Smooth colouring needs |z|^2 at escape: the same to float rounding where counts agree and
    // the orbit is not chaotic (the calm tile).
    std::size_t bad_mag = 0;
    for (std::size_t i = 0; i < tref.iters.size(); ++i)
      if (tref.iters[i] < 2000u && std::abs(tref.mag2[i] - tgot.mag2[i]) > 1e-3f * tref.mag2[i])
        ++bad_mag;
    CHECK(bad_mag == 0);
  }
}

void odd_rows(Isa isa, Precision p) {
  if (!require_isa(isa)) return;
  for (const int n : {1, 2, 7, 13, 17, 33, 100, 1000}) {
    for (const int max_iter : {1, 2, 3, 9, 25, 300}) {
      CAPTURE(n);
      CAPTURE(max_iter);
      // A row through the set and its boundary, so tails mix fast and slow pixels.
      const Viewport v{-0.75, 0.1, 2.6, n, 1};
      const Counts &ref = naive_view(v, max_iter, p);
      const Counts got = run_view(v, max_iter, p, isa);
      const Counts noskip = run_view(v, max_iter, p, isa, KernelOptions{false});
      CHECK(mismatches(ref, got) <= static_cast<std::size_t>(n) / 500);
      CHECK(mismatches(ref, noskip) <= static_cast<std::size_t>(n) / 500);
    }
  }
}

// Escape counts worked out independently (Python's decimal module at 200 digits, for both the
// decimal value and the nearest double; the two agree), 0 = never escapes.
struct KnownPoint {
  double re, im;
  std::uint32_t escape;
};
const KnownPoint known_points[] = {
    {0.0, 0.0, 0},        // main cardioid (skipped)
    {-1.0, 0.0, 0},       // period-2 bulb (skipped): 0, -1, 0, -1, ...
    {-2.0, 0.0, 0},       // tip of the set: -2, 2, 2, 2, ... (|z| = 2 is not beyond)
    {0.0, 1.0, 0},        // i, -1+i, -i, -1+i, ...: bounded, not skipped
    {-0.1226, 0.7449, 0}, // period-3 bulb (iterated)
    {0.3, 0.5, 0},        // a bulb on the cardioid (iterated)
    {0.2, 0.1, 0},        // main cardioid (skipped)
    {1.0, 0.0, 3},        // 1, 2, 5
    {0.5, 0.0, 5},        // 0.5, 0.75, 1.0625, 1.6289, 3.1533
    {0.0, 2.0, 2},        // 2i (|z| = 2, not beyond), -4 + 2i
    {3.0, 3.0, 1},        // far outside
    {-0.1, 0.65, 75},     // just outside the period-3 bulb
    {0.26, 0.0, 30},      // past the cusp: slow
    {0.2501, 0.0, 312},   // just past the cusp: about pi / sqrt(1e-4) iterations
    {-0.75, 0.1, 33},     // in the neck between cardioid and bulb: about pi / 0.1
    {-0.75, 0.01, 315},   // deeper in the neck: about pi / 0.01
};

void known_counts(Isa isa, Precision p, bool skip) {
  for (const KnownPoint &pt : known_points)
    for (const int max_iter : {1, 2, 50, 5000}) {
      CAPTURE(pt.re);
      CAPTURE(pt.im);
      CAPTURE(max_iter);
      // f32 rounds c to float and iterates in float: the slow escapes past the cusp and in the
      // neck are where its counts drift, so they are checked in f64 only.
      if (p == Precision::F32 && pt.escape > 100) continue;
      const auto want = pt.escape == 0 ? static_cast<std::uint32_t>(max_iter)
                                       : std::min(pt.escape, static_cast<std::uint32_t>(max_iter));
      std::uint32_t got = 0xdeadbeefu;
      float m = -1;
      run_kernel({pt.re, 0.0, pt.im, 1, max_iter, &got, &m}, p, isa, KernelOptions{skip});
      CHECK(got == want);
    }
}

void interior_points(Isa isa, Precision p) {
  if (!require_isa(isa)) return;
  for (const bool skip : {false, true}) {
    CAPTURE(skip);
    known_counts(isa, p, skip);
  }
}

// run_kernel_rows must give exactly (bitwise, counts and |z|^2) what one row at a time gives,
// whatever the batch: the SIMD kernels' lanes mix pixels of different rows. For the scalar path
// "one row at a time" is kernel_reference called directly, not through run_kernel_rows.
void rows_match_rows(Isa isa, Precision p) {
  if (!require_isa(isa)) return;
  struct Case {
    Viewport v;
    int max_iter;
  };
  const Case cases[] = {{{-0.5, 0.0, 3.0, 97, 61}, 300},
                        {{-0.5, 0.0, 3.0, 1, 40}, 50},
                        {{-0.1, 0.0, 0.2, 33, 9}, 200}, // all interior (skipped or iterated)
                        {{-1.2, 0.75, 0.25, 40, 30}, 2000},
                        {{-0.743643887037151, 0.131825904205330, 1e-4, 64, 48}, 3000},
                        {{-0.75, 0.1, 2.6, 17, 23}, 3}};
  for (const Case &c : cases)
    for (const bool skip : {false, true}) {
      CAPTURE(c.v.pixel_width);
      CAPTURE(c.max_iter);
      CAPTURE(skip);
      const auto w = static_cast<std::size_t>(c.v.pixel_width);
      const Counts want = isa == Isa::Scalar && p == Precision::F64
                              ? reference_view(c.v, c.max_iter)
                              : run_view(c.v, c.max_iter, p, isa, KernelOptions{skip});
      for (const int batch : {1, 2, 7, c.v.pixel_height}) {
        CAPTURE(batch);
        Counts got{std::vector<std::uint32_t>(want.iters.size(), 0xdeadbeefu),
                   std::vector<float>(want.mag2.size(), -1.0f)};
        for (int y0 = 0; y0 < c.v.pixel_height; y0 += batch) {
          const int rows = std::min(batch, c.v.pixel_height - y0);
          std::vector<double> im(static_cast<std::size_t>(rows));
          for (int r = 0; r < rows; ++r)
            im[static_cast<std::size_t>(r)] = c.v.im_at(y0 + r);
          const std::size_t off = static_cast<std::size_t>(y0) * w;
          run_kernel_rows({c.v.re_at(0), c.v.pixel_size(), im.data(), rows, c.v.pixel_width,
                           c.max_iter, got.iters.data() + off, got.mag2.data() + off},
                          p, isa, KernelOptions{skip});
        }
        CHECK(mismatches(want, got) == 0);
        std::size_t bad_mag = 0;
        for (std::size_t i = 0; i < want.iters.size(); ++i)
          if (want.iters[i] < static_cast<std::uint32_t>(c.max_iter) && want.mag2[i] != got.mag2[i])
            ++bad_mag;
        CHECK(bad_mag == 0);
      }
    }
}

// A job over some columns of a row (RowJob::k0, kstep) counts exactly the points of those
// columns of the whole row's job: a segment, a strided grid line, on a view whose pixel size is
// not a power of two (so re0 + k0 * dre as a new origin would round differently).
void columns_match_row(Isa isa, Precision p) {
  if (!require_isa(isa)) return;
  const Viewport v{-0.743643887037151, 0.131825904205330, 1e-5, 300, 24};
  const int max_iter = 4000;
  const auto w = static_cast<std::size_t>(v.pixel_width);
  struct Slice {
    int k0, n, kstep;
  };
  const Slice slices[] = {{0, 300, 1}, {37, 100, 1}, {1, 299, 1}, {5, 42, 7},
                          {63, 4, 64}, {299, 1, 1},  {150, 17, 3}};
  for (const bool skip : {false, true})
    for (const bool per : {false, true}) {
      CAPTURE(skip);
      CAPTURE(per);
      const KernelOptions opt{skip, per};
      const Counts want = run_view(v, max_iter, p, isa, opt);
      std::vector<double> im(static_cast<std::size_t>(v.pixel_height));
      for (int r = 0; r < v.pixel_height; ++r)
        im[static_cast<std::size_t>(r)] = v.im_at(r);
      for (const Slice &s : slices) {
        CAPTURE(s.k0);
        CAPTURE(s.kstep);
        const auto n = static_cast<std::size_t>(s.n);
        Counts got{std::vector<std::uint32_t>(n * im.size(), 0xdeadbeefu),
                   std::vector<float>(n * im.size(), -1.0f)};
        run_kernel_rows({v.re_at(0), v.pixel_size(), im.data(), v.pixel_height, s.n, max_iter,
                         got.iters.data(), got.mag2.data(), s.k0, s.kstep},
                        p, isa, opt);
        std::size_t bad = 0, bad_mag = 0;
        for (std::size_t r = 0; r < im.size(); ++r)
          for (std::size_t k = 0; k < n; ++k) {
            const std::size_t a =
                r * w + static_cast<std::size_t>(s.k0 + static_cast<int>(k) * s.kstep);
            const std::size_t b = r * n + k;
            bad += want.iters[a] != got.iters[b];
            bad_mag +=
                want.iters[a] < static_cast<std::uint32_t>(max_iter) && want.mag2[a] != got.mag2[b];
          }
        CHECK(bad == 0);
        CHECK(bad_mag == 0);
        // One row through run_kernel too (its RowJob carries k0 and kstep as well).
        std::vector<std::uint32_t> it(n);
        std::vector<float> m2(n);
        run_kernel(
            {v.re_at(0), v.pixel_size(), im[3], s.n, max_iter, it.data(), m2.data(), s.k0, s.kstep},
            p, isa, opt);
        std::size_t bad_row = 0;
        for (std::size_t k = 0; k < n; ++k)
          bad_row +=
              want.iters[3 * w + static_cast<std::size_t>(s.k0 + static_cast<int>(k) * s.kstep)] !=
              it[k];
        CHECK(bad_row == 0);
      }
    }
}

// The instruction sets this CPU and kernel offer, read from /proc/cpuinfo: independent of the
// compiler's __builtin_cpu_supports that the dispatcher uses.
Isa cpuinfo_best() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("flags", 0) != 0) continue;
    std::istringstream words(line.substr(line.find(':') + 1));
    std::set<std::string> f;
    for (std::string w; words >> w;)
      f.insert(w);
    const bool avx2 = f.count("avx2") && f.count("fma");
    if (avx2 && f.count("avx512f") && f.count("avx512dq") && f.count("avx512vl"))
      return Isa::Avx512;
    return avx2 ? Isa::Avx2 : Isa::Scalar;
  }
  FAIL("no flags line in /proc/cpuinfo");
  return Isa::Scalar;
}

int rank(Isa isa) {
  return isa == Isa::Scalar ? 0 : isa == Isa::Avx2 ? 1 : isa == Isa::Avx512 ? 2 : 3;
}

} // namespace

TEST_CASE("Kernel.RowsMatchRowByRow.scalar") {
  rows_match_rows(Isa::Scalar, Precision::F64);
}
TEST_CASE("Kernel.RowsMatchRowByRow.avx2") {
  rows_match_rows(Isa::Avx2, Precision::F64);
}
TEST_CASE("Kernel.RowsMatchRowByRow.avx512") {
  rows_match_rows(Isa::Avx512, Precision::F64);
}
TEST_CASE("Kernel.RowsMatchRowByRow.avx2.f32") {
  rows_match_rows(Isa::Avx2, Precision::F32);
}
TEST_CASE("Kernel.RowsMatchRowByRow.avx512.f32") {
  rows_match_rows(Isa::Avx512, Precision::F32);
}

TEST_CASE("Kernel.ColumnsMatchTheirRow.scalar") {
  columns_match_row(Isa::Scalar, Precision::F64);
}
TEST_CASE("Kernel.ColumnsMatchTheirRow.avx2") {
  columns_match_row(Isa::Avx2, Precision::F64);
}
TEST_CASE("Kernel.ColumnsMatchTheirRow.avx512") {
  columns_match_row(Isa::Avx512, Precision::F64);
}
TEST_CASE("Kernel.ColumnsMatchTheirRow.scalar.f32") {
  columns_match_row(Isa::Scalar, Precision::F32);
}
TEST_CASE("Kernel.ColumnsMatchTheirRow.avx2.f32") {
  columns_match_row(Isa::Avx2, Precision::F32);
}
TEST_CASE("Kernel.ColumnsMatchTheirRow.avx512.f32") {
  columns_match_row(Isa::Avx512, Precision::F32);
}

TEST_CASE("Kernel.MatchesReference.scalar") {
  matches_reference(Isa::Scalar, Precision::F64);
}
TEST_CASE("Kernel.MatchesReference.avx2") {
  matches_reference(Isa::Avx2, Precision::F64);
}
TEST_CASE("Kernel.MatchesReference.avx512") {
  matches_reference(Isa::Avx512, Precision::F64);
}
TEST_CASE("Kernel.MatchesReference.scalar.f32") {
  matches_reference(Isa::Scalar, Precision::F32);
}
TEST_CASE("Kernel.MatchesReference.avx2.f32") {
  matches_reference(Isa::Avx2, Precision::F32);
}
TEST_CASE("Kernel.MatchesReference.avx512.f32") {
  matches_reference(Isa::Avx512, Precision::F32);
}

TEST_CASE("Kernel.OddRowLengths.scalar") {
  odd_rows(Isa::Scalar, Precision::F64);
}
TEST_CASE("Kernel.OddRowLengths.avx2") {
  odd_rows(Isa::Avx2, Precision::F64);
}
TEST_CASE("Kernel.OddRowLengths.avx512") {
  odd_rows(Isa::Avx512, Precision::F64);
}
TEST_CASE("Kernel.OddRowLengths.scalar.f32") {
  odd_rows(Isa::Scalar, Precision::F32);
}
TEST_CASE("Kernel.OddRowLengths.avx2.f32") {
  odd_rows(Isa::Avx2, Precision::F32);
}
TEST_CASE("Kernel.OddRowLengths.avx512.f32") {
  odd_rows(Isa::Avx512, Precision::F32);
}

TEST_CASE("Kernel.InteriorAndEdgePoints.scalar") {
  interior_points(Isa::Scalar, Precision::F64);
}
TEST_CASE("Kernel.InteriorAndEdgePoints.avx2") {
  interior_points(Isa::Avx2, Precision::F64);
}
TEST_CASE("Kernel.InteriorAndEdgePoints.avx512") {
  interior_points(Isa::Avx512, Precision::F64);
}
TEST_CASE("Kernel.InteriorAndEdgePoints.scalar.f32") {
  interior_points(Isa::Scalar, Precision::F32);
}
TEST_CASE("Kernel.InteriorAndEdgePoints.avx2.f32") {
  interior_points(Isa::Avx2, Precision::F32);
}
TEST_CASE("Kernel.InteriorAndEdgePoints.avx512.f32") {
  interior_points(Isa::Avx512, Precision::F32);
}

TEST_CASE("Kernel.NaiveLoopGivesTheKnownCounts") {
  // The expectation of the tests above, checked against the counts worked out by hand.
  for (const KnownPoint &pt : known_points) {
    CAPTURE(pt.re);
    CAPTURE(pt.im);
    CHECK(naive_escape(pt.re, pt.im, 20000).first == (pt.escape ? pt.escape : 20000u));
  }
}

TEST_CASE("Kernel.SkippingInteriorKeepsReferenceCounts") {
  // The scalar path with skipping is the reference loop plus a test that only answers points
  // that never escape, so counts must be identical, not just close.
  const Counts ref = reference_view(full_view, 300);
  const Counts got =
      run_view(full_view, 300, Precision::F64, Isa::Scalar, KernelOptions{true, false});
  CHECK(mismatches(ref, got) == 0);
}

// ---- periodicity detection -------------------------------------------------------------------

namespace {

// The three scenes of the periodicity bound: the full view, the seahorse valley (its centre holds
// a period-39 mini-set, 7% of the pixels, each run to 20000 iterations without periodicity) and
// a deep view beside that mini-set's cardioid (nucleus -0.7436423016578859 + 0.1318265198125947i,
// found by Newton's method), where most pixels are interior or escape slowly.
struct PerScene {
  const char *name;
  Viewport view;
  int max_iter;
};
const PerScene per_scenes[] = {
    {"full", {-0.5, 0.0, 3.0, 1024, 1024}, 1000},
    {"seahorse", {-0.743643887037151, 0.131825904205330, 1e-5, 1024, 1024}, 20000},
    {"deep", {-0.7436423016578859 + 1.2e-6, 0.13182651981259472, 4e-6, 256, 256}, 10000},
};

// Counts of a scene by the batched path (run_kernel_rows, as render_rows calls it).
Counts rows_view(const Viewport &v, int max_iter, Precision p, Isa isa, KernelOptions opt) {
  const auto n = static_cast<std::size_t>(v.pixel_width) * static_cast<std::size_t>(v.pixel_height);
  Counts c{std::vector<std::uint32_t>(n), std::vector<float>(n)};
  std::vector<double> im(static_cast<std::size_t>(v.pixel_height));
  for (int y = 0; y < v.pixel_height; ++y)
    im[static_cast<std::size_t>(y)] = v.im_at(y);
  run_kernel_rows({v.re_at(0), v.pixel_size(), im.data(), v.pixel_height, v.pixel_width, max_iter,
                   c.iters.data(), c.mag2.data()},
                  p, isa, opt);
  return c;
}

// kernel_reference's counts of a scene, computed once per test process.
const Counts &reference_scene(const PerScene &s) {
  static std::map<std::string, Counts> cache;
  if (const auto it = cache.find(s.name); it != cache.end()) return it->second;
  return cache.emplace(s.name, reference_view(s.view, s.max_iter)).first->second;
}

std::size_t interior_count(const Counts &c, int max_iter) {
  return static_cast<std::size_t>(
      std::count(c.iters.begin(), c.iters.end(), static_cast<std::uint32_t>(max_iter)));
}

// Periodicity on (the default) against the same kernel with it off, on every scene: counts
// differ on fewer than 1e-4 of the pixels. For the scalar f64 path "off" is kernel_reference
// itself; the SIMD kernels use FMA, so against kernel_reference they already differ on chaotic
// boundary pixels without periodicity (Kernel.MatchesReference bounds that), and the bound here
// is periodicity's own share. The reference must also have interior pixels to find (else the
// scene tests nothing) and periodicity must not answer fewer of them.
void periodicity_bound(Isa isa, Precision p) {
  if (!require_isa(isa)) return;
  for (const PerScene &s : per_scenes) {
    CAPTURE(std::string(s.name));
    Viewport v = s.view;
    if (p == Precision::F32) v.pixel_width = v.pixel_height = std::min(v.pixel_width, 512);
    const KernelOptions off{true, false};
    const Counts base = p == Precision::F64 && isa == Isa::Scalar
                            ? reference_scene(s)
                            : rows_view(v, s.max_iter, p, isa, off);
    const Counts got = rows_view(v, s.max_iter, p, isa, KernelOptions{});
    const std::size_t bad = mismatches(base, got);
    const double frac = static_cast<double>(bad) / static_cast<double>(base.iters.size());
    MESSAGE(to_string(isa) << " " << to_string(p) << " " << std::string(s.name) << ": " << bad
                           << " mismatches (" << frac << "), interior "
                           << interior_count(base, s.max_iter));
    CHECK(interior_count(base, s.max_iter) > base.iters.size() / 100);
    CHECK(frac < 1e-4);
    // Mismatches are escaping points answered as interior, never the other way round.
    for (std::size_t i = 0; i < base.iters.size(); ++i)
      if (base.iters[i] != got.iters[i])
        CHECK(got.iters[i] == static_cast<std::uint32_t>(s.max_iter));
    // The SIMD kernels against kernel_reference, with periodicity: the FMA share plus its own.
    if (p == Precision::F64 && isa != Isa::Scalar && s.view == v)
      MESSAGE("  against kernel_reference: " << mismatches(reference_scene(s), got));
  }
}

// Points built to fool a naive periodicity check: orbits that crawl for hundreds of iterations
// with tiny steps and then escape. c = 1/4 + eps, just outside the cusp of the main cardioid,
// moves by at least eps per step near z = 1/2 and escapes after about pi / sqrt(eps) steps;
// c = -3/4 + eps i, in the neck between the cardioid and the period-2 bulb, after about pi / eps.
// A tolerance of one pixel of the full view (3/1024) would call both interior. Each sits at
// pixel 0 of a row with the full view's pixel size, so the kernel's tolerance is what it uses
// there.
struct FoolingPoint {
  double re, im;
};
const FoolingPoint fooling_points[] = {
    {0.25 + 2e-5, 0.0}, {0.25 + 1e-4, 0.0}, {-0.75, 5e-3}, {-0.75, 2e-3}};

void fooling_points_escape(Isa isa, Precision p) {
  if (!require_isa(isa)) return;
  constexpr int max_iter = 5000;
  constexpr int n = 8;
  for (const FoolingPoint &pt : fooling_points) {
    CAPTURE(pt.re);
    CAPTURE(pt.im);
    std::uint32_t want[n], got[n];
    float m[n];
    const RowJob off{pt.re, 3.0 / 1024, pt.im, n, max_iter, want, m};
    const RowJob on{pt.re, 3.0 / 1024, pt.im, n, max_iter, got, m};
    run_kernel(off, p, isa, KernelOptions{true, false});
    run_kernel(on, p, isa, KernelOptions{});
    CHECK(want[0] > 100u);                                 // a slow escape ...
    CHECK(want[0] < static_cast<std::uint32_t>(max_iter)); // ... but an escape
    CHECK(got[0] == want[0]);
    if (p == Precision::F64) {
      // The long double loop agrees that the point escapes, near the same iteration.
      const auto expect = naive_escape(pt.re, pt.im, max_iter).first;
      CHECK(std::abs(static_cast<double>(expect) - static_cast<double>(want[0])) < 0.01 * expect);
    }
  }
}

// With periodicity off every kernel path is back to its exact counts: the scalar path equals
// kernel_reference bit for bit, with and without interior skipping, on the deep view where
// periodicity would answer many pixels.
void periodicity_off_exact(Isa isa, Precision p) {
  if (!require_isa(isa)) return;
  const PerScene &s = per_scenes[2];
  const Counts ref = p == Precision::F64 && isa == Isa::Scalar
                         ? reference_scene(s)
                         : rows_view(s.view, s.max_iter, p, isa, KernelOptions{false, false});
  for (const bool skip : {false, true}) {
    CAPTURE(skip);
    const Counts got = rows_view(s.view, s.max_iter, p, isa, KernelOptions{skip, false});
    CHECK(mismatches(ref, got) == 0);
    // Row by row (one row per call) gives the same counts as batches, with periodicity too.
    const Counts on = rows_view(s.view, s.max_iter, p, isa, KernelOptions{skip, true});
    const Counts on_rows = run_view(s.view, s.max_iter, p, isa, KernelOptions{skip, true});
    CHECK(mismatches(on, on_rows) == 0);
  }
}

} // namespace

TEST_CASE("Kernel.PeriodicityWithinBound.scalar") {
  periodicity_bound(Isa::Scalar, Precision::F64);
}
TEST_CASE("Kernel.PeriodicityWithinBound.avx2") {
  periodicity_bound(Isa::Avx2, Precision::F64);
}
TEST_CASE("Kernel.PeriodicityWithinBound.avx512") {
  periodicity_bound(Isa::Avx512, Precision::F64);
}
TEST_CASE("Kernel.PeriodicityWithinBound.scalar.f32") {
  periodicity_bound(Isa::Scalar, Precision::F32);
}
TEST_CASE("Kernel.PeriodicityWithinBound.avx2.f32") {
  periodicity_bound(Isa::Avx2, Precision::F32);
}
TEST_CASE("Kernel.PeriodicityWithinBound.avx512.f32") {
  periodicity_bound(Isa::Avx512, Precision::F32);
}
TEST_CASE("Kernel.PeriodicityNotFooledBySlowEscape.scalar") {
  fooling_points_escape(Isa::Scalar, Precision::F64);
}
TEST_CASE("Kernel.PeriodicityNotFooledBySlowEscape.avx2") {
  fooling_points_escape(Isa::Avx2, Precision::F64);
}
TEST_CASE("Kernel.PeriodicityNotFooledBySlowEscape.avx512") {
  fooling_points_escape(Isa::Avx512, Precision::F64);
}
TEST_CASE("Kernel.PeriodicityNotFooledBySlowEscape.scalar.f32") {
  fooling_points_escape(Isa::Scalar, Precision::F32);
}
TEST_CASE("Kernel.PeriodicityNotFooledBySlowEscape.avx2.f32") {
  fooling_points_escape(Isa::Avx2, Precision::F32);
}
TEST_CASE("Kernel.PeriodicityNotFooledBySlowEscape.avx512.f32") {
  fooling_points_escape(Isa::Avx512, Precision::F32);
}
TEST_CASE("Kernel.PeriodicityOffGivesExactCounts.scalar") {
  periodicity_off_exact(Isa::Scalar, Precision::F64);
}
TEST_CASE("Kernel.PeriodicityOffGivesExactCounts.avx2") {
  periodicity_off_exact(Isa::Avx2, Precision::F64);
}
TEST_CASE("Kernel.PeriodicityOffGivesExactCounts.avx512") {
  periodicity_off_exact(Isa::Avx512, Precision::F64);
}

TEST_CASE("Kernel.DispatchIsConsistent") {
  // What the CPU offers according to the kernel's /proc/cpuinfo, not to the code under test.
  const Isa cpu = cpuinfo_best();
  MESSAGE("/proc/cpuinfo: best " << to_string(cpu));
  CHECK(isa_supported(Isa::Auto));
  for (const Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512}) {
    CAPTURE(to_string(isa));
    CHECK(isa_supported(isa) == (rank(isa) <= rank(cpu)));
  }
  // OVERDRIVE_ISA may lower what Auto resolves to, never raise it.
  Isa expect = cpu;
  if (const char *env = std::getenv("OVERDRIVE_ISA"))
    if (const auto forced = parse_isa(env); forced && *forced != Isa::Auto)
      expect = rank(*forced) < rank(cpu) ? *forced : cpu;
  CHECK(to_string(best_isa()) == to_string(expect));
  // Asking for an ISA the CPU lacks still renders (falls back), here checked on one point.
  for (const Isa isa : {Isa::Auto, Isa::Scalar, Isa::Avx2, Isa::Avx512}) {
    std::uint32_t n = 0;
    float m = 0;
    run_kernel({1.0, 0.0, 0.0, 1, 100, &n, &m}, Precision::F64, isa);
    CHECK(n == 3u);
  }
}

namespace {
// CRC-32 of PNG (ISO 3309), bit by bit: an independent check of the encoder's chunk CRCs.
std::uint32_t crc32_bitwise(const std::uint8_t *p, std::size_t n) {
  std::uint32_t c = 0xffffffffu;
  for (std::size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int b = 0; b < 8; ++b)
      c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
  }
  return ~c;
}
// Every chunk after the signature: length, type, data, CRC over type and data.
bool chunk_crcs_valid(const std::vector<std::uint8_t> &png) {
  const auto be32 = [&](std::size_t at) {
    return std::uint32_t{png[at]} << 24 | std::uint32_t{png[at + 1]} << 16 |
           std::uint32_t{png[at + 2]} << 8 | std::uint32_t{png[at + 3]};
  };
  std::size_t at = 8, chunks = 0;
  while (at + 12 <= png.size()) {
    const std::size_t len = be32(at);
    if (at + 12 + len > png.size()) return false;
    if (crc32_bitwise(png.data() + at + 4, len + 4) != be32(at + 8 + len)) return false;
    at += 12 + len;
    ++chunks;
  }
  return at == png.size() && chunks >= 3;
}
} // namespace

TEST_CASE("Png.EncoderSettingsRoundTripAndStaySmall") {
  using D = detail::PngSettings::Deflate;
  RenderRequest r;
  r.view = {-0.5, 0.0, 3.0, 256, 256};
  r.max_iter = 256;
  const Image img = render_image(r);
  const auto stb = detail::encode_png_with(img.rgb, 256, 256, {D::Stb, 0, -1});
  const auto ours = encode_png(img);
  CHECK(test::decode_png(stb).pixels == img.rgb);
  CHECK(test::decode_png(ours).pixels == img.rgb);
  CHECK(chunk_crcs_valid(stb));
  CHECK(chunk_crcs_valid(ours));
  // The production encoder may be at most 10% larger than stb as shipped.
  CHECK(static_cast<double>(ours.size()) <= 1.1 * static_cast<double>(stb.size()));
  for (const D d : {D::Isal, D::Libdeflate})
    for (const int level : {0, 1, 3, 12})
      for (const int filter : {-1, 0, 1, 2, 3, 4}) {
        if (d == D::Isal && level > 3) continue;
        CAPTURE(static_cast<int>(d));
        CAPTURE(level);
        CAPTURE(filter);
        const auto png = detail::encode_png_with(img.rgb, 256, 256, {d, level, filter});
        CHECK(test::decode_png(png).pixels == img.rgb);
        CHECK(chunk_crcs_valid(png));
      }
  // The experiment restores the production settings.
  CHECK(encode_png(img) == ours);
  CHECK_THROWS_AS(detail::encode_png_with(img.rgb, 256, 256, {D::Libdeflate, 13, 0}),
                  std::invalid_argument);
  CHECK_THROWS_AS(detail::encode_png_with(img.rgb, 256, 256, {D::Isal, 4, 0}),
                  std::invalid_argument);
}
