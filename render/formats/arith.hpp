// Private to render/formats (and its tests): the scalar arithmetic of every software number
// format, one small value-semantics "Arith" policy per format with the operations the escape
// loop needs (add, sub, mul, from an exact MPFR value, the escape test, to double). The kernels
// in formats.cpp are templates over these policies; tests/test_formats.cpp checks each against an
// exact reference. Rounding rules (stated once here, repeated in bench/README.md):
// - masked:E.M: IEEE-like binary format with M stored mantissa bits, E exponent bits (bias
//   2^(E-1)-1), gradual underflow, overflow to +-inf, zero exact. Every add/sub/mul is rounded to
//   nearest, ties to even, once from the exact result (an error-free transformation gives the
//   f64 result's error, which breaks its ties on the M-bit grid: no double rounding; M = 52 is
//   plain f64 with the exponent clamp). Not claimed where f64 itself underflows (< 2^-1000).
// - fixed:I.F: two's complement, W = I+F bits; add/sub saturate at the ends of the range, mul
//   forms the exact 2W-bit product and rounds it to F fraction bits to nearest, ties to even,
//   then saturates.
// - posit<N> (N = 8, 16, 32; es = 2, the 2022 posit standard): correctly rounded add/sub/mul,
//   round to nearest with ties to even on the bit string, never to 0 or NaR (saturating at
//   minpos/maxpos); NaR in gives NaR out and compares below every real (standard order).
// - dd: double-double (Dekker/Knuth error-free transformations with FMA, "sloppy" addition as
//   in the QD library's default): ~106 significand bits, absolute error ~2^-104 |z|. The
//   kernels fuse each Mandelbrot step (DDState below).
#pragma once

#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <mpfr.h>

namespace overdrive::formats {

// ---- masked:E.M ------------------------------------------------------------------------------

/// f64 arithmetic rounded to M mantissa bits with an E-bit exponent (rules above).
class Masked {
public:
  using T = double;
  Masked(int e_bits, int m_bits) noexcept
      : shift_(52 - m_bits), emin_(2 - (1 << (e_bits - 1))),
        identity_(e_bits == 11 && m_bits == 52) {
    const int bias = (1 << (e_bits - 1)) - 1;
    two_m_ = std::ldexp(1.0, m_bits);
    inv_min_normal_ = std::ldexp(1.0, -emin_);
    down_ = std::ldexp(1.0, -m_bits);
    max_finite_ = std::ldexp(2.0 - std::ldexp(1.0, -m_bits), bias);
    min_normal_ = std::ldexp(1.0, emin_);
  }
  /// x rounded to the format (nearest, ties to even). err: the sign of exact - x when x is
  /// itself a rounding of an exact value (0: x is exact); it breaks x's ties the right way, so
  /// the result is the exact value rounded once (x = RN53(exact) can land on a midpoint of the
  /// M-bit grid, never cross one, as midpoints are doubles for M <= 51).
  double round(double x, double err = 0.0) const noexcept {
    if (identity_) return x;
    if (!(std::fabs(x) >= min_normal_)) { // below the normal range (or NaN): fixed quantum
      if (x != x) return x;
      // x 2^(M - emin) in two exact steps (2^(M - emin) alone may overflow), then back.
      // |s| < 2^M <= 2^52: adding and removing 2^52 rounds |s| to an integer, nearest even
      // (libm's nearbyint is a slow call without SSE4.1).
      const double s = x * two_m_ * inv_min_normal_, as = std::fabs(s);
      double t = (as + 0x1p52) - 0x1p52;
      if (err != 0.0 && std::fabs(as - t) == 0.5) // a tie of x: the exact value decides
        t = (err > 0) == (s > 0) ? std::ceil(as) : std::floor(as);
      return std::copysign(t, s) * min_normal_ * down_;
    }
    auto u = std::bit_cast<std::uint64_t>(x);
    if (shift_ > 0) {
      const std::uint64_t half = std::uint64_t{1} << (shift_ - 1);
      const std::uint64_t low = u & ((std::uint64_t{1} << shift_) - 1);
      if (low == half && err != 0.0) {
        u = (err > 0) == (x > 0) ? u + half : u - half; // magnitude up or down
      } else {
        u += half - 1 + ((u >> shift_) & 1);
        u &= ~((std::uint64_t{1} << shift_) - 1);
      }
    }
    const double r = std::bit_cast<double>(u);
    return std::fabs(r) > max_finite_ ? std::copysign(std::numeric_limits<double>::infinity(), x)
                                      : r;
  }
  double add(double a, double b) const noexcept {
    const double s = a + b;
    if (shift_ == 0) return round(s);
    const double bb = s - a;
    return round(s, (a - (s - bb)) + (b - bb));
  }
  double sub(double a, double b) const noexcept { return add(a, -b); }
  double mul(double a, double b) const noexcept {
    const double p = a * b;
    if (shift_ == 0) return round(p);
    return round(p, std::fma(a, b, -p));
  }
  double from(const mpfr_t x) const noexcept {
    mpfr_t t;
    mpfr_init2(t, 53);
    const int ternary = mpfr_set(t, x, MPFR_RNDN); // > 0: t > x
    const double d = mpfr_get_d(t, MPFR_RNDN);
    mpfr_clear(t);
    return round(d, shift_ == 0 ? 0.0 : static_cast<double>(-ternary));
  }
  static bool escaped(double m) noexcept { return m > 4.0; }
  static double to_double(double a) noexcept { return a; }
  /// The largest finite value and the smallest normal one.
  double max_finite() const noexcept { return max_finite_; }
  double min_normal() const noexcept { return min_normal_; }

private:
  int shift_, emin_;
  bool identity_;
  double max_finite_ = 0, min_normal_ = 0, two_m_ = 0, inv_min_normal_ = 0, down_ = 0;
};

// ---- fixed:I.F -------------------------------------------------------------------------------

/// Unsigned 256-bit product of two 128-bit magnitudes, as {hi, lo}.
struct U256 {
  unsigned __int128 hi, lo;
};
inline U256 mul_wide(unsigned __int128 a, unsigned __int128 b) noexcept {
  using U = unsigned __int128;
  const auto a0 = static_cast<std::uint64_t>(a), a1 = static_cast<std::uint64_t>(a >> 64);
  const auto b0 = static_cast<std::uint64_t>(b), b1 = static_cast<std::uint64_t>(b >> 64);
  const U p00 = U{a0} * b0, p01 = U{a0} * b1, p10 = U{a1} * b0, p11 = U{a1} * b1;
  const U mid = (p00 >> 64) + static_cast<std::uint64_t>(p01) + static_cast<std::uint64_t>(p10);
  const U lo = (mid << 64) | static_cast<std::uint64_t>(p00);
  const U hi = p11 + (p01 >> 64) + (p10 >> 64) + (mid >> 64);
  return {hi, lo};
}

template <class S> struct FixedTraits;
template <> struct FixedTraits<std::int16_t> {
  using U = std::uint16_t;
  using Wide = std::uint32_t;
  static constexpr int W = 16;
};
template <> struct FixedTraits<std::int32_t> {
  using U = std::uint32_t;
  using Wide = std::uint64_t;
  static constexpr int W = 32;
};
template <> struct FixedTraits<std::int64_t> {
  using U = std::uint64_t;
  using Wide = unsigned __int128;
  static constexpr int W = 64;
};
template <> struct FixedTraits<__int128> {
  using U = unsigned __int128;
  using Wide = U256;
  static constexpr int W = 128;
};

/// Two's-complement fixed point in S (W bits) with f fraction bits; saturating (rules above).
template <class S> class Fixed {
public:
  using T = S;
  using U = typename FixedTraits<S>::U;
  static constexpr int W = FixedTraits<S>::W;
  static constexpr S max_raw = static_cast<S>((U{1} << (W - 1)) - 1);
  static constexpr S min_raw = static_cast<S>(-max_raw - 1);
  explicit Fixed(int f) noexcept : f_(f), four_(static_cast<S>(S{4} << f)) {}
  S add(S a, S b) const noexcept {
    S r;
    if (__builtin_add_overflow(a, b, &r)) return a > 0 ? max_raw : min_raw;
    return r;
  }
  S sub(S a, S b) const noexcept {
    S r;
    if (__builtin_sub_overflow(a, b, &r)) return a >= 0 ? max_raw : min_raw;
    return r;
  }
  S mul(S a, S b) const noexcept {
    const bool neg = (a < 0) != (b < 0);
    const U ua = a < 0 ? static_cast<U>(U{0} - static_cast<U>(a)) : static_cast<U>(a);
    const U ub = b < 0 ? static_cast<U>(U{0} - static_cast<U>(b)) : static_cast<U>(b);
    // q = round(|a b| / 2^f), nearest even, then saturate to the magnitude's limit.
    const U limit = neg ? static_cast<U>(U{1} << (W - 1)) : static_cast<U>(max_raw);
    U q;
    if constexpr (W == 128) {
      const U256 p = mul_wide(ua, ub);
      if (f_ == 0) {
        if (p.hi != 0) return neg ? min_raw : max_raw;
        q = p.lo;
      } else {
        // p >> f must fit 128 bits (and the limit) or saturate.
        if ((p.hi >> f_) != 0) return neg ? min_raw : max_raw;
        q = (p.hi << (128 - f_)) | (p.lo >> f_);
        const U rem = p.lo & ((U{1} << f_) - 1), half = U{1} << (f_ - 1);
        if (rem > half || (rem == half && (q & 1))) {
          if (q == ~U{0}) return neg ? min_raw : max_raw;
          ++q;
        }
      }
    } else {
      using Wd = typename FixedTraits<S>::Wide;
      const Wd p = static_cast<Wd>(static_cast<Wd>(ua) * static_cast<Wd>(ub));
      Wd qw = p;
      if (f_ > 0) {
        qw = p >> f_;
        const Wd rem = p & ((Wd{1} << f_) - 1), half = Wd{1} << (f_ - 1);
        if (rem > half || (rem == half && (qw & 1))) ++qw;
      }
      if (qw > static_cast<Wd>(limit)) return neg ? min_raw : max_raw;
      q = static_cast<U>(qw);
    }
    if (q > limit) return neg ? min_raw : max_raw;
    return neg ? static_cast<S>(U{0} - q) : static_cast<S>(q);
  }
  /// x rounded to nearest (ties to even) at f fraction bits, saturated.
  S from(const mpfr_t x) const noexcept {
    mpfr_t t;
    mpfr_init2(t, mpfr_get_prec(x) + 2);
    mpfr_mul_2si(t, x, f_, MPFR_RNDN); // exact
    mpfr_rint(t, t, MPFR_RNDN);
    S r;
    mpfr_t lim;
    mpfr_init2(lim, 130);
    mpfr_set_ui_2exp(lim, 1, W - 1, MPFR_RNDN);
    if (mpfr_cmp(t, lim) >= 0) {
      r = max_raw;
    } else {
      mpfr_neg(lim, lim, MPFR_RNDN);
      if (mpfr_cmp(t, lim) <= 0) {
        r = min_raw;
      } else {
        // |t| < 2^127: two 64-bit halves of the magnitude.
        const bool neg = mpfr_sgn(t) < 0;
        mpfr_abs(t, t, MPFR_RNDN);
        mpfr_t hi;
        mpfr_init2(hi, mpfr_get_prec(t));
        mpfr_div_2ui(hi, t, 64, MPFR_RNDN);
        mpfr_rint_floor(hi, hi, MPFR_RNDN);
        const unsigned long h = mpfr_get_ui(hi, MPFR_RNDN);
        mpfr_mul_2ui(hi, hi, 64, MPFR_RNDN);
        mpfr_sub(t, t, hi, MPFR_RNDN);
        const unsigned long l = mpfr_get_ui(t, MPFR_RNDN);
        mpfr_clear(hi);
        const unsigned __int128 mag = (static_cast<unsigned __int128>(h) << 64) | l;
        r = static_cast<S>(neg ? static_cast<U>(0) - static_cast<U>(mag) : static_cast<U>(mag));
      }
    }
    mpfr_clear(lim);
    mpfr_clear(t);
    return r;
  }
  bool escaped(S m) const noexcept { return m > four_; }
  double to_double(S a) const noexcept { return std::ldexp(static_cast<double>(a), -f_); }
  int frac_bits() const noexcept { return f_; }

private:
  int f_;
  S four_;
};

// ---- posits (2022 standard, es = 2) ----------------------------------------------------------

/// A decoded nonzero real posit: value = (-1)^neg * sig / 2^63 * 2^scale, bit 63 of sig set.
struct Unpacked {
  bool neg;
  int scale;
  std::uint64_t sig;
};

/// posit<N> with N <= 32 stored in the low N bits of a uint32 (two's complement patterns).
template <int N> class Posit {
  static_assert(N >= 3 && N <= 32);

public:
  using T = std::uint32_t;
  static constexpr std::uint32_t mask = N == 32 ? 0xffffffffu : (1u << N) - 1u;
  static constexpr std::uint32_t nar = 1u << (N - 1);
  static constexpr int max_scale = 4 * (N - 2); // maxpos = 2^max_scale, minpos = 2^-max_scale

  static bool is_neg(T p) noexcept { return (p & nar) != 0; }
  static T negate(T p) noexcept { return (0u - p) & mask; }
  /// Signed order of the standard (NaR below every real).
  static std::int32_t as_signed(T p) noexcept {
    return static_cast<std::int32_t>(p << (32 - N)) >> (32 - N);
  }

  /// Decodes a pattern that is neither 0 nor NaR.
  static Unpacked decode(T p) noexcept {
    const bool neg = is_neg(p);
    const T a = neg ? negate(p) : p;
    // The bits after the sign, left-aligned in 64 bits.
    std::uint64_t x = static_cast<std::uint64_t>(a) << (64 - N + 1);
    const bool ones = (x >> 63) != 0;
    const int run = ones ? std::countl_one(x) : std::countl_zero(x);
    const int m = run > N - 1 ? N - 1 : run;
    const int k = ones ? m - 1 : -m;
    const int used = m + 1; // the run and its terminating bit (past the end is fine: zeros)
    x = used >= 64 ? 0 : x << used;
    const int e = static_cast<int>(x >> 62);
    x <<= 2;
    return {neg, 4 * k + e, (std::uint64_t{1} << 63) | (x >> 1)};
  }

  /// Rounds (-1)^neg * (sig / 2^63 + sticky ulp) * 2^scale to the nearest posit (sig bit 63 set).
  static T encode(bool neg, int scale, std::uint64_t sig, bool sticky) noexcept {
    T r;
    if (scale >= max_scale) {
      r = nar - 1; // maxpos (also for x == maxpos exactly)
    } else if (scale < -max_scale) {
      r = 1; // minpos
    } else {
      const int k = scale >= 0 ? scale / 4 : -((-scale + 3) / 4);
      const int e = scale - 4 * k;
      using U = unsigned __int128;
      int len; // regime bits
      U word;
      if (k >= 0) {
        len = k + 2;
        word = ((U{1} << (k + 1)) - 1) << 1;
      } else {
        len = -k + 1;
        word = 1;
      }
      word <<= 128 - len;
      word |= U{static_cast<unsigned>(e)} << (128 - len - 2);
      word |= U{sig << 1} << (62 - len); // the fraction bits after the exponent
      const T kept = static_cast<T>(word >> (128 - (N - 1)));
      const bool guard = ((word >> (128 - N)) & 1) != 0;
      const bool rest = (word & ((U{1} << (128 - N)) - 1)) != 0 || sticky;
      r = kept + ((guard && (rest || (kept & 1))) ? 1u : 0u);
    }
    return neg ? negate(r) : r;
  }

  static T add(T a, T b) noexcept {
    if (a == nar || b == nar) return nar;
    if (a == 0) return b;
    if (b == 0) return a;
    Unpacked x = decode(a), y = decode(b);
    if (x.scale < y.scale || (x.scale == y.scale && x.sig < y.sig)) std::swap(x, y); // |x| >= |y|
    // Significands with the hidden bit at 62 (room for a carry), y aligned with a sticky bit.
    std::uint64_t sx = x.sig >> 1, sy = y.sig >> 1;
    const int d = x.scale - y.scale;
    if (d > 0) {
      const bool st = d >= 64 || (sy & ((std::uint64_t{1} << d) - 1)) != 0;
      sy = d >= 64 ? 0 : sy >> d;
      sy |= st ? 1 : 0;
    }
    std::uint64_t s;
    int scale = x.scale;
    if (x.neg == y.neg) {
      s = sx + sy;
    } else {
      s = sx - sy;
      if (s == 0) return 0;
    }
    // Normalise so bit 63 is set (value = s / 2^62 * 2^scale).
    const int lz = std::countl_zero(s);
    s <<= lz;
    scale += 1 - lz;
    return encode(x.neg, scale, s, false);
  }
  static T sub(T a, T b) noexcept { return add(a, b == nar ? nar : negate(b)); }
  static T mul(T a, T b) noexcept {
    if (a == nar || b == nar) return nar;
    if (a == 0 || b == 0) return 0;
    const Unpacked x = decode(a), y = decode(b);
    // At most 28 significant bits each: the product of the top 32 bits is exact.
    std::uint64_t p = (x.sig >> 32) * (y.sig >> 32); // value p / 2^62
    int scale = x.scale + y.scale;
    const int lz = std::countl_zero(p);
    p <<= lz;
    scale += 1 - lz;
    return encode(x.neg != y.neg, scale, p, false);
  }
  /// The exact value x rounded to the nearest posit.
  static T from(const mpfr_t x) noexcept {
    if (mpfr_zero_p(x)) return 0;
    if (!mpfr_number_p(x)) return nar;
    const long ex = mpfr_get_exp(x); // |x| = m 2^ex, m in [1/2, 1)
    if (ex - 1 >= max_scale) return mpfr_sgn(x) < 0 ? negate(nar - 1) : nar - 1;
    if (ex - 1 < -max_scale - 1) return mpfr_sgn(x) < 0 ? negate(1) : 1;
    mpfr_t t;
    mpfr_init2(t, mpfr_get_prec(x) + 2);
    mpfr_abs(t, x, MPFR_RNDN);
    mpfr_mul_2si(t, t, 64 - ex, MPFR_RNDN); // in [2^63, 2^64), exact
    mpfr_t i;
    mpfr_init2(i, 64);
    const int inexact = mpfr_rint_floor(i, t, MPFR_RNDZ);
    const std::uint64_t sig = mpfr_get_ui(i, MPFR_RNDZ);
    const bool sticky = inexact != 0 || !mpfr_equal_p(i, t);
    mpfr_clear(i);
    mpfr_clear(t);
    return encode(mpfr_sgn(x) < 0, static_cast<int>(ex - 1), sig, sticky);
  }
  static T from_double(double d) noexcept {
    mpfr_t t;
    mpfr_init2(t, 53);
    mpfr_set_d(t, d, MPFR_RNDN);
    const T r = from(t);
    mpfr_clear(t);
    return r;
  }
  static double to_double(T p) noexcept {
    if (p == 0) return 0.0;
    if (p == nar) return std::numeric_limits<double>::quiet_NaN();
    const Unpacked u = decode(p);
    const double m = std::ldexp(static_cast<double>(u.sig), u.scale - 63);
    return u.neg ? -m : m;
  }
  /// |z|^2 > 4 in the standard's order.
  static bool escaped(T m) noexcept { return as_signed(m) > as_signed(four()); }
  static T four() noexcept { return encode(false, 2, std::uint64_t{1} << 63, false); }
};

// ---- dd (double-double) ----------------------------------------------------------------------

struct DD {
  double hi, lo;
};
/// Double-double arithmetic with FMA error-free products (the formulas of the SIMD kernels, in
/// the same order, so scalar and SIMD counts agree exactly).
struct DDArith {
  using T = DD;
  static DD quick_two_sum(double a, double b) noexcept {
    const double s = a + b;
    return {s, b - (s - a)};
  }
  static DD add(DD a, DD b) noexcept {
    const double s = a.hi + b.hi;
    const double bb = s - a.hi;
    double e = (a.hi - (s - bb)) + (b.hi - bb);
    e += a.lo + b.lo;
    return quick_two_sum(s, e);
  }
  static DD sub(DD a, DD b) noexcept { return add(a, {-b.hi, -b.lo}); }
  static DD mul(DD a, DD b) noexcept {
    const double p = a.hi * b.hi;
    double e = std::fma(a.hi, b.hi, -p);
    e += a.hi * b.lo + a.lo * b.hi;
    return quick_two_sum(p, e);
  }
  static DD from(const mpfr_t x) noexcept {
    mpfr_t t;
    mpfr_init2(t, mpfr_get_prec(x));
    const double hi = mpfr_get_d(x, MPFR_RNDN);
    mpfr_sub_d(t, x, hi, MPFR_RNDN);
    const double lo = mpfr_get_d(t, MPFR_RNDN);
    mpfr_clear(t);
    return {hi, lo};
  }
  static bool escaped(DD m) noexcept { return m.hi > 4.0 || (m.hi == 4.0 && m.lo > 0.0); }
  static double to_double(DD a) noexcept { return a.hi; }
};

/// The dd escape loop as the kernels run it: one fused Mandelbrot step per iteration with the
/// renormalisations that accuracy needs and no more (the squares stay unnormalised pairs, the
/// three-term sums are two TwoSums and one final renormalisation), and the escape test on the
/// leading parts, r2.hi + i2.hi > 4 (differs from the dd sum's test only when |z|^2 is within
/// ~1e-15 of 4). dd_simd.cpp does the same operations lane by lane, so counts agree exactly.
struct DDState {
  double zrh = 0, zrl = 0, zih = 0, zil = 0, r2h = 0, r2l = 0, i2h = 0, i2l = 0;
  void step(DD cr, DD ci) noexcept {
    // zi <- 2 zr zi + ci (2 zr exact).
    const double th = zrh + zrh, tl = zrl + zrl;
    const double p = th * zih;
    double e = std::fma(th, zih, -p);
    e = std::fma(th, zil, e);
    e = std::fma(tl, zih, e);
    double a = p + ci.hi;
    double bb = a - p;
    double err = (p - (a - bb)) + (ci.hi - bb);
    double lo = err + (e + ci.lo);
    const double nih = a + lo;
    zil = lo - (nih - a);
    zih = nih;
    // zr <- (r2 - i2) + cr.
    a = r2h - i2h;
    bb = a - r2h;
    err = (r2h - (a - bb)) - (i2h + bb);
    e = err + (r2l - i2l);
    const double a2 = a + cr.hi;
    bb = a2 - a;
    err = (a - (a2 - bb)) + (cr.hi - bb);
    lo = err + (e + cr.lo);
    const double nrh = a2 + lo;
    zrl = lo - (nrh - a2);
    zrh = nrh;
    // The squares, unnormalised.
    r2h = zrh * zrh;
    r2l = std::fma(zrh + zrh, zrl, std::fma(zrh, zrh, -r2h));
    i2h = zih * zih;
    i2l = std::fma(zih + zih, zil, std::fma(zih, zih, -i2h));
  }
  double mag2() const noexcept { return r2h + i2h; }
};

/// Escape count of c (at most max_iter) by the dd loop; mag = |z|^2 (leading parts) at the end.
inline int dd_escape(DD cr, DD ci, int max_iter, double &mag) noexcept {
  DDState s;
  int n = 0;
  mag = 0.0;
  while (n < max_iter) {
    s.step(cr, ci);
    ++n;
    mag = s.mag2();
    if (mag > 4.0) break;
  }
  return n;
}

} // namespace overdrive::formats
