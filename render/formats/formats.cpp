// The escape-time kernels of the software number formats (format_kernel.hpp): one template loop
// over the scalar arithmetic policies of arith.hpp, the MPFR kernel (mp:BITS, the arbitrary
// precision reference), the QD library's quad-double (qd), and the SIMD double-double kernels
// of dd_simd.cpp (entered after the same ISA check as the f64 kernels).
#include "render/formats/arith.hpp"
#include "render/formats/dd_simd.hpp"
#include "render/formats/format_kernel.hpp"
#include "render/render.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <qd/qd_real.h>
#include <string>
#include <vector>

namespace overdrive::formats {

std::string validate(const Spec &spec) {
  switch (spec.kind) {
  case Kind::Masked:
    if (spec.a < 2 || spec.a > 11 || spec.b < 1 || spec.b > 52)
      return "masked:E.M needs E in 2..11 exponent bits and M in 1..52 mantissa bits";
    return {};
  case Kind::Fixed: {
    const int w = spec.a + spec.b;
    if (w != 16 && w != 32 && w != 64 && w != 128) return "fixed:I.F needs I+F = 16, 32, 64 or 128";
    if (spec.a < 4 || spec.b < 0)
      return "fixed:I.F needs I >= 4 integer bits (so |z|^2 > 4 is representable) and F >= 0";
    return {};
  }
  case Kind::Posit:
    if (spec.a != 8 && spec.a != 16 && spec.a != 32) return "posit: only posit8, posit16, posit32";
    return {};
  case Kind::DD:
  case Kind::QD:
    return {};
  case Kind::MP:
    if (spec.a < 8 || spec.a > 8192) return "mp:BITS needs BITS in 8..8192";
    return {};
  }
  return "unknown number format";
}

int precision_bits(const Spec &spec) noexcept {
  switch (spec.kind) {
  case Kind::Masked:
    return spec.b + 1;
  case Kind::Fixed:
    return spec.b;
  case Kind::Posit: // significand bits at |x| ~ 1: N - sign - 2 regime - 2 exponent + hidden
    return spec.a - 4;
  case Kind::DD:
    return 106;
  case Kind::QD:
    return 212;
  case Kind::MP:
    return spec.a;
  }
  return 53;
}

double iteration_cost_ns(const Spec &spec) noexcept {
  // CPU ns per useful iteration in bench_formats (one core, Zen 5 under load 6-12,
  // 2026-12-03; bench/README.md "Number formats: speed"), the larger of two runs and of the two
  // views, rounded up so caps built on them err on the safe side. Measured: masked:11.52 2.7,
  // masked:4.50 59, fixed 16/32-bit 4.7-8.3, 64-bit 8.8-13.5, 128-bit 33-40, posits 87-96, dd 0.87
  // (AVX-512), qd 216, mp:128 194, mp:256 279, mp:1024 545 (f64 SIMD: 0.062).
  switch (spec.kind) {
  case Kind::Masked:
    return spec.a == 11 && spec.b == 52 ? 6.0 : 80.0;
  case Kind::Fixed:
    switch (spec.a + spec.b) {
    case 16:
    case 32:
      return 12.0;
    case 64:
      return 25.0;
    default:
      return 60.0;
    }
  case Kind::Posit:
    return 140.0;
  case Kind::DD:
    return best_isa() == Isa::Scalar ? 22.0 : 1.5; // scalar (OVERDRIVE_ISA=scalar): 15.6
  case Kind::QD:
    return 320.0;
  case Kind::MP:
    return 220.0 + 0.5 * spec.a;
  }
  return 1.0;
}

namespace {

/// The escape loop of kernel_reference with every operation in the format of A.
template <class A> class ScalarKernel final : public FormatKernel {
public:
  using T = typename A::T;
  ScalarKernel(A arith, bool skip_interior) : a_(std::move(arith)), skip_(skip_interior) {}
  void set_columns(const mpfr_t *re, int n) override {
    cre_.resize(static_cast<std::size_t>(n));
    cre_d_.resize(static_cast<std::size_t>(n));
    for (int k = 0; k < n; ++k) {
      cre_[static_cast<std::size_t>(k)] = a_.from(re[k]);
      cre_d_[static_cast<std::size_t>(k)] = mpfr_get_d(re[k], MPFR_RNDN);
    }
  }
  std::uint64_t row(const mpfr_t im, int max_iter, std::uint32_t *iters, float *mag2) override {
    const T ci = a_.from(im);
    const double ci_d = mpfr_get_d(im, MPFR_RNDN);
    const int ncols = static_cast<int>(cre_.size());
    if (max_iter <= 0) { // the loop does nothing: n = 0, |z|^2 = 0
      for (int k = 0; k < ncols; ++k) {
        iters[k] = 0;
        mag2[k] = 0.0f;
      }
      return 0;
    }
    // K pixels in flight, each lane one pixel's loop: a format's operation is a long dependent
    // chain (error terms, rounding, integer/float moves), and independent lanes let the core
    // overlap them. Per pixel the operations are exactly the textbook loop's.
    constexpr int K = 4;
    struct Lane {
      T cr, zr, zi, zr2, zi2, m;
      int n, pix;
    };
    Lane lane[K];
    int next = 0, live = 0;
    std::uint64_t total = 0;
    auto start = [&](Lane &l) {
      while (next < ncols) {
        const int k = next++;
        if (skip_ && deep_inside(cre_d_[static_cast<std::size_t>(k)], ci_d)) {
          iters[k] = static_cast<std::uint32_t>(max_iter);
          mag2[k] = 0.0f;
          continue;
        }
        l = {cre_[static_cast<std::size_t>(k)], T{}, T{}, T{}, T{}, T{}, 0, k};
        return;
      }
      l.pix = -1;
      --live;
    };
    for (Lane &l : lane) {
      ++live;
      start(l);
    }
    while (live > 0) {
      for (Lane &l : lane) {
        if (l.pix < 0) continue;
        l.zi = a_.add(a_.mul(a_.add(l.zr, l.zr), l.zi), ci);
        l.zr = a_.add(a_.sub(l.zr2, l.zi2), l.cr);
        l.zr2 = a_.mul(l.zr, l.zr);
        l.zi2 = a_.mul(l.zi, l.zi);
        ++l.n;
        l.m = a_.add(l.zr2, l.zi2);
        if (a_.escaped(l.m) || l.n == max_iter) {
          iters[l.pix] = static_cast<std::uint32_t>(l.n);
          mag2[l.pix] = static_cast<float>(a_.to_double(l.m));
          total += static_cast<std::uint64_t>(l.n);
          start(l);
        }
      }
    }
    return total;
  }

private:
  A a_;
  bool skip_;
  std::vector<T> cre_;
  std::vector<double> cre_d_;
};

/// Policies with static members only, wrapped so ScalarKernel can hold them by value.
template <int N> struct PositArith : Posit<N> {};

struct QDArith {
  using T = qd_real;
  static T add(const T &a, const T &b) noexcept { return a + b; }
  static T sub(const T &a, const T &b) noexcept { return a - b; }
  static T mul(const T &a, const T &b) noexcept { return a * b; }
  static T from(const mpfr_t x) noexcept {
    mpfr_t t;
    mpfr_init2(t, mpfr_get_prec(x));
    mpfr_set(t, x, MPFR_RNDN);
    double p[4];
    for (double &d : p) {
      d = mpfr_get_d(t, MPFR_RNDN);
      mpfr_sub_d(t, t, d, MPFR_RNDN);
    }
    mpfr_clear(t);
    return qd_real(p[0], p[1], p[2], p[3]);
  }
  static bool escaped(const T &m) noexcept { return m > 4.0; }
  static double to_double(const T &a) noexcept { return a.x[0]; }
};

/// The DD loop: the SIMD kernels of dd_simd.cpp when the CPU has them, else the scalar template.
class DDKernel final : public FormatKernel {
public:
  void set_columns(const mpfr_t *re, int n) override {
    hi_.resize(static_cast<std::size_t>(n));
    lo_.resize(static_cast<std::size_t>(n));
    for (int k = 0; k < n; ++k) {
      const DD c = DDArith::from(re[k]);
      hi_[static_cast<std::size_t>(k)] = c.hi;
      lo_[static_cast<std::size_t>(k)] = c.lo;
    }
  }
  std::uint64_t row(const mpfr_t im, int max_iter, std::uint32_t *iters, float *mag2) override {
    const DD ci = DDArith::from(im);
    const DDRow job{hi_.data(), lo_.data(), static_cast<int>(hi_.size()), ci.hi, ci.lo, max_iter,
                    iters,      mag2};
    switch (best_isa()) {
    case Isa::Avx512:
      return detail::dd_row_avx512(job);
    case Isa::Avx2:
      return detail::dd_row_avx2(job);
    case Isa::Scalar:
    case Isa::Auto:
      break;
    }
    std::uint64_t total = 0;
    for (std::size_t k = 0; k < hi_.size(); ++k) {
      if (deep_inside(hi_[k], ci.hi)) {
        iters[k] = static_cast<std::uint32_t>(max_iter);
        mag2[k] = 0.0f;
        continue;
      }
      double m = 0;
      const int n = dd_escape({hi_[k], lo_[k]}, ci, max_iter, m);
      iters[k] = static_cast<std::uint32_t>(n);
      mag2[k] = static_cast<float>(m);
      total += static_cast<std::uint64_t>(n);
    }
    return total;
  }

private:
  std::vector<double> hi_, lo_;
};

/// mp:BITS: the loop in MPFR at BITS bits (round to nearest on every operation).
class MPKernel final : public FormatKernel {
public:
  explicit MPKernel(int bits) : bits_(bits) {
    for (mpfr_ptr v : {zr_, zi_, zr2_, zi2_, m_, t_, ci_})
      mpfr_init2(v, bits_);
  }
  ~MPKernel() override {
    for (mpfr_ptr v : {zr_, zi_, zr2_, zi2_, m_, t_, ci_})
      mpfr_clear(v);
    clear_columns();
  }
  MPKernel(const MPKernel &) = delete;
  MPKernel &operator=(const MPKernel &) = delete;
  void set_columns(const mpfr_t *re, int n) override {
    clear_columns();
    cre_.resize(static_cast<std::size_t>(n));
    cre_d_.resize(static_cast<std::size_t>(n));
    for (int k = 0; k < n; ++k) {
      mpfr_init2(cre_[static_cast<std::size_t>(k)].v, bits_);
      mpfr_set(cre_[static_cast<std::size_t>(k)].v, re[k], MPFR_RNDN);
      cre_d_[static_cast<std::size_t>(k)] = mpfr_get_d(re[k], MPFR_RNDN);
    }
  }
  std::uint64_t row(const mpfr_t im, int max_iter, std::uint32_t *iters, float *mag2) override {
    mpfr_set(ci_, im, MPFR_RNDN);
    const double ci_d = mpfr_get_d(im, MPFR_RNDN);
    std::uint64_t total = 0;
    for (std::size_t k = 0; k < cre_.size(); ++k) {
      if (deep_inside(cre_d_[k], ci_d)) {
        iters[k] = static_cast<std::uint32_t>(max_iter);
        mag2[k] = 0.0f;
        continue;
      }
      const mpfr_ptr cr = cre_[k].v;
      for (mpfr_ptr v : {zr_, zi_, zr2_, zi2_, m_})
        mpfr_set_zero(v, 1);
      int n = 0;
      while (n < max_iter) {
        mpfr_add(t_, zr_, zr_, MPFR_RNDN);
        mpfr_mul(t_, t_, zi_, MPFR_RNDN);
        mpfr_add(zi_, t_, ci_, MPFR_RNDN);
        mpfr_sub(t_, zr2_, zi2_, MPFR_RNDN);
        mpfr_add(zr_, t_, cr, MPFR_RNDN);
        mpfr_sqr(zr2_, zr_, MPFR_RNDN);
        mpfr_sqr(zi2_, zi_, MPFR_RNDN);
        ++n;
        mpfr_add(m_, zr2_, zi2_, MPFR_RNDN);
        if (mpfr_cmp_ui(m_, 4) > 0) break;
      }
      iters[k] = static_cast<std::uint32_t>(n);
      mag2[k] = static_cast<float>(mpfr_get_d(m_, MPFR_RNDN));
      total += static_cast<std::uint64_t>(n);
    }
    return total;
  }

private:
  struct Num {
    mpfr_t v;
  };
  void clear_columns() {
    for (Num &c : cre_)
      mpfr_clear(c.v);
    cre_.clear();
  }
  int bits_;
  mpfr_t zr_, zi_, zr2_, zi2_, m_, t_, ci_;
  std::vector<Num> cre_;
  std::vector<double> cre_d_;
};

} // namespace

std::unique_ptr<FormatKernel> make_format_kernel(const Spec &spec) {
  switch (spec.kind) {
  case Kind::Masked:
    return std::make_unique<ScalarKernel<Masked>>(Masked(spec.a, spec.b), false);
  case Kind::Fixed:
    switch (spec.a + spec.b) {
    case 16:
      return std::make_unique<ScalarKernel<Fixed<std::int16_t>>>(Fixed<std::int16_t>(spec.b),
                                                                 false);
    case 32:
      return std::make_unique<ScalarKernel<Fixed<std::int32_t>>>(Fixed<std::int32_t>(spec.b),
                                                                 false);
    case 64:
      return std::make_unique<ScalarKernel<Fixed<std::int64_t>>>(Fixed<std::int64_t>(spec.b),
                                                                 false);
    default:
      return std::make_unique<ScalarKernel<Fixed<__int128>>>(Fixed<__int128>(spec.b), false);
    }
  case Kind::Posit:
    switch (spec.a) {
    case 8:
      return std::make_unique<ScalarKernel<PositArith<8>>>(PositArith<8>{}, false);
    case 16:
      return std::make_unique<ScalarKernel<PositArith<16>>>(PositArith<16>{}, false);
    default:
      return std::make_unique<ScalarKernel<PositArith<32>>>(PositArith<32>{}, false);
    }
  case Kind::DD:
    return std::make_unique<DDKernel>();
  case Kind::QD:
    return std::make_unique<ScalarKernel<QDArith>>(QDArith{}, true);
  case Kind::MP:
    return std::make_unique<MPKernel>(spec.a);
  }
  return nullptr;
}

} // namespace overdrive::formats
