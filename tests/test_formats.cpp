// Number formats (render/formats): each format's arithmetic against an exact MPFR reference
// written here from the format's definition (posit8 exhaustively, posit16/32 on random and edge
// pairs, masked and fixed on random pairs), and each format's escape counts against f64 at a
// shallow view and against mp:256 at a deep view where f64 fails.
#include "common/require_isa.hpp"
#include "render/formats/arith.hpp"
#include "render/formats/dd_simd.hpp"
#include "render/formats/format_kernel.hpp"
#include "render/render.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <doctest/doctest.h>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

using namespace overdrive;
using namespace overdrive::formats;
using overdrive::test::require_isa;

namespace {

/// An MPFR number that clears itself.
struct Mp {
  mpfr_t v;
  explicit Mp(mpfr_prec_t prec = 1024) { mpfr_init2(v, prec); }
  ~Mp() { mpfr_clear(v); }
  Mp(const Mp &) = delete;
  Mp &operator=(const Mp &) = delete;
};

/// n exact numbers (precision prec).
struct MpArray {
  std::unique_ptr<mpfr_t[]> v;
  int n;
  MpArray(int count, mpfr_prec_t prec) : v(new mpfr_t[static_cast<std::size_t>(count)]), n(count) {
    for (int i = 0; i < n; ++i)
      mpfr_init2(v[i], prec);
  }
  ~MpArray() {
    for (int i = 0; i < n; ++i)
      mpfr_clear(v[i]);
  }
  MpArray(const MpArray &) = delete;
  MpArray &operator=(const MpArray &) = delete;
};

// ---- posit reference, from the 2022 standard ---------------------------------------------------

/// The value of the n-bit posit pattern p (es = 2), read bit by bit; p is neither 0 nor NaR.
void posit_value(mpfr_t out, std::uint64_t p, int n) {
  const std::uint64_t mod = std::uint64_t{1} << n;
  const bool neg = (p >> (n - 1)) & 1;
  if (neg) p = (mod - p) % mod;
  std::vector<int> bits; // after the sign bit, most significant first
  for (int i = n - 2; i >= 0; --i)
    bits.push_back(static_cast<int>((p >> i) & 1));
  std::size_t i = 0;
  const int r0 = bits[0];
  int run = 0;
  while (i < bits.size() && bits[i] == r0) {
    ++run;
    ++i;
  }
  ++i; // the regime's terminating bit (if any)
  const int k = r0 ? run - 1 : -run;
  int e = 0;
  for (int j = 0; j < 2; ++j)
    e = 2 * e + (i < bits.size() ? bits[i++] : 0);
  // value = (1 + f) * 2^(4k + e), f = the remaining fb bits as a binary fraction.
  std::uint64_t sig = 1;
  int fb = 0;
  for (; i < bits.size(); ++i, ++fb)
    sig = 2 * sig + static_cast<std::uint64_t>(bits[i]);
  mpfr_set_ui(out, static_cast<unsigned long>(sig), MPFR_RNDN);
  mpfr_mul_2si(out, out, 4 * k + e - fb, MPFR_RNDN);
  if (neg) mpfr_neg(out, out, MPFR_RNDN);
}

/// The standard's rounding of the exact nonzero x to an n-bit posit: saturate at maxpos/minpos
/// (never 0 or NaR); else the bracketing posits u < |x| < w and the (n+1)-bit posit v between
/// them: below v -> u, above -> w, equal -> the one whose pattern ends in 0.
std::uint32_t posit_round_ref(const mpfr_t x, int n) {
  const std::uint32_t maxpos = (1u << (n - 1)) - 1u;
  Mp ax(1024), val(1024);
  mpfr_abs(ax.v, x, MPFR_RNDN);
  // Largest positive pattern with value <= |x| (binary search over the ordered patterns).
  std::uint32_t lo = 1, hi = maxpos, r;
  posit_value(val.v, maxpos, n);
  if (mpfr_cmp(ax.v, val.v) >= 0) {
    r = maxpos;
  } else {
    posit_value(val.v, 1, n);
    if (mpfr_cmp(ax.v, val.v) <= 0) {
      r = 1;
    } else {
      while (hi - lo > 1) { // value(lo) < |x| < value(hi)... invariant value(lo) <= |x|
        const std::uint32_t mid = lo + (hi - lo) / 2;
        posit_value(val.v, mid, n);
        if (mpfr_cmp(val.v, ax.v) <= 0)
          lo = mid;
        else
          hi = mid;
      }
      posit_value(val.v, lo, n);
      if (mpfr_equal_p(val.v, ax.v)) {
        r = lo;
      } else {
        posit_value(val.v, (std::uint64_t{lo} << 1) | 1, n + 1);
        const int c = mpfr_cmp(ax.v, val.v);
        r = c < 0 ? lo : c > 0 ? lo + 1 : ((lo & 1) ? lo + 1 : lo);
      }
    }
  }
  const std::uint32_t mask = n == 32 ? 0xffffffffu : (1u << n) - 1u;
  return mpfr_sgn(x) < 0 ? (0u - r) & mask : r;
}

enum class Op { Add, Sub, Mul };

/// The exact result of a op b for posit patterns, rounded by the reference rule.
std::uint32_t posit_op_ref(std::uint32_t a, std::uint32_t b, Op op, int n) {
  const std::uint32_t nar = 1u << (n - 1);
  if (a == nar || b == nar) return nar;
  Mp x(1024), y(1024), z(1024);
  if (a == 0)
    mpfr_set_zero(x.v, 1);
  else
    posit_value(x.v, a, n);
  if (b == 0)
    mpfr_set_zero(y.v, 1);
  else
    posit_value(y.v, b, n);
  switch (op) {
  case Op::Add:
    mpfr_add(z.v, x.v, y.v, MPFR_RNDN); // exact at 1024 bits (values within 2^+-120, 28 bits)
    break;
  case Op::Sub:
    mpfr_sub(z.v, x.v, y.v, MPFR_RNDN);
    break;
  case Op::Mul:
    mpfr_mul(z.v, x.v, y.v, MPFR_RNDN);
    break;
  }
  if (mpfr_zero_p(z.v)) return 0;
  return posit_round_ref(z.v, n);
}

template <int N> std::uint32_t posit_op(std::uint32_t a, std::uint32_t b, Op op) {
  switch (op) {
  case Op::Add:
    return Posit<N>::add(a, b);
  case Op::Sub:
    return Posit<N>::sub(a, b);
  case Op::Mul:
    return Posit<N>::mul(a, b);
  }
  return 0;
}

/// Checks a op b against the reference for every op; returns the number of mismatches (and
/// reports the first few).
template <int N> int check_posit_pair(std::uint32_t a, std::uint32_t b) {
  int bad = 0;
  for (Op op : {Op::Add, Op::Sub, Op::Mul}) {
    const std::uint32_t got = posit_op<N>(a, b, op), want = posit_op_ref(a, b, op, N);
    if (got != want) {
      if (++bad <= 3)
        MESSAGE("posit", N, " op ", static_cast<int>(op), " a=", a, " b=", b, " got ", got,
                " want ", want);
    }
  }
  return bad;
}

/// Edge patterns of an n-bit posit: 0, NaR, +-1, +-minpos, +-maxpos and their neighbours,
/// the patterns around every regime boundary, and +-4.
std::vector<std::uint32_t> posit_edges(int n) {
  const std::uint32_t mask = n == 32 ? 0xffffffffu : (1u << n) - 1u;
  const std::uint32_t nar = 1u << (n - 1), one = 1u << (n - 2);
  std::set<std::uint32_t> s{0, nar, one, 1, 2, 3, nar - 1, nar - 2, nar - 3, one - 1, one + 1};
  for (int k = 1; k < n - 1; ++k) { // run boundaries: 0..01 and 1..10 regimes
    for (std::uint32_t d : {0u, 1u}) {
      s.insert(((1u << k) + d) & (nar - 1));
      s.insert((nar - (1u << k) - d) & (nar - 1));
    }
  }
  std::vector<std::uint32_t> out;
  for (std::uint32_t p : s) {
    out.push_back(p & mask);
    out.push_back((0u - p) & mask);
  }
  return out;
}

template <int N> void random_and_edge_posits(int randoms) {
  int bad = 0;
  const auto edges = posit_edges(N);
  for (std::uint32_t a : edges)
    for (std::uint32_t b : edges)
      bad += check_posit_pair<N>(a, b);
  std::mt19937_64 rng(N * 7919);
  const std::uint32_t mask = N == 32 ? 0xffffffffu : (1u << N) - 1u;
  for (int i = 0; i < randoms; ++i) {
    const auto a = static_cast<std::uint32_t>(rng()) & mask;
    auto b = static_cast<std::uint32_t>(rng()) & mask;
    if (i % 4 == 1) b = (0u - a + static_cast<std::uint32_t>(rng() % 9) - 4u) & mask; // cancel
    if (i % 4 == 2) b = (a + static_cast<std::uint32_t>(rng() % 9) - 4u) & mask;      // near
    bad += check_posit_pair<N>(a, b);
  }
  CHECK(bad == 0);
}

// ---- masked and fixed references ---------------------------------------------------------------

/// x rounded to M mantissa bits and an E-bit exponent (gradual underflow, overflow to inf),
/// nearest even: the masked format's definition applied to the exact x.
double masked_round_ref(const mpfr_t x, int e_bits, int m_bits) {
  const int bias = (1 << (e_bits - 1)) - 1, emin = 1 - bias;
  Mp t(1024), r(m_bits + 1);
  mpfr_abs(t.v, x, MPFR_RNDN);
  double out;
  if (mpfr_zero_p(x)) return 0.0;
  if (mpfr_cmp_si_2exp(t.v, 1, emin) < 0) { // below 2^emin: quantum 2^(emin - M)
    mpfr_mul_2si(t.v, t.v, m_bits - emin, MPFR_RNDN);
    mpfr_rint(t.v, t.v, MPFR_RNDN);
    mpfr_mul_2si(t.v, t.v, emin - m_bits, MPFR_RNDN);
    out = mpfr_get_d(t.v, MPFR_RNDN);
  } else {
    mpfr_set(r.v, t.v, MPFR_RNDN);
    out = mpfr_get_d(r.v, MPFR_RNDN);
    const double maxf = std::ldexp(2.0 - std::ldexp(1.0, -m_bits), bias);
    if (out > maxf) out = INFINITY;
  }
  return mpfr_sgn(x) < 0 ? -out : out;
}

/// Round to nearest even at f fraction bits, saturating to W bits: raw integer as a long double
/// pair is awkward, so the reference returns the exact raw value as an MPFR integer.
void fixed_round_ref(mpfr_t raw, const mpfr_t x, int f, int w) {
  mpfr_mul_2si(raw, x, f, MPFR_RNDN);
  mpfr_rint(raw, raw, MPFR_RNDN);
  Mp lim(256);
  mpfr_set_ui_2exp(lim.v, 1, w - 1, MPFR_RNDN);
  mpfr_sub_ui(lim.v, lim.v, 1, MPFR_RNDN);
  if (mpfr_cmp(raw, lim.v) > 0) mpfr_set(raw, lim.v, MPFR_RNDN);
  mpfr_add_ui(lim.v, lim.v, 1, MPFR_RNDN);
  mpfr_neg(lim.v, lim.v, MPFR_RNDN);
  if (mpfr_cmp(raw, lim.v) < 0) mpfr_set(raw, lim.v, MPFR_RNDN);
}

template <class S> void set_raw(mpfr_t out, S raw, int f) {
  const auto v = static_cast<__int128>(raw);
  const bool neg = v < 0;
  const auto mag = neg ? static_cast<unsigned __int128>(0) - static_cast<unsigned __int128>(v)
                       : static_cast<unsigned __int128>(v);
  Mp lo(256);
  mpfr_set_ui(out, static_cast<unsigned long>(mag >> 64), MPFR_RNDN);
  mpfr_mul_2ui(out, out, 64, MPFR_RNDN);
  mpfr_set_ui(lo.v, static_cast<unsigned long>(mag), MPFR_RNDN);
  mpfr_add(out, out, lo.v, MPFR_RNDN);
  if (neg) mpfr_neg(out, out, MPFR_RNDN);
  mpfr_mul_2si(out, out, -f, MPFR_RNDN);
}

template <class S> void check_fixed(int f, int count) {
  constexpr int w = FixedTraits<S>::W;
  const Fixed<S> fx(f);
  std::mt19937_64 rng(static_cast<std::uint64_t>(w * 131 + f));
  int bad = 0;
  Mp x(512), y(512), z(512), want(512), got(512);
  for (int i = 0; i < count; ++i) {
    // Random raw values, half of them small (so products stay in range).
    auto rnd = [&]() {
      unsigned __int128 u = (static_cast<unsigned __int128>(rng()) << 64) | rng();
      const int keep = i % 2 ? w : static_cast<int>(rng() % static_cast<unsigned>(w)) + 1;
      u >>= 128 - keep;
      return static_cast<S>(static_cast<typename FixedTraits<S>::U>(u));
    };
    const S a = rnd(), b = rnd();
    set_raw(x.v, a, f);
    set_raw(y.v, b, f);
    for (Op op : {Op::Add, Op::Sub, Op::Mul}) {
      S r{};
      switch (op) {
      case Op::Add:
        mpfr_add(z.v, x.v, y.v, MPFR_RNDN);
        r = fx.add(a, b);
        break;
      case Op::Sub:
        mpfr_sub(z.v, x.v, y.v, MPFR_RNDN);
        r = fx.sub(a, b);
        break;
      case Op::Mul:
        mpfr_mul(z.v, x.v, y.v, MPFR_RNDN);
        r = fx.mul(a, b);
        break;
      }
      fixed_round_ref(want.v, z.v, f, w);
      set_raw(got.v, r, 0);
      if (!mpfr_equal_p(want.v, got.v) && ++bad <= 3)
        MESSAGE("fixed w=", w, " f=", f, " op ", static_cast<int>(op), " mismatch");
    }
    // Conversion from an exact value.
    mpfr_mul(z.v, x.v, y.v, MPFR_RNDN);
    mpfr_div_ui(z.v, z.v, 3, MPFR_RNDN);
    fixed_round_ref(want.v, z.v, f, w);
    set_raw(got.v, fx.from(z.v), 0);
    if (!mpfr_equal_p(want.v, got.v) && ++bad <= 3) MESSAGE("fixed from mismatch");
  }
  CHECK(bad == 0);
}

// ---- kernels -----------------------------------------------------------------------------------

struct View {
  const char *re, *im, *width; // centre and width as decimal strings
  int n;                       // n x n pixels
  int max_iter;
};

/// Escape counts of spec on the n x n pixel centres of view, computed exactly (MPFR, 400 bits).
std::vector<std::uint32_t> render_format(const Spec &spec, const View &v) {
  MpArray re(v.n, 400), im(v.n, 400);
  Mp c(400), w(400), t(400);
  mpfr_set_str(w.v, v.width, 10, MPFR_RNDN);
  for (int axis = 0; axis < 2; ++axis) {
    mpfr_set_str(c.v, axis == 0 ? v.re : v.im, 10, MPFR_RNDN);
    for (int k = 0; k < v.n; ++k) {
      // centre + (k + 1/2 - n/2) width / n (rows top-down: minus for the imaginary axis)
      mpfr_mul_d(t.v, w.v, (k + 0.5 - v.n / 2.0) / v.n, MPFR_RNDN);
      mpfr_t &dst = axis == 0 ? re.v[k] : im.v[k];
      if (axis == 0)
        mpfr_add(dst, c.v, t.v, MPFR_RNDN);
      else
        mpfr_sub(dst, c.v, t.v, MPFR_RNDN);
    }
  }
  auto kernel = make_format_kernel(spec);
  kernel->set_columns(re.v.get(), v.n);
  std::vector<std::uint32_t> iters(static_cast<std::size_t>(v.n) * v.n);
  std::vector<float> mag2(iters.size());
  for (int r = 0; r < v.n; ++r)
    kernel->row(im.v[r], v.max_iter, iters.data() + r * v.n, mag2.data() + r * v.n);
  return iters;
}

/// The same pixels with f64 (the reference loop on each pixel centre rounded to double).
std::vector<std::uint32_t> render_f64(const View &v) {
  Mp c(400), w(400), t(400);
  mpfr_set_str(w.v, v.width, 10, MPFR_RNDN);
  std::vector<double> re(static_cast<std::size_t>(v.n)), im(re.size());
  for (int axis = 0; axis < 2; ++axis) {
    mpfr_set_str(c.v, axis == 0 ? v.re : v.im, 10, MPFR_RNDN);
    for (int k = 0; k < v.n; ++k) {
      mpfr_mul_d(t.v, w.v, (k + 0.5 - v.n / 2.0) / v.n, MPFR_RNDN);
      if (axis == 0)
        mpfr_add(t.v, c.v, t.v, MPFR_RNDN);
      else
        mpfr_sub(t.v, c.v, t.v, MPFR_RNDN);
      (axis == 0 ? re : im)[static_cast<std::size_t>(k)] = mpfr_get_d(t.v, MPFR_RNDN);
    }
  }
  std::vector<std::uint32_t> iters(static_cast<std::size_t>(v.n) * v.n);
  std::vector<float> mag2(iters.size());
  for (int r = 0; r < v.n; ++r)
    for (int k = 0; k < v.n; ++k)
      kernel_reference({re[static_cast<std::size_t>(k)], 0.0, im[static_cast<std::size_t>(r)], 1,
                        v.max_iter, iters.data() + r * v.n + k, mag2.data() + r * v.n + k});
  return iters;
}

double disagreement(const std::vector<std::uint32_t> &a, const std::vector<std::uint32_t> &b) {
  std::size_t d = 0;
  for (std::size_t i = 0; i < a.size(); ++i)
    d += a[i] != b[i];
  return static_cast<double>(d) / static_cast<double>(a.size());
}

std::size_t distinct(const std::vector<std::uint32_t> &a) {
  return std::set<std::uint32_t>(a.begin(), a.end()).size();
}

// A shallow view across the boundary (seahorse valley, width 0.05) and a deep one (width 1e-20
// at a 33-digit centre, escape counts ~9000-10000): f64's spacing there (~1.1e-16) is ten
// thousand views wide. dd differs from mp:256 on 1 of 576 pixels there (as mp:106 does); at
// width 1e-22 on 1.4% (mp:106: 1.6%), where 106 bits run out; mp:256 = mp:512 on both.
const View shallow{"-0.75", "0.1", "0.05", 48, 300};
const View deep{"-0.743643887037158704752191506114774", "0.131825904205311970493132056385139",
                "1e-20", 24, 12000};

} // namespace

TEST_CASE("Formats.ValidateRejectsOutOfRange") {
  for (const Spec &bad :
       {Spec{Kind::Masked, 0, 99}, Spec{Kind::Masked, 1, 52}, Spec{Kind::Masked, 12, 52},
        Spec{Kind::Masked, 4, 0}, Spec{Kind::Masked, 4, 53}, Spec{Kind::Fixed, 3, 3},
        Spec{Kind::Fixed, 3, 13}, Spec{Kind::Fixed, 8, 9}, Spec{Kind::Fixed, 0, 32},
        Spec{Kind::Fixed, 130, -2}, Spec{Kind::Posit, 7, 0}, Spec{Kind::Posit, 64, 0},
        Spec{Kind::MP, 4, 0}, Spec{Kind::MP, 100000, 0}}) {
    CAPTURE(static_cast<int>(bad.kind));
    CAPTURE(bad.a);
    CAPTURE(bad.b);
    CHECK_FALSE(validate(bad).empty());
  }
  for (const Spec &good :
       {Spec{Kind::Masked, 4, 50}, Spec{Kind::Masked, 11, 52}, Spec{Kind::Masked, 2, 1},
        Spec{Kind::Fixed, 11, 5}, Spec{Kind::Fixed, 20, 12}, Spec{Kind::Fixed, 22, 10},
        Spec{Kind::Fixed, 4, 124}, Spec{Kind::Fixed, 64, 64}, Spec{Kind::Posit, 8, 0},
        Spec{Kind::Posit, 16, 0}, Spec{Kind::Posit, 32, 0}, Spec{Kind::DD}, Spec{Kind::QD},
        Spec{Kind::MP, 256, 0}}) {
    CAPTURE(static_cast<int>(good.kind));
    CHECK(validate(good).empty());
    CHECK(make_format_kernel(good) != nullptr);
    CHECK(precision_bits(good) > 0);
    CHECK(iteration_cost_ns(good) > 0.0);
  }
  CHECK(precision_bits({Kind::DD}) == 106);
  CHECK(precision_bits({Kind::MP, 300, 0}) == 300);
}

TEST_CASE("Formats.PositDecodeKnownValues") {
  // posit8: 0x40 = 1, 0x01 = minpos = 2^-24, 0x7f = maxpos = 2^24, 0x48 = 2, 0x50 = 4,
  // 0x60 = 16.
  CHECK(Posit<8>::to_double(0x40) == 1.0);
  CHECK(Posit<8>::to_double(0x01) == std::ldexp(1.0, -24));
  CHECK(Posit<8>::to_double(0x7f) == std::ldexp(1.0, 24));
  CHECK(Posit<8>::to_double(0x48) == 2.0);
  CHECK(Posit<8>::to_double(0x50) == 4.0);
  CHECK(Posit<8>::to_double(0x60) == 16.0);
  CHECK(Posit<8>::to_double(0xc0) == -1.0);
  CHECK(Posit<32>::to_double(0x7fffffffu) == std::ldexp(1.0, 120));
  CHECK(Posit<16>::to_double(0x4001) == 1.0 + std::ldexp(1.0, -11));
  CHECK(std::isnan(Posit<16>::to_double(0x8000)));
  // NaR propagates and never escapes; four is 4.
  CHECK(Posit<16>::add(0x8000, 0x4000) == 0x8000);
  CHECK(Posit<16>::mul(0x8000, 0) == 0x8000);
  CHECK_FALSE(Posit<16>::escaped(0x8000));
  CHECK(Posit<32>::to_double(Posit<32>::four()) == 4.0);
  // Never rounds to 0 or NaR.
  CHECK(Posit<8>::mul(0x01, 0x01) == 0x01);
  CHECK(Posit<8>::mul(0x7f, 0x7f) == 0x7f);
  CHECK(Posit<8>::add(0x7f, 0x7f) == 0x7f);
  // The reference decoder agrees with the library's on every posit16 pattern.
  Mp v(256);
  int bad = 0;
  for (std::uint32_t p = 1; p < 0x10000u; ++p) {
    if (p == 0x8000u) continue;
    posit_value(v.v, p, 16);
    bad += mpfr_get_d(v.v, MPFR_RNDN) != Posit<16>::to_double(p);
  }
  CHECK(bad == 0);
}

TEST_CASE("Formats.Posit8ExhaustiveAgainstExact") {
  int bad = 0;
  for (std::uint32_t a = 0; a < 256; ++a)
    for (std::uint32_t b = 0; b < 256; ++b)
      bad += check_posit_pair<8>(a, b);
  CHECK(bad == 0);
}

TEST_CASE("Formats.Posit16RandomAndEdgeAgainstExact") {
  random_and_edge_posits<16>(20000);
}

TEST_CASE("Formats.Posit32RandomAndEdgeAgainstExact") {
  random_and_edge_posits<32>(20000);
}

TEST_CASE("Formats.PositFromExactRoundsLikeTheStandard") {
  std::mt19937_64 rng(5);
  Mp x(200);
  int bad = 0;
  for (int i = 0; i < 3000; ++i) {
    // Random 200-bit values over the whole posit32 range and beyond (both saturations).
    const double m = std::ldexp(static_cast<double>(rng() >> 11), -53) + 0.5;
    mpfr_set_d(x.v, m, MPFR_RNDN);
    Mp tail(200);
    mpfr_set_ui(tail.v, static_cast<unsigned long>(rng()), MPFR_RNDN);
    mpfr_mul_2si(tail.v, tail.v, -130, MPFR_RNDN);
    mpfr_add(x.v, x.v, tail.v, MPFR_RNDN);
    mpfr_mul_2si(x.v, x.v, static_cast<long>(rng() % 260) - 130, MPFR_RNDN);
    if (i % 2) mpfr_neg(x.v, x.v, MPFR_RNDN);
    bad += Posit<32>::from(x.v) != posit_round_ref(x.v, 32);
    bad += Posit<16>::from(x.v) != posit_round_ref(x.v, 16);
    bad += Posit<8>::from(x.v) != posit_round_ref(x.v, 8);
  }
  CHECK(bad == 0);
}

TEST_CASE("Formats.MaskedRoundsOnceToNearestEven") {
  std::mt19937_64 rng(11);
  for (auto [e, m] : {std::pair{4, 50}, std::pair{5, 10}, std::pair{8, 23}, std::pair{11, 30},
                      std::pair{3, 3}, std::pair{11, 51}, std::pair{11, 52}, std::pair{2, 1}}) {
    CAPTURE(e);
    CAPTURE(m);
    const Masked fmt(e, m);
    Mp x(64), y(64), z(256);
    int bad = 0;
    for (int i = 0; i < 20000; ++i) {
      // Operands already in the format, of mixed magnitudes (some near the range's ends).
      const int span = std::min(1 << (e - 1), 60);
      auto rnd = [&]() {
        const double v =
            std::ldexp(std::ldexp(static_cast<double>(rng() >> 11), -53) + 0.5,
                       static_cast<int>(rng() % static_cast<unsigned>(2 * span)) - span + 1);
        return fmt.round(rng() % 2 ? -v : v);
      };
      const double a = rnd(), b = i % 3 == 0 ? -a * (1 + std::ldexp(1.0, -m)) : rnd();
      if (!std::isfinite(a) || !std::isfinite(b)) continue;
      mpfr_set_d(x.v, a, MPFR_RNDN);
      mpfr_set_d(y.v, b, MPFR_RNDN);
      mpfr_add(z.v, x.v, y.v, MPFR_RNDN);
      bad += masked_round_ref(z.v, e, m) != fmt.add(a, b);
      mpfr_sub(z.v, x.v, y.v, MPFR_RNDN);
      bad += masked_round_ref(z.v, e, m) != fmt.sub(a, b);
      mpfr_mul(z.v, x.v, y.v, MPFR_RNDN);
      if (std::fabs(a * b) > 0x1p-1000 || a * b == 0) // f64's own underflow: not claimed
        bad += masked_round_ref(z.v, e, m) != fmt.mul(a, b);
      mpfr_div_ui(z.v, z.v, 3, MPFR_RNDN); // an exact value with a long expansion
      bad += masked_round_ref(z.v, e, m) != fmt.from(z.v);
    }
    CHECK(bad == 0);
  }
}

TEST_CASE("Formats.FixedRoundsProductsAndSaturates") {
  check_fixed<std::int16_t>(12, 20000);
  check_fixed<std::int16_t>(0, 5000);
  check_fixed<std::int32_t>(20, 20000);
  check_fixed<std::int64_t>(56, 20000);
  check_fixed<std::int64_t>(10, 5000);
  check_fixed<__int128>(120, 20000);
  check_fixed<__int128>(64, 5000);
  const Fixed<std::int16_t> f(5); // I11F5: 1023.97 is the top
  CHECK(f.add(Fixed<std::int16_t>::max_raw, 1) == Fixed<std::int16_t>::max_raw);
  CHECK(f.sub(Fixed<std::int16_t>::min_raw, 1) == Fixed<std::int16_t>::min_raw);
  CHECK(f.mul(1000 << 5, -(1000 << 5)) == Fixed<std::int16_t>::min_raw);
  CHECK(f.mul(3, 16) == 2); // 3/32 * 1/2 = 3/64 -> 1.5/32 -> ties to even: 2/32
  CHECK(f.mul(5, 16) == 2); // 5/64 = 2.5/32 -> 2/32
  CHECK(f.mul(-5, 16) == -2);
}

TEST_CASE("Formats.Masked11_52EqualsF64Exactly") {
  const auto f64 = render_f64(shallow);
  CHECK(render_format({Kind::Masked, 11, 52}, shallow) == f64);
  CHECK(distinct(f64) > 20);
}

TEST_CASE("Formats.ShallowViewAgreesWithF64WherePreciseEnough") {
  const auto f64 = render_f64(shallow);
  // Formats with at least f64's resolution at |z| <= 2: the chaotic boundary lets a few pixels
  // differ (rounding errors in different places), never many.
  for (const Spec &s :
       {Spec{Kind::DD}, Spec{Kind::QD}, Spec{Kind::MP, 128, 0}, Spec{Kind::Fixed, 8, 56},
        Spec{Kind::Fixed, 8, 120}, Spec{Kind::Masked, 11, 50}}) {
    CAPTURE(static_cast<int>(s.kind));
    CAPTURE(s.a);
    CHECK(disagreement(render_format(s, shallow), f64) < 0.02);
  }
  // Too coarse for this view: posit8 and fixed:11.5 (pixel 1e-3, F = 5) visibly break.
  CHECK(disagreement(render_format({Kind::Posit, 8, 0}, shallow), f64) > 0.3);
  CHECK(disagreement(render_format({Kind::Fixed, 11, 5}, shallow), f64) > 0.3);
  CHECK(disagreement(render_format({Kind::Posit, 32, 0}, shallow), f64) < 0.1);
}

TEST_CASE("Formats.DeepViewDDAgreesWithMPWhereF64Fails") {
  const auto mp = render_format({Kind::MP, 256, 0}, deep);
  const auto dd = render_format({Kind::DD}, deep);
  const auto f64 = render_f64(deep);
  CHECK(distinct(mp) > 20); // the view has structure at this depth
  CHECK(disagreement(dd, mp) < 0.01);
  CHECK(disagreement(render_format({Kind::QD}, deep), mp) < 0.01);
  // f64 cannot tell the pixels apart: one c for every pixel, one count, mostly wrong.
  CHECK(distinct(f64) <= 2);
  CHECK(disagreement(f64, mp) > 0.5);
}

namespace {
// The SIMD dd kernel of isa against the scalar dd loop, bit for bit.
void dd_simd_equals_scalar(Isa isa) {
  // The deep view's centre plus random offsets below 1e-20: the counts hang on the low parts,
  // so an error there (not only in the leading parts) changes them.
  const int n = 203;
  std::mt19937_64 rng(3);
  std::vector<double> hi(n), lo(n);
  Mp c(400), off(400);
  for (int k = 0; k < n; ++k) {
    mpfr_set_str(c.v, deep.re, 10, MPFR_RNDN);
    mpfr_set_d(off.v, std::ldexp(static_cast<double>(rng() >> 11), -53) * 1e-20, MPFR_RNDN);
    mpfr_add(c.v, c.v, off.v, MPFR_RNDN);
    const DD d = DDArith::from(c.v);
    hi[static_cast<std::size_t>(k)] = d.hi;
    lo[static_cast<std::size_t>(k)] = d.lo;
  }
  mpfr_set_str(c.v, deep.im, 10, MPFR_RNDN);
  const DD ci = DDArith::from(c.v);
  const int max_iter = 12000;
  std::vector<std::uint32_t> want(n);
  std::vector<float> want_mag(n);
  for (int k = 0; k < n; ++k) {
    const std::size_t i = static_cast<std::size_t>(k);
    if (deep_inside(hi[i], ci.hi)) {
      want[i] = max_iter;
      want_mag[i] = 0;
      continue;
    }
    double mag = 0;
    const int it = dd_escape({hi[i], lo[i]}, ci, max_iter, mag);
    want[i] = static_cast<std::uint32_t>(it);
    want_mag[i] = static_cast<float>(mag);
  }
  CHECK(distinct(want) > 20);
  {
    std::vector<std::uint32_t> got(n);
    std::vector<float> got_mag(n);
    const DDRow job{hi.data(), lo.data(), n, ci.hi, ci.lo, max_iter, got.data(), got_mag.data()};
    (isa == Isa::Avx2 ? formats::detail::dd_row_avx2 : formats::detail::dd_row_avx512)(job);
    CHECK(got == want);
    CHECK(got_mag == want_mag);
  }
}
} // namespace

TEST_CASE("Formats.DDSimdEqualsScalar.avx2") {
  if (require_isa(Isa::Avx2)) dd_simd_equals_scalar(Isa::Avx2);
}

TEST_CASE("Formats.DDSimdEqualsScalar.avx512") {
  if (require_isa(Isa::Avx512)) dd_simd_equals_scalar(Isa::Avx512);
}
