// Private to render/formats: the double-double row kernels of dd_simd.cpp, compiled once with
// AVX2 + FMA flags and once with AVX-512 flags (render/CMakeLists.txt), entered from
// formats.cpp only after best_isa() says the CPU has that instruction set.
#pragma once

#include <cstdint>

namespace overdrive::formats {

/// One row of the dd escape loop: column k has c = (cr_hi[k] + cr_lo[k]) + i (ci_hi + ci_lo).
struct DDRow {
  const double *cr_hi, *cr_lo;
  int n;
  double ci_hi, ci_lo;
  int max_iter;
  std::uint32_t *iters;
  float *mag2;
};

/// Points farther than ~1e-12 inside the main cardioid or the period-2 bulb (x, y: c rounded
/// to double). They never escape in exact arithmetic, nor in the near-exact formats (dd, qd, mp)
/// that use this test: answered with max_iter and |z|^2 = 0, as the f64 kernels' interior
/// skipping does. The margin keeps points whose rounded c could be misclassified out.
inline bool deep_inside(double x, double y) noexcept {
  constexpr double margin = 1e-12;
  const double q = (x - 0.25) * (x - 0.25) + y * y;
  if (q * (q + (x - 0.25)) < 0.25 * y * y - margin) return true;
  return (x + 1.0) * (x + 1.0) + y * y < 0.0625 - margin;
}

namespace detail {
/// The escape counts of the row (ScalarKernel<DDArith> semantics, bit for bit); returns the
/// iterations done (skipped interior points do none).
std::uint64_t dd_row_avx2(const DDRow &job);
std::uint64_t dd_row_avx512(const DDRow &job);
} // namespace detail

} // namespace overdrive::formats
