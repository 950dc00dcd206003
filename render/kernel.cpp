// Escape-time kernels and their run-time selection. kernel_reference is the textbook loop that
// every faster kernel is tested against; keep it simple and obviously right. This file is built
// with -ffp-contract=off so the reference is not FMA-contracted. The SIMD kernels live in
// kernel_simd.cpp (and the colouring's in colour_simd.cpp), compiled once per instruction set
// and entered, through the entry points of kernel_isa.hpp, only after a CPU check here.
#include "render/kernel_isa.hpp"
#include "render/render.hpp"

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>
#include <vector>

namespace overdrive {

namespace {
// Column of point k of job, in int as RowJob states (then converted to double by the caller's
// expression re0 + col * dre, exactly as for a whole row).
int job_col(const RowJob &job, int k) noexcept {
  return job.k0 + k * job.kstep;
}
} // namespace

void kernel_reference(const RowJob &job) noexcept {
  for (int k = 0; k < job.n; ++k) {
    const double cr = job.re0 + job_col(job, k) * job.dre;
    const double ci = job.im;
    double zr = 0.0, zi = 0.0, zr2 = 0.0, zi2 = 0.0;
    int n = 0;
    // z_{n+1} = z_n^2 + c; escape once |z| > 2.
    while (n < job.max_iter) {
      zi = 2.0 * zr * zi + ci;
      zr = zr2 - zi2 + cr;
      zr2 = zr * zr;
      zi2 = zi * zi;
      ++n;
      if (zr2 + zi2 > 4.0) break;
    }
    job.iters[k] = static_cast<std::uint32_t>(n);
    job.mag2[k] = static_cast<float>(zr2 + zi2);
  }
}

namespace {
void kernel_reference_f32(const RowJob &job) noexcept {
  for (int k = 0; k < job.n; ++k) {
    const float cr = static_cast<float>(job.re0 + job_col(job, k) * job.dre);
    const float ci = static_cast<float>(job.im);
    float zr = 0.0f, zi = 0.0f, zr2 = 0.0f, zi2 = 0.0f;
    int n = 0;
    while (n < job.max_iter) {
      zi = 2.0f * zr * zi + ci;
      zr = zr2 - zi2 + cr;
      zr2 = zr * zr;
      zi2 = zi * zi;
      ++n;
      if (zr2 + zi2 > 4.0f) break;
    }
    job.iters[k] = static_cast<std::uint32_t>(n);
    job.mag2[k] = zr2 + zi2;
  }
}

// Main cardioid or period-2 bulb: such points never escape, in exact or floating arithmetic.
bool in_cardioid_or_bulb(double x, double y) noexcept {
  const double q = (x - 0.25) * (x - 0.25) + y * y;
  if (q * (q + (x - 0.25)) < 0.25 * y * y) return true;
  return (x + 1.0) * (x + 1.0) + y * y < 0.0625;
}

// The reference loop with periodicity detection (KernelOptions::periodicity), per pixel: Brent's
// schedule, z is saved at iterations 1, 2, 4, 8, ... and every iteration compares z with the last
// saved point; |z_n - z_s|^2 <= tol2 answers max_iter. Otherwise exactly the reference's steps
// and escape test, so counts differ from it only where that test fires on an escaping orbit.
template <class T> void periodic_loop(const RowJob &job, T tol2) noexcept {
  for (int k = 0; k < job.n; ++k) {
    const T cr = static_cast<T>(job.re0 + job_col(job, k) * job.dre);
    const T ci = static_cast<T>(job.im);
    T zr = 0, zi = 0, zr2 = 0, zi2 = 0, sr = 0, si = 0;
    int n = 0, save = 1;
    bool periodic = false;
    while (n < job.max_iter) {
      zi = T(2) * zr * zi + ci;
      zr = zr2 - zi2 + cr;
      zr2 = zr * zr;
      zi2 = zi * zi;
      ++n;
      if (zr2 + zi2 > T(4)) break;
      const T dr = zr - sr, di = zi - si;
      if (dr * dr + di * di <= tol2) {
        periodic = true;
        break;
      }
      if (n == save) {
        sr = zr;
        si = zi;
        save = save < (1 << 29) ? 2 * save : save;
      }
    }
    job.iters[k] = static_cast<std::uint32_t>(periodic ? job.max_iter : n);
    job.mag2[k] = periodic ? 0.0f : static_cast<float>(zr2 + zi2);
  }
}

// Scalar kernels with interior skipping and/or periodicity: per remaining pixel the reference
// loop, or the periodic one (a row of one pixel at re0 + k * dre computes exactly the same c as
// the full row).
template <class T>
void scalar_skipping(const RowJob &job, void (*loop)(const RowJob &),
                     const KernelOptions &opt) noexcept {
  const double tol = std::ldexp(std::abs(job.dre), -KernelOptions::periodicity_shift);
  const T tol2 = static_cast<T>(tol * tol);
  for (int k = 0; k < job.n; ++k) {
    const double cr = job.re0 + job_col(job, k) * job.dre;
    if (opt.skip_interior && in_cardioid_or_bulb(static_cast<T>(cr), static_cast<T>(job.im))) {
      job.iters[k] = static_cast<std::uint32_t>(job.max_iter);
      job.mag2[k] = 0.0f;
    } else {
      const RowJob one{cr, job.dre, job.im, 1, job.max_iter, job.iters + k, job.mag2 + k};
      if (opt.periodicity)
        periodic_loop<T>(one, tol2);
      else
        loop(one);
    }
  }
}

Isa cpu_best() noexcept {
  static const Isa best = [] {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx2") &&
        __builtin_cpu_supports("fma"))
      return Isa::Avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::Avx2;
    return Isa::Scalar;
  }();
  return best;
}

int rank(Isa isa) noexcept {
  switch (isa) {
  case Isa::Scalar:
    return 0;
  case Isa::Avx2:
    return 1;
  case Isa::Avx512:
    return 2;
  case Isa::Auto:
    break;
  }
  return 3;
}

// The highest supported ISA not above want (want = Auto means no cap).
Isa cap(Isa want) noexcept {
  const Isa best = cpu_best();
  return rank(want) < rank(best) ? want : best;
}

// Per-thread scratch for the SIMD kernels' work lists, grown on demand and reused across rows.
void *scratch(int bytes) {
  thread_local std::vector<std::byte> buf;
  const auto need = static_cast<std::size_t>(bytes) + 64;
  if (buf.size() < need) buf.resize(need);
  const auto addr = reinterpret_cast<std::uintptr_t>(buf.data());
  return buf.data() + ((64 - addr % 64) % 64);
}

} // namespace

bool isa_supported(Isa isa) noexcept {
  return rank(isa) <= rank(cpu_best()) || isa == Isa::Auto;
}

Isa best_isa() noexcept {
  // Read once: OVERDRIVE_ISA may lower the choice (for comparisons), never raise it.
  static const Isa best = [] {
    const char *env = std::getenv("OVERDRIVE_ISA");
    const auto forced = env ? parse_isa(env) : std::nullopt;
    return cap(forced.value_or(Isa::Auto));
  }();
  return best;
}

void run_kernel_rows(const RowsJob &job, Precision precision, Isa isa,
                     const KernelOptions &options) noexcept {
  if (job.n <= 0 || job.rows <= 0) return;
  const Isa use = isa == Isa::Auto ? best_isa() : cap(isa);
  const bool f32 = precision == Precision::F32;
  using Simd = void (*)(const RowsJob &, const KernelOptions &, void *);
  Simd simd = nullptr;
  int bytes = 0;
  switch (use) {
  case Isa::Avx512:
    simd = f32 ? detail::kernel_f32_avx512 : detail::kernel_f64_avx512;
    bytes = detail::kernel_scratch_bytes_avx512(job.n);
    break;
  case Isa::Avx2:
    simd = f32 ? detail::kernel_f32_avx2 : detail::kernel_f64_avx2;
    bytes = detail::kernel_scratch_bytes_avx2(job.n);
    break;
  case Isa::Scalar:
  case Isa::Auto:
    break;
  }
  if (simd) {
    // The SIMD kernels index pixels with int: split jobs of 2^30 pixels or more.
    const int per = std::max(1, (1 << 30) / job.n);
    void *s = scratch(bytes);
    for (int r = 0; r < job.rows; r += per) {
      const std::size_t off = static_cast<std::size_t>(r) * static_cast<std::size_t>(job.n);
      simd({job.re0, job.dre, job.im + r, std::min(per, job.rows - r), job.n, job.max_iter,
            job.iters + off, job.mag2 + off, job.k0, job.kstep},
           options, s);
    }
    return;
  }
  for (int r = 0; r < job.rows; ++r) {
    const std::size_t off = static_cast<std::size_t>(r) * static_cast<std::size_t>(job.n);
    const RowJob row{job.re0,         job.dre,        job.im[r], job.n,    job.max_iter,
                     job.iters + off, job.mag2 + off, job.k0,    job.kstep};
    if (!options.skip_interior && !options.periodicity) {
      (f32 ? kernel_reference_f32 : kernel_reference)(row);
    } else if (f32) {
      scalar_skipping<float>(row, kernel_reference_f32, options);
    } else {
      scalar_skipping<double>(row, kernel_reference, options);
    }
  }
}

void run_kernel(const RowJob &job, Precision precision, Isa isa,
                const KernelOptions &options) noexcept {
  run_kernel_rows(
      {job.re0, job.dre, &job.im, 1, job.n, job.max_iter, job.iters, job.mag2, job.k0, job.kstep},
      precision, isa, options);
}

void run_kernel(const RowJob &job, Precision precision, Isa isa) noexcept {
  run_kernel(job, precision, isa, KernelOptions{});
}

// ---- smooth colouring ----------------------------------------------------------------------

namespace {
// log2 for the colouring only: exponent plus a quintic on the mantissa (error < 2e-5, far below
// the palette's 1/16-iteration resolution), so colouring costs far less than a libm log per
// pixel. Plain float multiplies and adds (this file is built with -ffp-contract=off), the same
// steps colour_simd.cpp takes lane by lane.
float fast_log2(float x) noexcept {
  const auto bits = std::bit_cast<std::uint32_t>(x);
  const auto e = static_cast<float>(static_cast<int>(bits >> 23) - 127);
  const float m = std::bit_cast<float>((bits & 0x7fffffu) | 0x3f800000u) - 1.5f; // [-.5, .5)
  // Interpolates log2(1.5 + m) at Chebyshev nodes (Horner).
  float p = m * detail::log2_poly[5];
  for (int i = 4; i >= 1; --i)
    p = m * (detail::log2_poly[i] + p);
  return e + (detail::log2_poly[0] + p);
}
} // namespace

std::uint16_t detail::colour_index_scalar(std::uint32_t n, float mag2, int max_iter) noexcept {
  if (n >= static_cast<std::uint32_t>(max_iter)) return palette_size;
  // Continuous escape count mu = n + 1 - log2(log|z|) = n + 2 - log2(log2 |z|^2), |z| > 2.
  const float mu = static_cast<float>(n) + 2.0f - fast_log2(fast_log2(std::max(mag2, 4.0f)));
  const float turns = std::max(mu, 0.0f) * (1.0f / palette_period);
  const float t = turns - std::floor(turns);
  const int idx =
      std::min(static_cast<int>(t * static_cast<float>(palette_size)), palette_size - 1);
  return static_cast<std::uint16_t>(std::max(idx, 0));
}

void detail::colour_indices(const std::uint32_t *iters, const float *mag2, std::size_t n,
                            int max_iter, Isa isa, std::uint16_t *idx) noexcept {
  switch (isa == Isa::Auto ? best_isa() : cap(isa)) {
  case Isa::Avx512:
    colour_indices_avx512(iters, mag2, n, max_iter, idx);
    return;
  case Isa::Avx2:
    colour_indices_avx2(iters, mag2, n, max_iter, idx);
    return;
  case Isa::Scalar:
  case Isa::Auto:
    break;
  }
  for (std::size_t k = 0; k < n; ++k)
    idx[k] = colour_index_scalar(iters[k], mag2[k], max_iter);
}

} // namespace overdrive
