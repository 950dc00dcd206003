// The double-double escape loop in SIMD, the formulas of DDState (arith.hpp) lane by lane, so
// the counts equal the scalar dd kernel's bit for bit (where an operation differs, e.g. a
// negated square or FastTwoSum on ordered operands, it yields the same exact value). Built twice
// (render/CMakeLists.txt): with AVX-512 flags and OVERDRIVE_KERNEL_AVX512 (8 lanes) and with
// AVX2 + FMA (4 lanes); U = 4 independent vectors in flight. One step is ~41 vector FP
// operations (the f64 kernel's: ~4.5), so the kernel is throughput-bound: ~1/8-1/9 of f64 SIMD.
// Lanes whose pixel has finished are refilled with the next pixel of the row at the first
// finished lane after at least min_batch steps; in between, finished lanes keep computing
// (their results are masked out).
#include "render/formats/dd_simd.hpp"

#include <algorithm>
#include <cstdint>
#include <immintrin.h>
#include <vector>

#if defined(OVERDRIVE_KERNEL_AVX512)
#if !defined(__AVX512F__) || !defined(__AVX512DQ__) || !defined(__FMA__)
#error "OVERDRIVE_KERNEL_AVX512 needs -mavx512f -mavx512dq -mfma"
#endif
#elif !defined(__AVX2__) || !defined(__FMA__)
#error "the AVX2 dd kernel needs -mavx2 -mfma"
#endif

#ifndef OVERDRIVE_DD_U512
#define OVERDRIVE_DD_U512 4
#endif
#ifndef OVERDRIVE_DD_RANGE
#define OVERDRIVE_DD_RANGE 1
#endif
#ifndef OVERDRIVE_DD_MINB
#define OVERDRIVE_DD_MINB 8
#endif
#ifndef OVERDRIVE_DD_TEST_FIRST
#if defined(OVERDRIVE_KERNEL_AVX512)
#define OVERDRIVE_DD_TEST_FIRST 1
#else
#define OVERDRIVE_DD_TEST_FIRST 0
#endif
#endif
#ifndef OVERDRIVE_DD_U256
#define OVERDRIVE_DD_U256 4
#endif

namespace overdrive::formats {
namespace {

#if defined(OVERDRIVE_KERNEL_AVX512)
struct Vec {
  using V = __m512d;
  using M = __mmask8;
  static constexpr int L = 8;
  static constexpr int U = OVERDRIVE_DD_U512;
  static V set1(double x) { return _mm512_set1_pd(x); }
  static V load(const double *p) { return _mm512_load_pd(p); }
  static void store(double *p, V a) { _mm512_store_pd(p, a); }
  static V add(V a, V b) { return _mm512_add_pd(a, b); }
  static V sub(V a, V b) { return _mm512_sub_pd(a, b); }
  static V mul(V a, V b) { return _mm512_mul_pd(a, b); }
  static V fms(V a, V b, V c) { return _mm512_fmsub_pd(a, b, c); } // a b - c, one rounding
  static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static V fnma(V a, V b, V c) { return _mm512_fnmadd_pd(a, b, c); } // c - a b
  static M gt(V a, V b) { return _mm512_cmp_pd_mask(a, b, _CMP_GT_OQ); }
  static M lt(V a, V b) { return _mm512_cmp_pd_mask(a, b, _CMP_LT_OQ); }
  static M eq(V a, V b) { return _mm512_cmp_pd_mask(a, b, _CMP_EQ_OQ); }
  static M and_(M a, M b) { return static_cast<M>(a & b); }
  static M or_(M a, M b) { return static_cast<M>(a | b); }
  static M andnot(M a, M b) { return static_cast<M>(~a & b); } // b and not a
  static void mask_store(double *p, M m, V a) { _mm512_mask_store_pd(p, m, a); }
  static unsigned bits(M m) { return m; }
  static M from_bits(unsigned b) { return static_cast<M>(b); }
};
#else
struct Vec {
  using V = __m256d;
  using M = __m256d;
  static constexpr int L = 4;
  static constexpr int U = OVERDRIVE_DD_U256;
  static V set1(double x) { return _mm256_set1_pd(x); }
  static V load(const double *p) { return _mm256_load_pd(p); }
  static void store(double *p, V a) { _mm256_store_pd(p, a); }
  static V add(V a, V b) { return _mm256_add_pd(a, b); }
  static V sub(V a, V b) { return _mm256_sub_pd(a, b); }
  static V mul(V a, V b) { return _mm256_mul_pd(a, b); }
  static V fms(V a, V b, V c) { return _mm256_fmsub_pd(a, b, c); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static V fnma(V a, V b, V c) { return _mm256_fnmadd_pd(a, b, c); }
  static M gt(V a, V b) { return _mm256_cmp_pd(a, b, _CMP_GT_OQ); }
  static M lt(V a, V b) { return _mm256_cmp_pd(a, b, _CMP_LT_OQ); }
  static M eq(V a, V b) { return _mm256_cmp_pd(a, b, _CMP_EQ_OQ); }
  static M and_(M a, M b) { return _mm256_and_pd(a, b); }
  static M or_(M a, M b) { return _mm256_or_pd(a, b); }
  static M andnot(M a, M b) { return _mm256_andnot_pd(a, b); }
  static void mask_store(double *p, M m, V a) { _mm256_maskstore_pd(p, _mm256_castpd_si256(m), a); }
  static unsigned bits(M m) { return static_cast<unsigned>(_mm256_movemask_pd(m)); }
  static M from_bits(unsigned b) {
    const __m256i lane = _mm256_setr_epi64x(1, 2, 4, 8);
    const __m256i v = _mm256_and_si256(_mm256_set1_epi64x(static_cast<long long>(b)), lane);
    return _mm256_castsi256_pd(_mm256_cmpeq_epi64(v, lane));
  }
};
#endif

using V = Vec::V;
using M = Vec::M;
constexpr int L = Vec::L;
constexpr int U = Vec::U;
constexpr int S = L * U;       // lanes in flight
constexpr int batch = 1 << 20; // at most this many iterations between refills
constexpr int min_batch = OVERDRIVE_DD_MINB;

// The exact error of the rounded sum s = a + b (s - (a + b) as a double, exact). AVX-512: the
// operands ordered by magnitude (vrangepd: max |.| / min |.| with their signs) and then
// Dekker's FastTwoSum, exact when |big| >= |small| (which the ordering guarantees); AVX2:
// Knuth's TwoSum. Both give the exact error, so the same bits as the scalar TwoSum.
inline V two_sum_err(V a, V b, V s) {
#if defined(OVERDRIVE_KERNEL_AVX512) && OVERDRIVE_DD_RANGE
  const V big = _mm512_range_pd(a, b, 0x7), small = _mm512_range_pd(a, b, 0x6);
  return Vec::sub(small, Vec::sub(s, big));
#else
  const V bb = Vec::sub(s, a);
  return Vec::fma(Vec::sub(a, Vec::sub(s, bb)), Vec::set1(1.0), Vec::sub(b, bb));
#endif
}

// The state of the S lanes between batches.
struct alignas(64) Lanes {
  double zrh[S], zrl[S], zih[S], zil[S], crh[S], crl[S], cnt[S], mag[S];
  int pix[S];
  unsigned active[U];
};

std::uint64_t dd_row(const DDRow &job) {
  std::uint64_t total = 0;
  thread_local std::vector<int> todo;
  todo.clear();
  for (int k = 0; k < job.n; ++k) {
    if (deep_inside(job.cr_hi[k], job.ci_hi)) {
      job.iters[k] = static_cast<std::uint32_t>(job.max_iter);
      job.mag2[k] = 0.0f;
    } else {
      todo.push_back(k);
    }
  }
  if (todo.empty() || job.max_iter <= 0) {
    for (int k : todo) {
      job.iters[k] = 0;
      job.mag2[k] = 0.0f;
    }
    return 0;
  }
  Lanes st;
  std::size_t next = 0;
  // Start the pixel todo[next] in lane l, or mark the lane empty.
  auto start = [&](int l) {
    if (next < todo.size()) {
      const int k = todo[next++];
      st.pix[l] = k;
      st.crh[l] = job.cr_hi[k];
      st.crl[l] = job.cr_lo[k];
      st.zrh[l] = st.zrl[l] = st.zih[l] = st.zil[l] = 0.0;
      st.cnt[l] = 0.0;
      st.mag[l] = 0.0;
      st.active[l / L] |= 1u << (l % L);
    } else {
      st.pix[l] = -1;
      st.crh[l] = st.crl[l] = st.zrh[l] = st.zrl[l] = st.zih[l] = st.zil[l] = 0.0;
      st.cnt[l] = st.mag[l] = 0.0;
    }
  };
  for (unsigned &a : st.active)
    a = 0;
  for (int l = 0; l < S; ++l)
    start(l);
  const struct { V hi, lo; } ci{Vec::set1(job.ci_hi), Vec::set1(job.ci_lo)};
  const V zero = Vec::set1(0.0), four = Vec::set1(4.0), two = Vec::set1(2.0), one = Vec::set1(1.0),
          maxit = Vec::set1(static_cast<double>(job.max_iter));
  for (;;) {
    // A batch of len iterations, len <= every active lane's remaining budget, so no lane passes
    // max_iter inside it; a lane that escapes at batch iteration g stores count base + g and its
    // |z|^2 (masked stores), the others get theirs at the batch's end. The loop body keeps only
    // z and the squares in registers (c comes from memory), so two or more vectors fit.
    double left = static_cast<double>(job.max_iter);
    for (int l = 0; l < S; ++l)
      if (st.active[l / L] & (1u << (l % L))) left = std::min(left, job.max_iter - st.cnt[l]);
    int len = std::min(batch, static_cast<int>(left));
    struct P {
      V hi, lo;
    } zr[U], zi[U];
    V base[U], m[U];
    M act[U];
    for (int u = 0; u < U; ++u) {
      const int o = u * L;
      zr[u] = {Vec::load(st.zrh + o), Vec::load(st.zrl + o)};
      zi[u] = {Vec::load(st.zih + o), Vec::load(st.zil + o)};
      base[u] = Vec::load(st.cnt + o);
      act[u] = Vec::from_bits(st.active[u]);
    }
    // Rotated loop: each body first forms the squares of the current z (needed by the step) and
    // tests them (the escape test of the previous step, count base + it - 1; at it = 1 no
    // active lane can fire: its z passed the test at the end of the previous batch, or is 0).
    // Only z (4 registers per vector) is carried between steps.
    V th[U], ti[U], r2h[U], ni2h[U];
    bool pending = false;
    // The squares of z and |z|^2 (leading parts) of vector u.
    auto squares = [&](int u) {
      th[u] = Vec::mul(zr[u].hi, two);
      ti[u] = Vec::mul(zi[u].hi, two);
      r2h[u] = Vec::mul(zr[u].hi, zr[u].hi);
      ni2h[u] = Vec::fnma(zi[u].hi, zi[u].hi, zero); // -(zih zih), one rounding
      m[u] = Vec::fnma(ni2h[u], one, r2h[u]);        // r2h + i2h
    };
    // Lanes of vector u that escaped at step n: count and |z|^2 stored (masked), lane off.
    auto record = [&](int u, int n) {
      const M esc = Vec::and_(act[u], Vec::gt(m[u], four));
      if (!Vec::bits(esc)) return false;
      Vec::mask_store(st.cnt + u * L, esc, Vec::add(base[u], Vec::set1(static_cast<double>(n))));
      Vec::mask_store(st.mag + u * L, esc, m[u]);
      act[u] = Vec::andnot(esc, act[u]);
      return true;
    };
    // DDState::step (arith.hpp) for vector u after squares(u), the same values bit for bit;
    // some additions go to the FMA pipes as x * 1 + y, doublings as x * 2 (exact, one rounding
    // each as in the scalar code).
    auto step = [&](int u) {
      const V r2l = Vec::fma(th[u], zr[u].lo, Vec::fms(zr[u].hi, zr[u].hi, r2h[u]));
      const V i2l = Vec::fma(ti[u], zi[u].lo, Vec::fma(zi[u].hi, zi[u].hi, ni2h[u]));
      // zi <- 2 zr zi + ci; tl zih = zrl ti exactly (doublings are exact).
      const V p = Vec::mul(th[u], zi[u].hi);
      V e = Vec::fms(th[u], zi[u].hi, p);
      V a = Vec::add(p, ci.hi);
      e = Vec::fma(th[u], zi[u].lo, e);
      V err = two_sum_err(p, ci.hi, a);
      e = Vec::fma(zr[u].lo, ti[u], e);
      V lo = Vec::fma(err, one, Vec::fma(e, one, ci.lo));
      V nh = Vec::add(a, lo);
      zi[u].lo = Vec::fnma(Vec::sub(nh, a), one, lo);
      zi[u].hi = nh;
      // zr <- (r2 - i2) + cr.
      const V crh = Vec::load(st.crh + u * L), crl = Vec::load(st.crl + u * L);
      a = Vec::add(r2h[u], ni2h[u]);
      err = two_sum_err(r2h[u], ni2h[u], a);
      e = Vec::fma(err, one, Vec::fnma(i2l, one, r2l));
      const V a2 = Vec::add(a, crh);
      err = two_sum_err(a, crh, a2);
      lo = Vec::fma(err, one, Vec::fma(e, one, crl));
      nh = Vec::add(a2, lo);
      zr[u].lo = Vec::fnma(Vec::sub(nh, a2), one, lo);
      zr[u].hi = nh;
    };
    // Refill once at least min_batch steps are done and a lane has finished: paid once per
    // finished pixel where counts are long (deep views), at most every min_batch steps where
    // they are short.
    for (int it = 1; it <= len; ++it) {
#if OVERDRIVE_DD_TEST_FIRST
      // All vectors' tests, then all steps (AVX-512: 32 registers hold every vector's squares).
      unsigned any = 0;
      for (int u = 0; u < U; ++u) {
        squares(u);
        any |= Vec::bits(Vec::and_(act[u], Vec::gt(m[u], four)));
      }
      if (any) {
        for (int u = 0; u < U; ++u)
          record(u, it - 1);
        pending = true;
      }
      if (pending && it - 1 >= min_batch) {
        len = it - 1;
        break;
      }
      for (int u = 0; u < U; ++u)
        step(u);
#else
      // Vector by vector (AVX2: fewer live registers of its 16); the batch ends after the step.
      for (int u = 0; u < U; ++u) {
        squares(u);
        if (record(u, it - 1)) pending = true;
        step(u);
      }
      if (pending && it >= min_batch) {
        len = it;
        break;
      }
#endif
    }
    for (int u = 0; u < U; ++u) {
      const int o = u * L;
      m[u] = Vec::fma(Vec::mul(zr[u].hi, zr[u].hi), one, Vec::mul(zi[u].hi, zi[u].hi));
      const M esc = Vec::and_(act[u], Vec::gt(m[u], four));
      Vec::mask_store(st.cnt + o, act[u], Vec::add(base[u], Vec::set1(static_cast<double>(len))));
      Vec::mask_store(st.mag + o, act[u], m[u]);
      // Lanes that escaped at the last step or reached max_iter are done.
      act[u] = Vec::andnot(esc, act[u]);
      act[u] = Vec::and_(act[u], Vec::lt(Vec::load(st.cnt + o), maxit));
    }
    bool all_on = true;
    for (int u = 0; u < U; ++u) {
      const int o = u * L;
      Vec::store(st.zrh + o, zr[u].hi);
      Vec::store(st.zrl + o, zr[u].lo);
      Vec::store(st.zih + o, zi[u].hi);
      Vec::store(st.zil + o, zi[u].lo);
      st.active[u] = Vec::bits(act[u]);
      all_on = all_on && st.active[u] == (1u << L) - 1u;
    }
    if (all_on) continue;
    bool any = false;
    for (int l = 0; l < S; ++l) {
      if (st.pix[l] >= 0 && !(st.active[l / L] & (1u << (l % L)))) {
        const auto n = static_cast<std::uint32_t>(st.cnt[l]);
        job.iters[st.pix[l]] = n;
        job.mag2[st.pix[l]] = static_cast<float>(st.mag[l]);
        total += n;
        start(l);
      }
      any = any || st.pix[l] >= 0;
    }
    if (!any) break;
  }
  return total;
}

} // namespace

#if defined(OVERDRIVE_KERNEL_AVX512)
std::uint64_t detail::dd_row_avx512(const DDRow &job) {
  return dd_row(job);
}
#else
std::uint64_t detail::dd_row_avx2(const DDRow &job) {
  return dd_row(job);
}
#endif

} // namespace overdrive::formats
