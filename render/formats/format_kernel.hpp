#pragma once
#include <cstdint>
#include <memory>
#include <mpfr.h>
#include <string>
namespace overdrive::formats {
/// Software / non-native number formats; f64 and f32 stay on the native SIMD kernels.
enum class Kind { Masked, Fixed, Posit, DD, QD, MP };
/// masked:E.M -> {Masked, E, M}; fixed:I.F -> {Fixed, I, F}; positN -> {Posit, N, 0};
/// dd -> {DD}; qd -> {QD}; mp:BITS -> {MP, BITS, 0}.
struct Spec {
  Kind kind;
  int a = 0;
  int b = 0;
  friend bool operator==(const Spec &, const Spec &) = default;
};
/// Empty when spec is valid, else a one-line reason (e.g. "fixed: I+F must be 16, 32, 64 or 128").
std::string validate(const Spec &spec);
/// One escape-time kernel in one format. Not thread-safe: one per thread/call.
class FormatKernel {
public:
  virtual ~FormatKernel() = default;
  /// Real parts of the pixel centres of a row segment (exact values, MPFR with enough bits);
  /// each is rounded once into the format and kept for the following row() calls.
  virtual void set_columns(const mpfr_t *re, int n) = 0;
  /// Escape counts for the kept columns at imaginary part im (exact, rounded once into the
  /// format): the same loop as kernel_reference (z <- z^2 + c from 0, count n, stop when
  /// |z|^2 > 4 or n == max_iter), every operation in the format. iters[k] and mag2[k]
  /// (float(|z|^2) at escape) as RowJob's. Returns the iterations done.
  virtual std::uint64_t row(const mpfr_t im, int max_iter, std::uint32_t *iters, float *mag2) = 0;
};
std::unique_ptr<FormatKernel> make_format_kernel(const Spec &spec); // spec must be valid
/// Measured cost of one iteration in ns on this build (a constant table from bench_formats,
/// e.g. f64 SIMD ~0.1), used by the server's caps so no tile takes longer than ~10 s.
double iteration_cost_ns(const Spec &spec) noexcept;
/// Significand bits the format resolves (for automatic reference/deep-format choice):
/// f64 53, dd 106, qd 212, mp BITS, masked M+1, fixed F (absolute), posit (at |x|~1).
int precision_bits(const Spec &spec) noexcept;
} // namespace overdrive::formats
