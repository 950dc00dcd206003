// The double-double escape loop in SIMD, the formulas of DDArith (arith.hpp) lane by lane in
// the same order, so the counts equal the scalar dd kernel's bit for bit. Built twice
// (render/CMakeLists.txt): with AVX-512 flags and OVERDRIVE_KERNEL_AVX512 (8 lanes) and with
// AVX2 + FMA (4 lanes); several independent vectors in flight (U), as one step is a chain of
// ~20 dependent operations. Lanes whose pixel has finished are refilled with the next pixel of the
// row every `batch` iterations; in between, finished lanes keep computing (their results are masked
// out).
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
#define OVERDRIVE_DD_U512 2
#endif
#ifndef OVERDRIVE_DD_U256
#define OVERDRIVE_DD_U256 2
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
constexpr int S = L * U; // lanes in flight
constexpr int batch = 8; // iterations between refills

// The state of the S lanes between batches.
struct alignas(64) Lanes {
  double zrh[S], zrl[S], zih[S], zil[S], r2h[S], r2l[S], i2h[S], i2l[S], crh[S], crl[S], cnt[S],
      mag[S];
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
      st.r2h[l] = st.r2l[l] = st.i2h[l] = st.i2l[l] = 0.0;
      st.cnt[l] = 0.0;
      st.mag[l] = 0.0;
      st.active[l / L] |= 1u << (l % L);
    } else {
      st.pix[l] = -1;
      st.crh[l] = st.crl[l] = st.zrh[l] = st.zrl[l] = st.zih[l] = st.zil[l] = 0.0;
      st.r2h[l] = st.r2l[l] = st.i2h[l] = st.i2l[l] = st.cnt[l] = st.mag[l] = 0.0;
    }
  };
  for (unsigned &a : st.active)
    a = 0;
  for (int l = 0; l < S; ++l)
    start(l);
  const struct { V hi, lo; } ci{Vec::set1(job.ci_hi), Vec::set1(job.ci_lo)};
  const V four = Vec::set1(4.0), two = Vec::set1(2.0), one = Vec::set1(1.0),
          maxit = Vec::set1(static_cast<double>(job.max_iter));
  for (;;) {
    // A batch of len iterations, len <= every active lane's remaining budget, so no lane passes
    // max_iter inside it; a lane that escapes at batch iteration g stores count base + g and its
    // |z|^2 (masked stores), the others get theirs at the batch's end. The loop body keeps only
    // z and the squares in registers (c comes from memory), so two or more vectors fit.
    double left = static_cast<double>(job.max_iter);
    for (int l = 0; l < S; ++l)
      if (st.active[l / L] & (1u << (l % L))) left = std::min(left, job.max_iter - st.cnt[l]);
    const int len = std::min(batch, static_cast<int>(left));
    struct P {
      V hi, lo;
    } zr[U], zi[U], r2[U], i2[U];
    V base[U], m[U];
    for (V &x : m)
      x = Vec::set1(0.0);
    M act[U];
    for (int u = 0; u < U; ++u) {
      const int o = u * L;
      zr[u] = {Vec::load(st.zrh + o), Vec::load(st.zrl + o)};
      zi[u] = {Vec::load(st.zih + o), Vec::load(st.zil + o)};
      r2[u] = {Vec::load(st.r2h + o), Vec::load(st.r2l + o)};
      i2[u] = {Vec::load(st.i2h + o), Vec::load(st.i2l + o)};
      base[u] = Vec::load(st.cnt + o);
      act[u] = Vec::from_bits(st.active[u]);
    }
    for (int it = 1; it <= len; ++it) {
      for (int u = 0; u < U; ++u) {
        const int o = u * L;
        const V crh = Vec::load(st.crh + o), crl = Vec::load(st.crl + o);
        // DDState::step (arith.hpp), operation for operation, the same values bit for bit; some
        // additions go to the FMA pipes as x * 1 + y, doublings as x * 2 (exact, one rounding
        // each as in the scalar code), so the add pipes are not the bottleneck.
        const V th = Vec::mul(zr[u].hi, two), tl = Vec::mul(zr[u].lo, two);
        const V p = Vec::mul(th, zi[u].hi);
        V e = Vec::fms(th, zi[u].hi, p);
        e = Vec::fma(th, zi[u].lo, e);
        e = Vec::fma(tl, zi[u].hi, e);
        V a = Vec::add(p, ci.hi);
        V bb = Vec::sub(a, p);
        V err = Vec::fma(Vec::sub(p, Vec::sub(a, bb)), one, Vec::sub(ci.hi, bb));
        V lo = Vec::fma(err, one, Vec::fma(e, one, ci.lo));
        const V nih = Vec::add(a, lo);
        zi[u].lo = Vec::fnma(Vec::sub(nih, a), one, lo);
        zi[u].hi = nih;
        a = Vec::sub(r2[u].hi, i2[u].hi);
        bb = Vec::sub(a, r2[u].hi);
        err = Vec::fnma(Vec::fma(i2[u].hi, one, bb), one, Vec::sub(r2[u].hi, Vec::sub(a, bb)));
        e = Vec::fma(err, one, Vec::fnma(i2[u].lo, one, r2[u].lo));
        const V a2 = Vec::add(a, crh);
        bb = Vec::sub(a2, a);
        err = Vec::fma(Vec::sub(a, Vec::sub(a2, bb)), one, Vec::sub(crh, bb));
        lo = Vec::fma(err, one, Vec::fma(e, one, crl));
        const V nrh = Vec::add(a2, lo);
        zr[u].lo = Vec::fnma(Vec::sub(nrh, a2), one, lo);
        zr[u].hi = nrh;
        r2[u].hi = Vec::mul(zr[u].hi, zr[u].hi);
        r2[u].lo =
            Vec::fma(Vec::mul(zr[u].hi, two), zr[u].lo, Vec::fms(zr[u].hi, zr[u].hi, r2[u].hi));
        i2[u].hi = Vec::mul(zi[u].hi, zi[u].hi);
        i2[u].lo =
            Vec::fma(Vec::mul(zi[u].hi, two), zi[u].lo, Vec::fms(zi[u].hi, zi[u].hi, i2[u].hi));
        m[u] = Vec::fma(r2[u].hi, one, i2[u].hi);
        const M esc = Vec::and_(act[u], Vec::gt(m[u], four));
        if (Vec::bits(esc)) {
          Vec::mask_store(st.cnt + o, esc, Vec::add(base[u], Vec::set1(static_cast<double>(it))));
          Vec::mask_store(st.mag + o, esc, m[u]);
          act[u] = Vec::andnot(esc, act[u]);
        }
      }
    }
    for (int u = 0; u < U; ++u) {
      const int o = u * L;
      Vec::mask_store(st.cnt + o, act[u], Vec::add(base[u], Vec::set1(static_cast<double>(len))));
      Vec::mask_store(st.mag + o, act[u], m[u]);
      // Lanes at max_iter are done.
      act[u] = Vec::and_(act[u], Vec::lt(Vec::load(st.cnt + o), maxit));
    }
    bool all_on = true;
    for (int u = 0; u < U; ++u) {
      const int o = u * L;
      Vec::store(st.zrh + o, zr[u].hi);
      Vec::store(st.zrl + o, zr[u].lo);
      Vec::store(st.zih + o, zi[u].hi);
      Vec::store(st.zil + o, zi[u].lo);
      Vec::store(st.r2h + o, r2[u].hi);
      Vec::store(st.r2l + o, r2[u].lo);
      Vec::store(st.i2h + o, i2[u].hi);
      Vec::store(st.i2l + o, i2[u].lo);
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
