// Private to kernel_simd.cpp (included by it and by kernel_simd_asm.hpp, nowhere else): what
// differs between the two instruction sets in C++. For each ISA, the lane traits F64 and F32
// (the vector, mask and lane types, L lanes, and the loads, stores, masked moves, compress and
// expand, scatters and lane scans the driver and the asm wrappers use), and the row pre-pass
// that answers cardioid and bulb points and lists the others. The file is compiled in two
// flavours (render/CMakeLists.txt): with AVX-512 flags and OVERDRIVE_KERNEL_AVX512 (double 8
// lanes, float 16) and with AVX2 + FMA flags (double 4, float 8). Everything is in an anonymous
// namespace, so the two objects share nothing.
#pragma once

#include "render/render.hpp"

#include <cstdint>
#include <immintrin.h>

#if defined(OVERDRIVE_KERNEL_AVX512)
#if !defined(__AVX512F__) || !defined(__AVX512DQ__) || !defined(__AVX512VL__) || !defined(__FMA__)
#error "OVERDRIVE_KERNEL_AVX512 needs -mavx512f -mavx512dq -mavx512vl -mavx2 -mfma"
#endif
#elif !defined(__AVX2__) || !defined(__FMA__)
#error "the AVX2 kernel needs -mavx2 -mfma"
#endif

// GCC 12's AVX-512 conversion intrinsics start from an uninitialised "undefined" vector and
// trip -Wmaybe-uninitialized when inlined; the value is fully overwritten.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace overdrive::detail {
namespace {

#if defined(OVERDRIVE_KERNEL_AVX512)
// ---- AVX-512: 32 zmm registers, 8 mask registers ---------------------------------------------

struct F64 {
  using T = double;
  using V = __m512d;
  using M = __mmask8;
  static constexpr int L = 8;
  static V set1(T x) { return _mm512_set1_pd(x); }
  static V zero() { return _mm512_setzero_pd(); }
  static V load(const T *p) { return _mm512_load_pd(p); }
  static void store(T *p, V a) { _mm512_store_pd(p, a); }
  static V add(V a, V b) { return _mm512_add_pd(a, b); }
  static V mul(V a, V b) { return _mm512_mul_pd(a, b); }
  static V sub(V a, V b) { return _mm512_sub_pd(a, b); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static V fnma(V a, V b, V c) { return _mm512_fnmadd_pd(a, b, c); }
  // Escaped = !(mag <= 4): also true for NaN, which a lane reaches a few iterations after escape.
  static M escaped(M active, V mag, V four) {
    return _mm512_mask_cmp_pd_mask(active, mag, four, _CMP_NLE_UQ);
  }
  static V blend(V a, M m, V b) { return _mm512_mask_mov_pd(a, m, b); }
  static void mask_store(T *p, M m, V a) { _mm512_mask_store_pd(p, m, a); }
  static void mask_store_i64(std::int64_t *p, M m, std::int64_t x) {
    _mm512_mask_store_epi64(p, m, _mm512_set1_epi64(x));
  }
  static V expand(V a, M m, const T *p) { return _mm512_mask_expandloadu_pd(a, m, p); }
  static void compress(T *p, M m, V a) { _mm512_mask_compressstoreu_pd(p, m, a); }
  // p[i] = idx[l] + offset for the lanes l in m, packed.
  static void compress_idx(int *p, M m, const int *idx, int offset) {
    _mm256_mask_compressstoreu_epi32(
        p, m,
        _mm256_add_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i *>(idx)),
                         _mm256_set1_epi32(offset)));
  }
  static M first_lanes(int n) { return static_cast<M>(n >= L ? 0xff : (1u << n) - 1u); }
  // c = re0 + (k0 + k * kstep) * dre exactly as the reference computes it (no FMA).
  static V cre(const int *idx, M valid, const RowJob &job) {
    const __m256i k = _mm256_maskz_add_epi32(
        valid, _mm256_set1_epi32(job.k0),
        _mm256_mullo_epi32(_mm256_maskz_loadu_epi32(valid, idx), _mm256_set1_epi32(job.kstep)));
    return _mm512_add_pd(_mm512_set1_pd(job.re0),
                         _mm512_mul_pd(_mm512_cvtepi32_pd(k), _mm512_set1_pd(job.dre)));
  }
  static T im(double ci) { return ci; }
  // iters[idx[l]] = count[l], mag2[idx[l]] = mag[l] for lanes in m.
  static void scatter(std::uint32_t *iters, float *mag2, const int *idx, M m, V count, V mg) {
    const __m256i k = _mm256_maskz_loadu_epi32(m, idx);
    _mm256_mask_i32scatter_epi32(iters, m, k, _mm512_cvttpd_epi32(count), 4);
    _mm256_mask_i32scatter_ps(mag2, m, k, _mm512_cvtpd_ps(mg), 4);
  }
  // The same for lanes whose pixels are consecutive from first (no scatter needed).
  static void store_run(std::uint32_t *iters, float *mag2, int first, M m, V count, V mg) {
    _mm256_mask_storeu_epi32(iters + first, m, _mm512_cvttpd_epi32(count));
    _mm256_mask_storeu_ps(mag2 + first, m, _mm512_cvtpd_ps(mg));
  }
  // Lanes in active whose start is at most lim; the smallest start among active lanes.
  static M started_by(const std::int64_t *start, M active, std::int64_t lim) {
    return _mm512_mask_cmple_epi64_mask(active, _mm512_loadu_si512(start), _mm512_set1_epi64(lim));
  }
  static std::int64_t min_start(const std::int64_t *start, M active) {
    return _mm512_mask_reduce_min_epi64(active, _mm512_loadu_si512(start));
  }
};

struct F32 {
  using T = float;
  using V = __m512;
  using M = __mmask16;
  static constexpr int L = 16;
  static V set1(T x) { return _mm512_set1_ps(x); }
  static V zero() { return _mm512_setzero_ps(); }
  static V load(const T *p) { return _mm512_load_ps(p); }
  static void store(T *p, V a) { _mm512_store_ps(p, a); }
  static V add(V a, V b) { return _mm512_add_ps(a, b); }
  static V mul(V a, V b) { return _mm512_mul_ps(a, b); }
  static V sub(V a, V b) { return _mm512_sub_ps(a, b); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static V fnma(V a, V b, V c) { return _mm512_fnmadd_ps(a, b, c); }
  static M escaped(M active, V mag, V four) {
    return _mm512_mask_cmp_ps_mask(active, mag, four, _CMP_NLE_UQ);
  }
  static V blend(V a, M m, V b) { return _mm512_mask_mov_ps(a, m, b); }
  static void mask_store(T *p, M m, V a) { _mm512_mask_store_ps(p, m, a); }
  static void mask_store_i64(std::int64_t *p, M m, std::int64_t x) {
    const __m512i v = _mm512_set1_epi64(x);
    _mm512_mask_store_epi64(p, static_cast<__mmask8>(m), v);
    _mm512_mask_store_epi64(p + 8, static_cast<__mmask8>(m >> 8), v);
  }
  static V expand(V a, M m, const T *p) { return _mm512_mask_expandloadu_ps(a, m, p); }
  static void compress(T *p, M m, V a) { _mm512_mask_compressstoreu_ps(p, m, a); }
  static void compress_idx(int *p, M m, const int *idx, int offset) {
    _mm512_mask_compressstoreu_epi32(
        p, m, _mm512_add_epi32(_mm512_loadu_si512(idx), _mm512_set1_epi32(offset)));
  }
  static M first_lanes(int n) { return static_cast<M>(n >= L ? 0xffff : (1u << n) - 1u); }
  // The f32 reference rounds the double coordinate to float.
  static V cre(const int *idx, M valid, const RowJob &job) {
    const __m512i k = _mm512_maskz_add_epi32(
        valid, _mm512_set1_epi32(job.k0),
        _mm512_mullo_epi32(_mm512_maskz_loadu_epi32(valid, idx), _mm512_set1_epi32(job.kstep)));
    const __m512d r0 = _mm512_set1_pd(job.re0), d = _mm512_set1_pd(job.dre);
    const __m512d lo =
        _mm512_add_pd(r0, _mm512_mul_pd(_mm512_cvtepi32_pd(_mm512_castsi512_si256(k)), d));
    const __m512d hi =
        _mm512_add_pd(r0, _mm512_mul_pd(_mm512_cvtepi32_pd(_mm512_extracti64x4_epi64(k, 1)), d));
    return _mm512_insertf32x8(_mm512_castps256_ps512(_mm512_cvtpd_ps(lo)), _mm512_cvtpd_ps(hi), 1);
  }
  static T im(double ci) { return static_cast<float>(ci); }
  static void scatter(std::uint32_t *iters, float *mag2, const int *idx, M m, V count, V mg) {
    const __m512i k = _mm512_maskz_loadu_epi32(m, idx);
    _mm512_mask_i32scatter_epi32(iters, m, k, _mm512_cvttps_epi32(count), 4);
    _mm512_mask_i32scatter_ps(mag2, m, k, mg, 4);
  }
  static void store_run(std::uint32_t *iters, float *mag2, int first, M m, V count, V mg) {
    _mm512_mask_storeu_epi32(iters + first, m, _mm512_cvttps_epi32(count));
    _mm512_mask_storeu_ps(mag2 + first, m, mg);
  }
  static M started_by(const std::int64_t *start, M active, std::int64_t lim) {
    const __m512i l = _mm512_set1_epi64(lim);
    const __mmask8 lo =
        _mm512_mask_cmple_epi64_mask(static_cast<__mmask8>(active), _mm512_loadu_si512(start), l);
    const __mmask8 hi = _mm512_mask_cmple_epi64_mask(static_cast<__mmask8>(active >> 8),
                                                     _mm512_loadu_si512(start + 8), l);
    return static_cast<M>(lo | (hi << 8));
  }
  static std::int64_t min_start(const std::int64_t *start, M active) {
    const std::int64_t a =
        _mm512_mask_reduce_min_epi64(static_cast<__mmask8>(active), _mm512_loadu_si512(start));
    const std::int64_t b = _mm512_mask_reduce_min_epi64(static_cast<__mmask8>(active >> 8),
                                                        _mm512_loadu_si512(start + 8));
    return a < b ? a : b;
  }
};

// Pre-pass, 8 pixels at a time: answers cardioid and bulb points and lists the others in work.
// The test runs in double on the coordinate as the kernel sees it (rounded to float for f32).
template <class S> int prepass(const RowJob &job, bool skip, int *work) {
  const __m512d r0 = _mm512_set1_pd(job.re0), d = _mm512_set1_pd(job.dre);
  const __m512d y = sizeof(typename S::T) == 8
                        ? _mm512_set1_pd(job.im)
                        : _mm512_set1_pd(static_cast<double>(static_cast<float>(job.im)));
  const __m512d y2 = _mm512_mul_pd(y, y), qy2 = _mm512_mul_pd(_mm512_set1_pd(0.25), y2);
  const __m512d quarter = _mm512_set1_pd(0.25), one = _mm512_set1_pd(1.0);
  const __m512d sixteenth = _mm512_set1_pd(0.0625);
  const __m256i max_iter = _mm256_set1_epi32(job.max_iter);
  int nwork = 0;
  __m256i k = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  for (int base = 0; base < job.n; base += 8, k = _mm256_add_epi32(k, _mm256_set1_epi32(8))) {
    const __mmask8 valid =
        static_cast<__mmask8>(job.n - base >= 8 ? 0xff : (1u << (job.n - base)) - 1u);
    __mmask8 inside = 0;
    if (skip) {
      const __m256i col = _mm256_add_epi32(_mm256_set1_epi32(job.k0),
                                           _mm256_mullo_epi32(k, _mm256_set1_epi32(job.kstep)));
      __m512d x = _mm512_add_pd(r0, _mm512_mul_pd(_mm512_cvtepi32_pd(col), d));
      if (sizeof(typename S::T) == 4) x = _mm512_cvtps_pd(_mm512_cvtpd_ps(x));
      const __m512d xm = _mm512_sub_pd(x, quarter);
      const __m512d q = _mm512_add_pd(_mm512_mul_pd(xm, xm), y2);
      const __m512d card = _mm512_mul_pd(q, _mm512_add_pd(q, xm));
      const __m512d xp = _mm512_add_pd(x, one);
      const __m512d bulb = _mm512_add_pd(_mm512_mul_pd(xp, xp), y2);
      inside = static_cast<__mmask8>(valid & (_mm512_cmp_pd_mask(card, qy2, _CMP_LT_OQ) |
                                              _mm512_cmp_pd_mask(bulb, sixteenth, _CMP_LT_OQ)));
      _mm256_mask_storeu_epi32(job.iters + base, inside, max_iter);
      _mm256_mask_storeu_ps(job.mag2 + base, inside, _mm256_setzero_ps());
    }
    const __mmask8 rest = static_cast<__mmask8>(valid & ~inside);
    _mm256_mask_compressstoreu_epi32(work + nwork, rest, k);
    nwork += __builtin_popcount(rest);
  }
  return nwork;
}
#else
// ---- AVX2 + FMA ------------------------------------------------------------------------------

// AVX2 has 16 ymm registers and no mask registers: masks are lane bits from movemask, and the
// rare compress/expand steps go through memory.

// The slow path's scans over lanes (masks are lane bits in an unsigned): lanes in active whose
// start is at most lim, and the smallest start among active lanes.
struct LaneScans {
  static unsigned started_by(const std::int64_t *start, unsigned active, std::int64_t lim) {
    unsigned r = 0;
    for (unsigned m = active; m; m &= m - 1)
      if (start[__builtin_ctz(m)] <= lim) r |= 1u << __builtin_ctz(m);
    return r;
  }
  static std::int64_t min_start(const std::int64_t *start, unsigned active) {
    std::int64_t r = INT64_MAX;
    for (unsigned m = active; m; m &= m - 1)
      r = start[__builtin_ctz(m)] < r ? start[__builtin_ctz(m)] : r;
    return r;
  }
};

struct F64 : LaneScans {
  using T = double;
  using V = __m256d;
  using M = unsigned;
  static constexpr int L = 4;
  static V set1(T x) { return _mm256_set1_pd(x); }
  static V zero() { return _mm256_setzero_pd(); }
  static V load(const T *p) { return _mm256_load_pd(p); }
  static void store(T *p, V a) { _mm256_store_pd(p, a); }
  static V add(V a, V b) { return _mm256_add_pd(a, b); }
  static V mul(V a, V b) { return _mm256_mul_pd(a, b); }
  static V sub(V a, V b) { return _mm256_sub_pd(a, b); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_pd(a, b, c); }
  static V fnma(V a, V b, V c) { return _mm256_fnmadd_pd(a, b, c); }
  static M escaped(M active, V mag, V four) {
    return active & static_cast<M>(_mm256_movemask_pd(_mm256_cmp_pd(mag, four, _CMP_NLE_UQ)));
  }
  static V blend(V a, M m, V b) {
    const __m256i sel = _mm256_set_epi64x(8, 4, 2, 1);
    const __m256i mv = _mm256_cmpeq_epi64(_mm256_and_si256(_mm256_set1_epi64x(m), sel), sel);
    return _mm256_blendv_pd(a, b, _mm256_castsi256_pd(mv));
  }
  static void mask_store(T *p, M m, V a) {
    const __m256i sel = _mm256_set_epi64x(8, 4, 2, 1);
    _mm256_maskstore_pd(p, _mm256_cmpeq_epi64(_mm256_and_si256(_mm256_set1_epi64x(m), sel), sel),
                        a);
  }
  static void mask_store_i64(std::int64_t *p, M m, std::int64_t x) {
    for (; m; m &= m - 1)
      p[__builtin_ctz(m)] = x;
  }
  static V expand(V a, M m, const T *p) {
    alignas(32) T t[L];
    store(t, a);
    for (; m; m &= m - 1)
      t[__builtin_ctz(m)] = *p++;
    return load(t);
  }
  static void compress(T *p, M m, V a) {
    alignas(32) T t[L];
    store(t, a);
    for (; m; m &= m - 1)
      *p++ = t[__builtin_ctz(m)];
  }
  static void compress_idx(int *p, M m, const int *idx, int offset) {
    for (; m; m &= m - 1)
      *p++ = idx[__builtin_ctz(m)] + offset;
  }
  static M first_lanes(int n) { return n >= L ? 0xfu : (1u << n) - 1u; }
  static V cre(const int *idx, M valid, const RowJob &job) {
    alignas(16) int t[L] = {};
    for (M m = valid; m; m &= m - 1)
      t[__builtin_ctz(m)] = job.k0 + idx[__builtin_ctz(m)] * job.kstep;
    const __m256d k = _mm256_cvtepi32_pd(_mm_load_si128(reinterpret_cast<const __m128i *>(t)));
    return _mm256_add_pd(_mm256_set1_pd(job.re0), _mm256_mul_pd(k, _mm256_set1_pd(job.dre)));
  }
  static T im(double ci) { return ci; }
  static void scatter(std::uint32_t *iters, float *mag2, const int *idx, M m, V count, V mg) {
    alignas(32) T c[L], g[L];
    store(c, count);
    store(g, mg);
    for (; m; m &= m - 1) {
      const int l = __builtin_ctz(m);
      iters[idx[l]] = static_cast<std::uint32_t>(c[l]);
      mag2[idx[l]] = static_cast<float>(g[l]);
    }
  }
  static void store_run(std::uint32_t *iters, float *mag2, int first, M m, V count, V mg) {
    int idx[L];
    for (int l = 0; l < L; ++l)
      idx[l] = first + l;
    scatter(iters, mag2, idx, m, count, mg);
  }
};

struct F32 : LaneScans {
  using T = float;
  using V = __m256;
  using M = unsigned;
  static constexpr int L = 8;
  static V set1(T x) { return _mm256_set1_ps(x); }
  static V zero() { return _mm256_setzero_ps(); }
  static V load(const T *p) { return _mm256_load_ps(p); }
  static void store(T *p, V a) { _mm256_store_ps(p, a); }
  static V add(V a, V b) { return _mm256_add_ps(a, b); }
  static V mul(V a, V b) { return _mm256_mul_ps(a, b); }
  static V sub(V a, V b) { return _mm256_sub_ps(a, b); }
  static V fma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
  static V fnma(V a, V b, V c) { return _mm256_fnmadd_ps(a, b, c); }
  static M escaped(M active, V mag, V four) {
    return active & static_cast<M>(_mm256_movemask_ps(_mm256_cmp_ps(mag, four, _CMP_NLE_UQ)));
  }
  static V blend(V a, M m, V b) {
    const __m256i sel = _mm256_set_epi32(128, 64, 32, 16, 8, 4, 2, 1);
    const __m256i mv =
        _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(m)), sel), sel);
    return _mm256_blendv_ps(a, b, _mm256_castsi256_ps(mv));
  }
  static void mask_store(T *p, M m, V a) {
    const __m256i sel = _mm256_set_epi32(128, 64, 32, 16, 8, 4, 2, 1);
    _mm256_maskstore_ps(
        p, _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(static_cast<int>(m)), sel), sel),
        a);
  }
  static void mask_store_i64(std::int64_t *p, M m, std::int64_t x) {
    for (; m; m &= m - 1)
      p[__builtin_ctz(m)] = x;
  }
  static V expand(V a, M m, const T *p) {
    alignas(32) T t[L];
    store(t, a);
    for (; m; m &= m - 1)
      t[__builtin_ctz(m)] = *p++;
    return load(t);
  }
  static void compress(T *p, M m, V a) {
    alignas(32) T t[L];
    store(t, a);
    for (; m; m &= m - 1)
      *p++ = t[__builtin_ctz(m)];
  }
  static void compress_idx(int *p, M m, const int *idx, int offset) {
    for (; m; m &= m - 1)
      *p++ = idx[__builtin_ctz(m)] + offset;
  }
  static M first_lanes(int n) { return n >= L ? 0xffu : (1u << n) - 1u; }
  static V cre(const int *idx, M valid, const RowJob &job) {
    alignas(32) int t[L] = {};
    for (M m = valid; m; m &= m - 1)
      t[__builtin_ctz(m)] = job.k0 + idx[__builtin_ctz(m)] * job.kstep;
    const __m256d r0 = _mm256_set1_pd(job.re0), d = _mm256_set1_pd(job.dre);
    const __m256d lo = _mm256_add_pd(
        r0,
        _mm256_mul_pd(_mm256_cvtepi32_pd(_mm_load_si128(reinterpret_cast<const __m128i *>(t))), d));
    const __m256d hi = _mm256_add_pd(
        r0, _mm256_mul_pd(
                _mm256_cvtepi32_pd(_mm_load_si128(reinterpret_cast<const __m128i *>(t + 4))), d));
    return _mm256_set_m128(_mm256_cvtpd_ps(hi), _mm256_cvtpd_ps(lo));
  }
  static T im(double ci) { return static_cast<float>(ci); }
  static void scatter(std::uint32_t *iters, float *mag2, const int *idx, M m, V count, V mg) {
    alignas(32) T c[L], g[L];
    store(c, count);
    store(g, mg);
    for (; m; m &= m - 1) {
      const int l = __builtin_ctz(m);
      iters[idx[l]] = static_cast<std::uint32_t>(c[l]);
      mag2[idx[l]] = g[l];
    }
  }
  static void store_run(std::uint32_t *iters, float *mag2, int first, M m, V count, V mg) {
    int idx[L];
    for (int l = 0; l < L; ++l)
      idx[l] = first + l;
    scatter(iters, mag2, idx, m, count, mg);
  }
};

// Interior of the main cardioid or the period-2 bulb: these points never escape. Tested on the
// coordinate as the kernel sees it (rounded to T).
template <class S> bool interior(double x, double y) {
  const double q = (x - 0.25) * (x - 0.25) + y * y;
  if (q * (q + (x - 0.25)) < 0.25 * y * y) return true;
  return (x + 1.0) * (x + 1.0) + y * y < 0.0625;
}

// Pre-pass: answers cardioid and bulb points and lists the others in work.
template <class S> int prepass(const RowJob &job, bool skip, int *work) {
  using T = typename S::T;
  int nwork = 0;
  for (int k = 0; k < job.n; ++k) {
    const T cr = static_cast<T>(job.re0 + (job.k0 + k * job.kstep) * job.dre);
    if (skip && interior<S>(static_cast<double>(cr), static_cast<double>(S::im(job.im)))) {
      job.iters[k] = static_cast<std::uint32_t>(job.max_iter);
      job.mag2[k] = 0.0f;
    } else {
      work[nwork++] = k;
    }
  }
  return nwork;
}
#endif

} // namespace
} // namespace overdrive::detail
