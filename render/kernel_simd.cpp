// SIMD escape-time kernels. This file is compiled twice (render/CMakeLists.txt): with AVX-512
// flags (OVERDRIVE_KERNEL_AVX512: double 8 lanes, float 16) and with AVX2 + FMA flags (double 4,
// float 8). Its code only runs after run-time dispatch (kernel.cpp), so nothing here may be an
// inline function or template shared with other translation units: all helpers live in an
// anonymous namespace and the entry points have ISA-specific names.
//
// Two phases over a batch of rows (RowsJob). Phase 1 runs the pixels of one row for the first
// kPhase1 iterations with an escape test after each iteration (cheap pixels finish here exactly)
// and queues the survivors. Phase 2 keeps kVec vectors of survivors in flight, each lane with
// its own c (so the queue spans rows and vectors stay full across row ends), tests for escape
// only every kBlock iterations, and refills finished lanes from the queue, running phase 1 on
// the next row when the queue runs dry. A lane that escaped inside a block is re-run from the
// saved block start, iteration by iteration, so counts are exactly what a per-iteration test
// would give: the counts of a pixel do not depend on the batch or lane it ran in.
#include "render/kernel_isa.hpp"
#include "render/render.hpp"

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <immintrin.h>

// GCC 12's AVX-512 conversion intrinsics start from an uninitialised "undefined" vector and
// trip -Wmaybe-uninitialized when inlined; the value is fully overwritten.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace overdrive::detail {
namespace {
#ifdef OVERDRIVE_KSTATS
// Instrumentation for tuning (off in every build of the project): vector-steps per phase.
long long g_p1_steps = 0, g_p2_steps = 0, g_rerun_steps = 0, g_slow = 0;
#define KSTAT(x) (x)
#else
#define KSTAT(x) ((void)0)
#endif

#ifndef OVERDRIVE_KBLOCK
#define OVERDRIVE_KBLOCK 16
#define OVERDRIVE_KPHASE1 24
#endif
constexpr int kBlock = OVERDRIVE_KBLOCK;   // iterations between escape tests in phase 2
constexpr int kPhase1 = OVERDRIVE_KPHASE1; // iterations with a per-iteration test in phase 1
constexpr int kRerun = 4;                  // packed vectors of parked lanes re-run side by side

#if defined(OVERDRIVE_KERNEL_AVX512)
// 32 zmm registers: 8 vectors (zr, zi each; c from memory) in phase 2 hide the 4-cycle FMA
// latency on 2 ports. More (12, 16) measured slower.
#ifndef OVERDRIVE_KVEC
#define OVERDRIVE_KVEC 8
#endif
constexpr int kVec = OVERDRIVE_KVEC; // independent vectors in flight in phase 2
constexpr int kVec1 = 4;             // vectors in phase 1 (5 registers of state per vector there)

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
  // c = re0 + k * dre exactly as the reference computes it (no FMA).
  static V cre(const int *idx, M valid, double re0, double dre) {
    const __m256i k = _mm256_maskz_loadu_epi32(valid, idx);
    return _mm512_add_pd(_mm512_set1_pd(re0),
                         _mm512_mul_pd(_mm512_cvtepi32_pd(k), _mm512_set1_pd(dre)));
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
  static V cre(const int *idx, M valid, double re0, double dre) {
    const __m512i k = _mm512_maskz_loadu_epi32(valid, idx);
    const __m512d r0 = _mm512_set1_pd(re0), d = _mm512_set1_pd(dre);
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
      __m512d x = _mm512_add_pd(r0, _mm512_mul_pd(_mm512_cvtepi32_pd(k), d));
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
// AVX2 has 16 ymm registers and no mask registers: masks are lane bits from movemask, and the
// rare compress/expand steps go through memory.
#ifndef OVERDRIVE_KVEC
#define OVERDRIVE_KVEC 6
#endif
constexpr int kVec = OVERDRIVE_KVEC;
constexpr int kVec1 = 2;

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
  static V cre(const int *idx, M valid, double re0, double dre) {
    alignas(16) int t[L] = {};
    for (M m = valid; m; m &= m - 1)
      t[__builtin_ctz(m)] = idx[__builtin_ctz(m)];
    const __m256d k = _mm256_cvtepi32_pd(_mm_load_si128(reinterpret_cast<const __m128i *>(t)));
    return _mm256_add_pd(_mm256_set1_pd(re0), _mm256_mul_pd(k, _mm256_set1_pd(dre)));
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
  static V cre(const int *idx, M valid, double re0, double dre) {
    alignas(32) int t[L] = {};
    for (M m = valid; m; m &= m - 1)
      t[__builtin_ctz(m)] = idx[__builtin_ctz(m)];
    const __m256d r0 = _mm256_set1_pd(re0), d = _mm256_set1_pd(dre);
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

template <class S> bool interior(double x, double y);

// Pre-pass: answers cardioid and bulb points and lists the others in work.
template <class S> int prepass(const RowJob &job, bool skip, int *work) {
  using T = typename S::T;
  int nwork = 0;
  for (int k = 0; k < job.n; ++k) {
    const T cr = static_cast<T>(job.re0 + k * job.dre);
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

// One iteration z <- z^2 + c in 4 instructions: zr' = (zr^2 + cr) - zi^2, zi' = 2 zr zi + ci.
// Written in asm because GCC 12 otherwise adds a register copy per FMA and spills zi when 8
// vectors are in flight; in this order every FMA overwrites its own input and one scratch
// register serves all vectors (renaming removes the false dependency).
template <class S>
inline __attribute__((always_inline)) void step(typename S::V &zr, typename S::V &zi,
                                                typename S::V cr, typename S::V ci) {
  typename S::V two_zr;
  if constexpr (sizeof(typename S::T) == 8)
    asm("vaddpd %[zr], %[zr], %[t]\n\t"
        "vfmadd213pd %[cr], %[zr], %[zr]\n\t"
        "vfnmadd231pd %[zi], %[zi], %[zr]\n\t"
        "vfmadd213pd %[ci], %[t], %[zi]"
        : [zr] "+v"(zr), [zi] "+v"(zi), [t] "=&v"(two_zr)
        : [cr] "v"(cr), [ci] "v"(ci));
  else
    asm("vaddps %[zr], %[zr], %[t]\n\t"
        "vfmadd213ps %[cr], %[zr], %[zr]\n\t"
        "vfnmadd231ps %[zi], %[zi], %[zr]\n\t"
        "vfmadd213ps %[ci], %[t], %[zi]"
        : [zr] "+v"(zr), [zi] "+v"(zi), [t] "=&v"(two_zr)
        : [cr] "v"(cr), [ci] "v"(ci));
}
// Phase 2's hot loop in one asm statement, on fixed registers. It loads the lanes' z, then runs
// blocks: save z (the block start, so a lane that escapes inside a block can be re-run exactly),
// kBlock iterations of kVec vectors with cr and ci as memory operands of the FMAs, and one escape
// test over all lanes (OR of the compare results, one branch). Escaped lanes are parked (inside
// the asm on AVX-512; AVX2 returns and its caller parks them); a parked or empty lane holds
// z = c = 0, which never escapes, so the test needs no mask of active lanes. It returns when
// enough lanes are parked or it reaches due, and stores z back.
// Why asm: written with intrinsics (or one asm per step), GCC 12 reshuffled and spilled the 16
// live vectors at every block start and ran out of mask registers for the per-vector active
// and parked masks: about 60 vector moves and 40 mask moves per block, many of them on the FMA
// ports. On an all-interior view the loop went from ~82% to ~88% of the FMA ports' measured
// peak (bench/README.md).
// clang-format off
#define OD_STR2(x) #x
#define OD_STR(x) OD_STR2(x)
#define OD_KV OD_STR(OVERDRIVE_KVEC)
#define OD_KB OD_STR(OVERDRIVE_KBLOCK)
#if defined(OVERDRIVE_KERNEL_AVX512)
#define OD_VB "64"
#define OD_R "%%zmm"
#define OD_TMP "16"  // step scratch
#define OD_MAG "17"  // |z|^2
#define OD_FOUR "18"
// Escape test of one vector, ORed into k2.
#define OD_ESC_INIT "kxorw %%k2, %%k2, %%k2\n\t"
#define OD_ESC(v, i, px)                                                    \
  "vmul" px " " OD_R #i ", " OD_R #i ", " OD_R OD_MAG "\n\t"                \
  "vfmadd231" px " " OD_R #v ", " OD_R #v ", " OD_R OD_MAG "\n\t"           \
  "vcmpnle_uq" px " " OD_R OD_FOUR ", " OD_R OD_MAG ", %%k1\n\t"            \
  "korw %%k1, %%k2, %%k2\n\t"
#define OD_ESC_TEST(px) "kortestw %%k2, %%k2\n\t"
#define OD_CLOBBERS                                                         \
  "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",   \
  "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16",    \
  "xmm17", "xmm18", "xmm19", "xmm20", "k1", "k2", "k3"
#else
#define OD_VB "32"
#define OD_R "%%ymm"
#define OD_TMP "12"
#define OD_MAG "13"
#define OD_FOUR "14"
#define OD_ACC "15"
#define OD_ESC_INIT "vxorpd " OD_R OD_ACC ", " OD_R OD_ACC ", " OD_R OD_ACC "\n\t"
#define OD_ESC(v, i, px)                                                    \
  "vmul" px " " OD_R #i ", " OD_R #i ", " OD_R OD_MAG "\n\t"                \
  "vfmadd231" px " " OD_R #v ", " OD_R #v ", " OD_R OD_MAG "\n\t"           \
  "vcmpnle_uq" px " " OD_R OD_FOUR ", " OD_R OD_MAG ", " OD_R OD_MAG "\n\t" \
  "vorpd " OD_R OD_MAG ", " OD_R OD_ACC ", " OD_R OD_ACC "\n\t"
// vtestpd would see only the sign bits of 64-bit lanes: f32 needs vtestps.
#define OD_ESC_TEST(px) "vtest" px " " OD_R OD_ACC ", " OD_R OD_ACC "\n\t"
#define OD_CLOBBERS                                                         \
  "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",   \
  "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"
#endif
// Field f of vector v (P2Block field numbers: 0 zr, 1 zi, 2 cr, 3 ci, 4 s0r, 5 s0i, 6 pr,
// 7 pi, 8 pcr, 9 pci), addressed from %[b].
#define OD_OFF(f, v) #f "*" OD_KV "*" OD_VB "+" #v "*" OD_VB "(%[b])"
// Vector v keeps zr in register v and zi in register i; px is "pd" or "ps".
#define OD_LOAD(v, i, px)                                                   \
  "vmova" px " " OD_OFF(0, v) ", " OD_R #v "\n\t"                           \
  "vmova" px " " OD_OFF(1, v) ", " OD_R #i "\n\t"
#define OD_STORE(v, i, px)                                                  \
  "vmova" px " " OD_R #v ", " OD_OFF(0, v) "\n\t"                           \
  "vmova" px " " OD_R #i ", " OD_OFF(1, v) "\n\t"
#define OD_SAVE(v, i, px)                                                   \
  "vmova" px " " OD_R #v ", " OD_OFF(4, v) "\n\t"                           \
  "vmova" px " " OD_R #i ", " OD_OFF(5, v) "\n\t"
// One iteration, as in step(): zr' = (zr^2 + cr) - zi^2, zi' = 2 zr zi + ci.
#define OD_STEP(v, i, px)                                                   \
  "vadd" px " " OD_R #v ", " OD_R #v ", " OD_R OD_TMP "\n\t"                \
  "vfmadd213" px " " OD_OFF(2, v) ", " OD_R #v ", " OD_R #v "\n\t"          \
  "vfnmadd231" px " " OD_R #i ", " OD_R #i ", " OD_R #v "\n\t"              \
  "vfmadd213" px " " OD_OFF(3, v) ", " OD_R OD_TMP ", " OD_R #i "\n\t"
#if OVERDRIVE_KVEC == 8
#define OD_ALL(M, px)                                                       \
  M(0, 8, px) M(1, 9, px) M(2, 10, px) M(3, 11, px)                         \
  M(4, 12, px) M(5, 13, px) M(6, 14, px) M(7, 15, px)
#elif OVERDRIVE_KVEC == 6
#define OD_ALL(M, px)                                                       \
  M(0, 6, px) M(1, 7, px) M(2, 8, px) M(3, 9, px) M(4, 10, px) M(5, 11, px)
#else
#error "OVERDRIVE_KVEC must be 6 or 8 (phase 2's asm names its registers)"
#endif
// Label 1: one block: save z, kBlock iterations, it += kBlock, escape test (flags: ZF clear
// when a lane escaped).
#define OD_BLOCK_BODY(px)                                                   \
  "1:\n\t" OD_ALL(OD_SAVE, px)                                              \
  ".rept " OD_KB "\n\t" OD_ALL(OD_STEP, px) ".endr\n\t"                     \
  "add $" OD_KB ", %[it]\n\t"                                               \
  OD_ESC_INIT OD_ALL(OD_ESC, px) OD_ESC_TEST(px)
#if defined(OVERDRIVE_KERNEL_AVX512)
// AVX-512 parks escaped lanes without leaving the asm (zmm19 = 0, zmm20 = the block's start
// iteration). Per vector, k1 = its escaped lanes: their block-start z and their c go to pr, pi,
// pcr, pci; the lanes' z and c become 0; pblock and parked are updated and the parked count
// grows. The asm returns once wake lanes are parked or it reaches due.
#define OD_PB(v, pbsz) "10*" OD_KV "*" OD_VB "+" #v "*" pbsz "(%[b])"
#define OD_PK(v, pbsz, kb) "10*" OD_KV "*" OD_VB "+" OD_KV "*" pbsz "+" #v "*" kb "(%[b])"
#define OD_PARK_COMMON(v, i, px, km, kb, pbsz)                              \
  "vmul" px " %%zmm" #i ", %%zmm" #i ", %%zmm17\n\t"                        \
  "vfmadd231" px " %%zmm" #v ", %%zmm" #v ", %%zmm17\n\t"                   \
  "vcmpnle_uq" px " %%zmm18, %%zmm17, %%k1\n\t"                             \
  "vmova" px " " OD_OFF(4, v) ", %%zmm16\n\t"                               \
  "vmova" px " %%zmm16, " OD_OFF(6, v) "%{%%k1%}\n\t"                       \
  "vmova" px " " OD_OFF(5, v) ", %%zmm16\n\t"                               \
  "vmova" px " %%zmm16, " OD_OFF(7, v) "%{%%k1%}\n\t"                       \
  "vmova" px " " OD_OFF(2, v) ", %%zmm16\n\t"                               \
  "vmova" px " %%zmm16, " OD_OFF(8, v) "%{%%k1%}\n\t"                       \
  "vmova" px " " OD_OFF(3, v) ", %%zmm16\n\t"                               \
  "vmova" px " %%zmm16, " OD_OFF(9, v) "%{%%k1%}\n\t"                       \
  "vmova" px " %%zmm19, " OD_OFF(2, v) "%{%%k1%}\n\t"                       \
  "vmova" px " %%zmm19, " OD_OFF(3, v) "%{%%k1%}\n\t"                       \
  "vmova" px " %%zmm19, %%zmm" #v "%{%%k1%}\n\t"                            \
  "vmova" px " %%zmm19, %%zmm" #i "%{%%k1%}\n\t"                            \
  "vmovdqa64 %%zmm20, " OD_PB(v, pbsz) "%{%%k1%}\n\t"                       \
  "kmov" km " " OD_PK(v, pbsz, kb) ", %%k2\n\t"                             \
  "korw %%k1, %%k2, %%k2\n\t"                                               \
  "kmov" km " %%k2, " OD_PK(v, pbsz, kb) "\n\t"                             \
  "kmovw %%k1, %k[t]\n\t"                                                   \
  "popcnt %k[t], %k[t]\n\t"                                                 \
  "add %k[t], %[parked]\n\t"
#define OD_PARK_PD(v, i, px) OD_PARK_COMMON(v, i, px, "b", "1", "64")
// 16 lanes: pblock takes two 8-lane stores.
#define OD_PARK_PS(v, i, px)                                                \
  OD_PARK_COMMON(v, i, px, "w", "2", "128")                                 \
  "kshiftrw $8, %%k1, %%k3\n\t"                                             \
  "vmovdqa64 %%zmm20, 64+" OD_PB(v, "128") "%{%%k3%}\n\t"
#define OD_BLOCKS(px, PARK)                                                 \
  "vmova" px " %[four], " OD_R OD_FOUR "\n\t"                               \
  "vxor" px " %%zmm19, %%zmm19, %%zmm19\n\t"                                \
  OD_ALL(OD_LOAD, px)                                                       \
  OD_BLOCK_BODY(px)                                                         \
  "jnz 3f\n"                                                                \
  "4:\n\t"                                                                  \
  "cmp %[due], %[it]\n\t"                                                   \
  "jl 1b\n\t"                                                               \
  "jmp 2f\n"                                                                \
  "3:\n\t"                                                                  \
  "lea -" OD_KB "(%[it]), %[t]\n\t"                                         \
  "vpbroadcastq %[t], %%zmm20\n\t"                                          \
  OD_ALL(PARK, px)                                                          \
  "cmp %[wake], %[parked]\n\t"                                              \
  "jl 4b\n"                                                                 \
  "2:\n\t" OD_ALL(OD_STORE, px)
#else
// AVX2 returns after the first block in which a lane escaped; the caller parks it.
#define OD_BLOCKS(px, PARK)                                                 \
  "vmova" px " %[four], " OD_R OD_FOUR "\n\t"                               \
  OD_ALL(OD_LOAD, px)                                                       \
  OD_BLOCK_BODY(px)                                                         \
  "jnz 2f\n\t"                                                              \
  "cmp %[due], %[it]\n\t"                                                   \
  "jl 1b\n"                                                                 \
  "2:\n\t" OD_ALL(OD_STORE, px)
#endif
// clang-format on

// Phase 2's lane state, contiguous in the order the asm addresses it (OD_OFF field numbers).
template <class S> struct alignas(64) P2Block {
  using T = typename S::T;
  T zr[kVec * S::L], zi[kVec * S::L], cr[kVec * S::L], ci[kVec * S::L]; // 0-3
  T s0r[kVec * S::L], s0i[kVec * S::L]; // 4-5: z at the start of the current block
  T pr[kVec * S::L], pi[kVec * S::L];   // 6-7: parked lanes: z at the start of their block
  T pcr[kVec * S::L], pci[kVec * S::L]; // 8-9: parked lanes: c (zeroed in the lane itself)
  std::int64_t pblock[kVec * S::L];     // parked lanes: phase-2 iteration at that block start
  typename S::M parked[kVec];           // lanes parked since the last slow path
};

// Runs blocks until it >= due or (AVX-512: wake lanes are parked; AVX2: a lane escaped in the
// last block); returns the new it. parked counts the lanes parked.
template <class S>
std::int64_t run_blocks(P2Block<S> &b, std::int64_t it, std::int64_t due, int &parked, int wake) {
  using V = typename S::V;
  static_assert(sizeof(V) == sizeof(typename S::T) * S::L);
  static_assert(offsetof(P2Block<S>, pblock) == 10 * kVec * sizeof(V));
  static_assert(offsetof(P2Block<S>, parked) == offsetof(P2Block<S>, pblock) + 8 * kVec * S::L);
  const V four = S::set1(typename S::T(4));
  std::int64_t t;
#define OD_BLOCKS_ASM(px, PARK)                                                                    \
  asm volatile(OD_BLOCKS(px, PARK)                                                                 \
               : [it] "+r"(it), [parked] "+r"(parked), [t] "=&r"(t)                                \
               : [b] "r"(&b), [due] "r"(due), [wake] "r"(wake), [four] "m"(four)                   \
               : OD_CLOBBERS, "cc", "memory")
  if constexpr (sizeof(typename S::T) == 8)
    OD_BLOCKS_ASM("pd", OD_PARK_PD);
  else
    OD_BLOCKS_ASM("ps", OD_PARK_PS);
  (void)t;
  return it;
}
template <class S>
inline __attribute__((always_inline)) typename S::V mag(typename S::V zr, typename S::V zi) {
  return S::fma(zr, zr, S::mul(zi, zi));
}

// Interior of the main cardioid or the period-2 bulb: these points never escape. Tested on the
// coordinate as the kernel sees it (rounded to T).
template <class S> bool interior(double x, double y) {
  const double q = (x - 0.25) * (x - 0.25) + y * y;
  if (q * (q + (x - 0.25)) < 0.25 * y * y) return true;
  return (x + 1.0) * (x + 1.0) + y * y < 0.0625;
}

// Phase 1's state for kVec1 vectors: z, c, the escape iteration and |z|^2 at escape, and the
// lanes still active.
template <class S> struct alignas(64) P1Block {
  typename S::T zr[kVec1 * S::L], zi[kVec1 * S::L], cr[kVec1 * S::L], jv[kVec1 * S::L],
      mg[kVec1 * S::L];
  typename S::M act[kVec1];
};

// Up to n iterations from z = 0 with a test after each (a lane that escapes at iteration j gets
// jv = j and mg = its |z|^2 then, and leaves act; other lanes' jv and mg are left as they were);
// stops early once no lane is active. Returns the iterations run; z is stored back.
template <class S> int phase1_run(P1Block<S> &p, typename S::V ci, int n) {
  using V = typename S::V;
  using M = typename S::M;
  constexpr int L = S::L;
  const V four = S::set1(typename S::T(4));
  V zr[kVec1], zi[kVec1], cr[kVec1], jv[kVec1], mg[kVec1];
  M act[kVec1];
  for (int v = 0; v < kVec1; ++v) {
    zr[v] = zi[v] = jv[v] = mg[v] = S::zero();
    cr[v] = S::load(p.cr + v * L);
    act[v] = p.act[v];
  }
  int j = 1;
  for (; j <= n; ++j) {
    const V jj = S::set1(static_cast<typename S::T>(j));
    unsigned any = 0;
#pragma GCC unroll 8
    for (int v = 0; v < kVec1; ++v) {
      step<S>(zr[v], zi[v], cr[v], ci);
      const V m = mag<S>(zr[v], zi[v]);
      const M e = S::escaped(act[v], m, four);
      jv[v] = S::blend(jv[v], e, jj);
      mg[v] = S::blend(mg[v], e, m);
      act[v] = static_cast<M>(act[v] & ~e);
      any |= act[v];
    }
    if (!any) break;
  }
  for (int v = 0; v < kVec1; ++v) {
    S::store(p.zr + v * L, zr[v]);
    S::store(p.zi + v * L, zi[v]);
    S::store(p.jv + v * L, jv[v]);
    S::store(p.mg + v * L, mg[v]);
    p.act[v] = act[v];
  }
  return j > n ? n : j;
}

#if defined(OVERDRIVE_KERNEL_AVX512) && !defined(OVERDRIVE_P1_C)
// The same loop in asm for AVX-512 (GCC 12 spilled z to the stack every iteration and moved the
// masks through general registers, which made phase 1 latency-bound). Vector v lives in zmm v
// (zr), 4+v (zi), 8+v (cr), 12+v (jv), 16+v (mg) and k3+v (act); the results are identical.
// clang-format off
// Field f of vector v (P1Block: 0 zr, 1 zi, 2 cr, 3 jv, 4 mg; act[v] has kb bytes).
#define OD_P1OFF(f, v) #f "*4*64+" #v "*64(%[p])"
#define OD_P1MASK(v, kb) "5*4*64+" #v "*" kb "(%[p])"
// Vector v: zr in zmm v, zi in zmm i, cr in zmm c, act in k k.
#define OD_P1ALL(M, px, km, kb)                                             \
  M(0, 4, 8, 3, px, km, kb) M(1, 5, 9, 4, px, km, kb)                       \
  M(2, 6, 10, 5, px, km, kb) M(3, 7, 11, 6, px, km, kb)
// Iteration 1 from z = 0 gives z = c exactly (0 * 0 + c, the FMAs' +0 included, so -0 becomes
// +0 as in the loop): z starts at c + 0 and the loop enters at the first test.
#define OD_P1LOAD(v, i, c, k, px, km, kb)                                   \
  "vmova" px " " OD_P1OFF(2, v) ", %%zmm" #c "\n\t"                         \
  "vadd" px " %%zmm16, %%zmm" #c ", %%zmm" #v "\n\t"                        \
  "vadd" px " %%zmm16, %%zmm12, %%zmm" #i "\n\t"                            \
  "kmov" km " " OD_P1MASK(v, kb) ", %%k" #k "\n\t"
#define OD_P1STORE(v, i, c, k, px, km, kb)                                  \
  "vmova" px " %%zmm" #v ", " OD_P1OFF(0, v) "\n\t"                         \
  "vmova" px " %%zmm" #i ", " OD_P1OFF(1, v) "\n\t"
// zmm12 ci, 13 four, 14 one, 15 the iteration number, 16 step scratch, 17 |z|^2.
#define OD_P1STEP(v, i, c, k, px, km, kb)                                   \
  "vadd" px " %%zmm" #v ", %%zmm" #v ", %%zmm16\n\t"                        \
  "vfmadd213" px " %%zmm" #c ", %%zmm" #v ", %%zmm" #v "\n\t"               \
  "vfnmadd231" px " %%zmm" #i ", %%zmm" #i ", %%zmm" #v "\n\t"              \
  "vfmadd213" px " %%zmm12, %%zmm16, %%zmm" #i "\n\t"
// The iteration number and |z|^2 of lanes escaping now go to jv and mg with masked stores:
// store ports are idle here, and register blends would take FMA-port slots.
#define OD_P1TEST(v, i, c, k, px, km, kb)                                   \
  "vmul" px " %%zmm" #i ", %%zmm" #i ", %%zmm17\n\t"                        \
  "vfmadd231" px " %%zmm" #v ", %%zmm" #v ", %%zmm17\n\t"                   \
  "vcmpnle_uq" px " %%zmm13, %%zmm17, %%k1%{%%k" #k "%}\n\t"                \
  "vmova" px " %%zmm15, " OD_P1OFF(3, v) "%{%%k1%}\n\t"                     \
  "vmova" px " %%zmm17, " OD_P1OFF(4, v) "%{%%k1%}\n\t"                     \
  "kandnw %%k" #k ", %%k1, %%k" #k "\n\t"
#define OD_P1CLOBBERS                                                       \
  "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",   \
  "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16",    \
  "xmm17", "k1", "k2", "k3", "k4", "k5", "k6"
// The loop counts %[n] down; act[3..0] come back packed into 16-bit fields of %[a] (stored
// to memory as bytes and read back as one wider load, they stalled on store forwarding).
#define OD_P1(px, km, kb)                                                   \
  "vmova" px " %[ci], %%zmm12\n\t"                                          \
  "vmova" px " %[four], %%zmm13\n\t"                                        \
  "vmova" px " %[one], %%zmm14\n\t"                                         \
  "vxor" px " %%zmm16, %%zmm16, %%zmm16\n\t"                                \
  OD_P1ALL(OD_P1LOAD, px, km, kb)                                           \
  "vmova" px " %%zmm14, %%zmm15\n\t"                                        \
  "jmp 3f\n"                                                                \
  "1:\n\t"                                                                  \
  "vadd" px " %%zmm14, %%zmm15, %%zmm15\n\t"                                \
  OD_P1ALL(OD_P1STEP, px, km, kb)                                           \
  "3:\n\t"                                                                  \
  OD_P1ALL(OD_P1TEST, px, km, kb)                                           \
  "korw %%k3, %%k4, %%k2\n\t"                                               \
  "korw %%k5, %%k2, %%k2\n\t"                                               \
  "korw %%k6, %%k2, %%k2\n\t"                                               \
  "dec %[n]\n\t"                                                            \
  "kortestw %%k2, %%k2\n\t"                                                 \
  "jz 2f\n\t"                                                               \
  "test %[n], %[n]\n\t"                                                     \
  "jnz 1b\n"                                                                \
  "2:\n\t"                                                                  \
  OD_P1ALL(OD_P1STORE, px, km, kb)                                          \
  "kmovw %%k6, %k[a]\n\t"                                                   \
  "shl $16, %q[a]\n\t"                                                      \
  "kmovw %%k5, %k[t]\n\t"                                                   \
  "or %q[t], %q[a]\n\t"                                                     \
  "shl $16, %q[a]\n\t"                                                      \
  "kmovw %%k4, %k[t]\n\t"                                                   \
  "or %q[t], %q[a]\n\t"                                                     \
  "shl $16, %q[a]\n\t"                                                      \
  "kmovw %%k3, %k[t]\n\t"                                                   \
  "or %q[t], %q[a]"
// clang-format on

// The asm statement for px "pd" (mask bytes km "b", kb "1") or "ps" ("w", "2").
#define OD_P1_ASM(px, km, kb)                                                                      \
  asm volatile(OD_P1(px, km, kb)                                                                   \
               : [n] "+r"(left), [a] "=&r"(acts), [t] "=&r"(tmp)                                   \
               : [p] "r"(&p), [ci] "m"(ci), [four] "m"(four), [one] "m"(one)                       \
               : OD_P1CLOBBERS, "cc", "memory")
template <class S> int phase1_asm(P1Block<S> &p, typename S::V ci, int n) {
  static_assert(kVec1 == 4 && offsetof(P1Block<S>, act) == 5 * 4 * 64);
  const typename S::V four = S::set1(4), one = S::set1(1);
  int left = n;
  std::uint64_t acts, tmp;
  if constexpr (sizeof(typename S::T) == 8)
    OD_P1_ASM("pd", "b", "1");
  else
    OD_P1_ASM("ps", "w", "2");
  for (int v = 0; v < kVec1; ++v)
    p.act[v] = static_cast<typename S::M>(acts >> (16 * v));
  return n - left;
}
template <> int phase1_run<F64>(P1Block<F64> &p, __m512d ci, int n) {
  return phase1_asm<F64>(p, ci, n);
}
template <> int phase1_run<F32>(P1Block<F32> &p, __m512 ci, int n) {
  return phase1_asm<F32>(p, ci, n);
}
#endif

template <class S> struct Scratch {
  int *work;
  int *qidx;
  typename S::T *qzr, *qzi, *qcr, *qci;
};

// Work list of one row (n) and the survivor queue: at most one row plus fewer than L carried
// over (rows are added only when the queue cannot fill the free lanes).
template <class S> int scratch_layout(void *base, int n, Scratch<S> *s) {
  using T = typename S::T;
  const auto pad = [](std::size_t b) { return (b + 63) & ~std::size_t{63}; };
  const std::size_t cap = static_cast<std::size_t>(n) + 64;
  std::size_t off = 0;
  auto *p = static_cast<unsigned char *>(base);
  auto take = [&](std::size_t bytes) {
    unsigned char *r = p ? p + off : nullptr;
    off += pad(bytes);
    return r;
  };
  auto *w = take(cap * sizeof(int));
  auto *qi = take(cap * sizeof(int));
  auto *a = take(cap * sizeof(T));
  auto *b = take(cap * sizeof(T));
  auto *c = take(cap * sizeof(T));
  auto *d = take(cap * sizeof(T));
  if (s)
    *s = {reinterpret_cast<int *>(w), reinterpret_cast<int *>(qi), reinterpret_cast<T *>(a),
          reinterpret_cast<T *>(b),   reinterpret_cast<T *>(c),    reinterpret_cast<T *>(d)};
  return static_cast<int>(off);
}

template <class S> void kernel(const RowsJob &rj, bool skip, void *scratch) {
  using T = typename S::T;
  using V = typename S::V;
  using M = typename S::M;
  constexpr int L = S::L;
#ifdef OVERDRIVE_KPARK
  constexpr int kPark = OVERDRIVE_KPARK;
#else
  // Parked (escaped) lanes that trigger the slow path: its fixed cost (state spill, refill,
  // branch misses) outweighs idle lanes until about three quarters of them wait.
  constexpr int kPark = kVec * L * 3 / 4;
#endif
  Scratch<S> sc;
  scratch_layout<S>(scratch, rj.n, &sc);
  const int max_iter = rj.max_iter;
  const auto max_u = static_cast<std::uint32_t>(max_iter);
  const V four = S::set1(T(4));
  const int p1 = max_iter < kPhase1 ? max_iter : kPhase1;

  int q = 0, nq = 0; // queue of phase-1 survivors: [q, nq) not yet in a lane
  int row = 0;       // next row for phase 1

  // ---- phase 1, one row: per-iteration test, kVec1 vectors, survivors appended to the queue --
  P1Block<S> p1b{}; // zeroed once: jv and mg of lanes that never escape are never written
  auto phase1 = [&](int r) {
    const std::size_t roff = static_cast<std::size_t>(r) * static_cast<std::size_t>(rj.n);
    const RowJob job{rj.re0, rj.dre, rj.im[r], rj.n, max_iter, rj.iters + roff, rj.mag2 + roff};
    const int nwork = prepass<S>(job, skip, sc.work);
    const T cim = S::im(job.im);
    const V ci = S::set1(cim);
    const int gbase = static_cast<int>(roff);
    for (int g = 0; g < nwork; g += kVec1 * L) {
      P1Block<S> &pb = p1b;
      for (int v = 0; v < kVec1; ++v) {
        const int base = g + v * L;
        pb.act[v] = S::first_lanes(nwork - base > 0 ? nwork - base : 0);
        S::store(pb.cr + v * L, S::cre(sc.work + base, pb.act[v], job.re0, job.dre));
      }
      [[maybe_unused]] const int ran = phase1_run<S>(pb, ci, p1);
      KSTAT(g_p1_steps += kVec1 * ran);
      M act[kVec1];
      V zr[kVec1], zi[kVec1], cr[kVec1], jv[kVec1], mg[kVec1];
      for (int v = 0; v < kVec1; ++v) {
        act[v] = pb.act[v];
        zr[v] = S::load(pb.zr + v * L);
        zi[v] = S::load(pb.zi + v * L);
        cr[v] = S::load(pb.cr + v * L);
        jv[v] = S::load(pb.jv + v * L);
        mg[v] = S::load(pb.mg + v * L);
      }
      for (int v = 0; v < kVec1; ++v) {
        const int base = g + v * L;
        if (base >= nwork) break;
        const int nvalid = nwork - base < L ? nwork - base : L;
        const M valid = S::first_lanes(nvalid);
        // Without interior skipping (and mostly with it) the lanes hold consecutive pixels:
        // plain masked stores then replace the scatters.
        const int *idx = sc.work + base;
        const bool run = idx[nvalid - 1] - idx[0] == nvalid - 1;
        const auto put = [&](M m, V count, V mgv) {
          if (run)
            S::store_run(job.iters, job.mag2, idx[0], m, count, mgv);
          else
            S::scatter(job.iters, job.mag2, idx, m, count, mgv);
        };
        put(static_cast<M>(valid & ~act[v]), jv[v], mg[v]);
        if (p1 == max_iter) {
          put(act[v], S::set1(static_cast<T>(max_iter)), S::zero());
        } else if (act[v]) {
          const int got = __builtin_popcount(static_cast<unsigned>(act[v]));
          S::compress(sc.qzr + nq, act[v], zr[v]);
          S::compress(sc.qzi + nq, act[v], zi[v]);
          S::compress(sc.qcr + nq, act[v], cr[v]);
          S::compress(sc.qci + nq, act[v], ci);
          S::compress_idx(sc.qidx + nq, act[v], sc.work + base, gbase);
          nq += got;
        }
      }
    }
  };
  // Makes at least want queued pixels available, running phase 1 on further rows as needed.
  auto produce = [&](int want) {
    if (nq - q >= want || row >= rj.rows) return;
    const int keep = nq - q;
    if (q > 0 && keep > 0) {
      std::memmove(sc.qidx, sc.qidx + q, static_cast<std::size_t>(keep) * sizeof(int));
      std::memmove(sc.qzr, sc.qzr + q, static_cast<std::size_t>(keep) * sizeof(T));
      std::memmove(sc.qzi, sc.qzi + q, static_cast<std::size_t>(keep) * sizeof(T));
      std::memmove(sc.qcr, sc.qcr + q, static_cast<std::size_t>(keep) * sizeof(T));
      std::memmove(sc.qci, sc.qci + q, static_cast<std::size_t>(keep) * sizeof(T));
    }
    q = 0;
    nq = keep;
    while (nq < want && row < rj.rows)
      phase1(row++);
  };

  produce(1);
  if (nq == 0) return;

  // ---- phase 2: kVec vectors, test every kBlock iterations, refill finished lanes ----------
  // The queue spans rows, so vectors stay full across row ends; each lane carries its own ci.
  // A lane that escapes is parked (its block-start z and block saved, lane idle) and the slow
  // path that re-runs parked lanes and refills them runs only once kPark lanes wait, so its
  // cost and branch miss are shared by many pixels.
  struct alignas(64) State {
    P2Block<S> b;                 // z, c and the block-start z of every lane
    std::int64_t start[kVec * L]; // phase-2 iteration at which the lane's pixel had done 0
    int idx[kVec * L];
    M active[kVec];
  };
  State st;
  std::memset(&st, 0, sizeof st);
  // Parked lanes packed for their re-run (room for every lane plus a partial vector group).
  struct alignas(64) Rerun {
    T zr[kVec * L + kRerun * L], zi[kVec * L + kRerun * L], cr[kVec * L + kRerun * L],
        ci[kVec * L + kRerun * L], j[kVec * L + kRerun * L], m[kVec * L + kRerun * L];
    std::int64_t base[kVec * L];
    int idx[kVec * L];
  };
  Rerun rr;
  std::memset(&rr, 0, sizeof rr);
  std::int64_t it = 0; // iterations run by phase 2 so far (all lanes step together)
  int live = 0;        // active lanes
  // Puts queued pixels into the lanes of vector v in mask free (all inactive after this).
  auto refill = [&](int v, M free) {
    const int o = v * L;
    const int want = __builtin_popcount(static_cast<unsigned>(free));
    produce(want);
    const int got = want < nq - q ? want : nq - q;
    M fill = 0;
    unsigned bits = free;
    for (int i = 0; i < got; ++i, bits &= bits - 1)
      fill = static_cast<M>(fill | (1u << __builtin_ctz(bits)));
    const M empty = static_cast<M>(free & ~fill);
    S::store(st.b.zr + o,
             S::blend(S::expand(S::load(st.b.zr + o), fill, sc.qzr + q), empty, S::zero()));
    S::store(st.b.zi + o,
             S::blend(S::expand(S::load(st.b.zi + o), fill, sc.qzi + q), empty, S::zero()));
    S::store(st.b.cr + o,
             S::blend(S::expand(S::load(st.b.cr + o), fill, sc.qcr + q), empty, S::zero()));
    S::store(st.b.ci + o,
             S::blend(S::expand(S::load(st.b.ci + o), fill, sc.qci + q), empty, S::zero()));
    for (unsigned b = fill; b; b &= b - 1) {
      const int l = __builtin_ctz(b);
      st.idx[o + l] = sc.qidx[q++];
      st.start[o + l] = it - p1;
    }
    st.active[v] = static_cast<M>((st.active[v] & ~free) | fill);
    live += got;
  };
  auto deadline = [&]() {
    std::int64_t d = INT64_MAX;
    for (int v = 0; v < kVec; ++v) {
      const std::int64_t s = S::min_start(st.start + v * L, st.active[v]);
      if (s < d) d = s;
    }
    return d == INT64_MAX ? d : d + max_iter;
  };
  for (int v = 0; v < kVec; ++v)
    refill(v, S::first_lanes(L));
  std::int64_t due = deadline();

  for (;;) {
    for (int v = 0; v < kVec; ++v)
      st.b.parked[v] = 0;
    // Park the slow path until this many lanes wait, or all lanes would idle.
    const bool more = q < nq || row < rj.rows;
    const int wake = more && live >= kPark ? kPark : live;
    int parked = 0;
    for (;;) {
      [[maybe_unused]] const std::int64_t before = it;
      it = run_blocks<S>(st.b, it, due, parked, wake);
      KSTAT(g_p2_steps += kVec * (it - before));
#if !defined(OVERDRIVE_KERNEL_AVX512)
      // AVX2 (AVX-512 parks inside the asm): lanes that escaped in the last block are parked
      // (block start and c saved for the re-run) and their z and c zeroed so they stay quiet
      // until the slow path.
      for (int v = 0; v < kVec; ++v) {
        const int o = v * L;
        const V zr = S::load(st.b.zr + o), zi = S::load(st.b.zi + o);
        const M e = S::escaped(S::first_lanes(L), mag<S>(zr, zi), four);
        if (!e) continue;
        S::mask_store(st.b.pr + o, e, S::load(st.b.s0r + o));
        S::mask_store(st.b.pi + o, e, S::load(st.b.s0i + o));
        S::mask_store(st.b.pcr + o, e, S::load(st.b.cr + o));
        S::mask_store(st.b.pci + o, e, S::load(st.b.ci + o));
        S::mask_store_i64(st.b.pblock + o, e, it - kBlock);
        S::mask_store(st.b.zr + o, e, S::zero());
        S::mask_store(st.b.zi + o, e, S::zero());
        S::mask_store(st.b.cr + o, e, S::zero());
        S::mask_store(st.b.ci + o, e, S::zero());
        st.b.parked[v] = static_cast<M>(st.b.parked[v] | e);
        parked += __builtin_popcount(static_cast<unsigned>(e));
      }
#endif
      if (parked >= wake || it >= due) break;
    }
    for (int v = 0; v < kVec; ++v)
      st.active[v] = static_cast<M>(st.active[v] & ~st.b.parked[v]);
    live -= parked;
    KSTAT(++g_slow);
    // Slow path: exact counts of parked lanes by re-running their block from its saved start,
    // lanes out of iterations, then refill. The parked lanes of all vectors are packed into as
    // few vectors as possible and re-run side by side (one dependent chain per vector would
    // leave the FMA pipes idle).
    int np = 0;
    for (int v = 0; v < kVec; ++v) {
      const M park = st.b.parked[v];
      if (!park) continue;
      const int o = v * L;
      S::compress(rr.zr + np, park, S::load(st.b.pr + o));
      S::compress(rr.zi + np, park, S::load(st.b.pi + o));
      S::compress(rr.cr + np, park, S::load(st.b.pcr + o));
      S::compress(rr.ci + np, park, S::load(st.b.pci + o));
      for (unsigned b = park; b; b &= b - 1, ++np) {
        const int l = __builtin_ctz(b);
        rr.idx[np] = st.idx[o + l];
        rr.base[np] = st.b.pblock[o + l] - st.start[o + l];
      }
    }
    for (int g = 0; g < np; g += kRerun * L) {
      V rzr[kRerun], rzi[kRerun], rcr[kRerun], rci[kRerun], jv[kRerun], mg[kRerun];
      M pend[kRerun];
#pragma GCC unroll 8
      for (int u = 0; u < kRerun; ++u) {
        const int o = g + u * L;
        pend[u] = S::first_lanes(np - o > 0 ? np - o : 0);
        rzr[u] = S::load(rr.zr + o);
        rzi[u] = S::load(rr.zi + o);
        rcr[u] = S::load(rr.cr + o);
        rci[u] = S::load(rr.ci + o);
        jv[u] = mg[u] = S::zero();
      }
      for (int j = 1; j <= kBlock; ++j) {
        const V jj = S::set1(static_cast<T>(j));
        unsigned any = 0;
#pragma GCC unroll 8
        for (int u = 0; u < kRerun; ++u) {
          step<S>(rzr[u], rzi[u], rcr[u], rci[u]);
          const V m = mag<S>(rzr[u], rzi[u]);
          const M e = S::escaped(pend[u], m, four);
          jv[u] = S::blend(jv[u], e, jj);
          mg[u] = S::blend(mg[u], e, m);
          pend[u] = static_cast<M>(pend[u] & ~e);
          any |= pend[u];
        }
        KSTAT(g_rerun_steps += kRerun);
        if (!any) break;
      }
#pragma GCC unroll 8
      for (int u = 0; u < kRerun; ++u) {
        S::store(rr.j + g + u * L, jv[u]);
        S::store(rr.m + g + u * L, mg[u]);
      }
    }
    for (int i = 0; i < np; ++i) {
      const std::int64_t n = rr.base[i] + static_cast<std::int64_t>(rr.j[i]);
      const int k = rr.idx[i];
      if (n > max_iter) {
        rj.iters[k] = max_u;
        rj.mag2[k] = 0.0f;
      } else {
        rj.iters[k] = static_cast<std::uint32_t>(n);
        rj.mag2[k] = static_cast<float>(rr.m[i]);
      }
    }
    for (int v = 0; v < kVec; ++v) {
      const int o = v * L;
      M retire = st.b.parked[v];
      if (it >= due) {
        // Lanes out of iterations: interior points.
        const M done = S::started_by(st.start + o, st.active[v], it - max_iter);
        for (unsigned b = done; b; b &= b - 1) {
          const int k = st.idx[o + __builtin_ctz(b)];
          rj.iters[k] = max_u;
          rj.mag2[k] = 0.0f;
        }
        retire = static_cast<M>(retire | done);
        live -= __builtin_popcount(static_cast<unsigned>(done));
      }
      if (retire) refill(v, retire);
    }
    if (live == 0) break; // queue empty, no rows left and no lane left
    // Lanes filled since start later than every active lane, so due stays a lower bound of the
    // next deadline until it is reached (an early due only costs an extra visit here).
    if (it >= due) due = deadline();
  }
}
} // namespace
} // namespace overdrive::detail

// The entry points of kernel_isa.hpp, defined with qualified names (a mismatch does not compile).
// Scratch for rows of n pixels: work list, queue of survivors (double-sized, fits float too).
#if defined(OVERDRIVE_KERNEL_AVX512)
int overdrive::detail::kernel_scratch_bytes_avx512(int n) {
  return scratch_layout<F64>(nullptr, n, nullptr);
}
void overdrive::detail::kernel_f64_avx512(const RowsJob &job, bool skip_interior, void *scratch) {
  kernel<F64>(job, skip_interior, scratch);
}
void overdrive::detail::kernel_f32_avx512(const RowsJob &job, bool skip_interior, void *scratch) {
  kernel<F32>(job, skip_interior, scratch);
}
#else
int overdrive::detail::kernel_scratch_bytes_avx2(int n) {
  return scratch_layout<F64>(nullptr, n, nullptr);
}
void overdrive::detail::kernel_f64_avx2(const RowsJob &job, bool skip_interior, void *scratch) {
  kernel<F64>(job, skip_interior, scratch);
}
void overdrive::detail::kernel_f32_avx2(const RowsJob &job, bool skip_interior, void *scratch) {
  kernel<F32>(job, skip_interior, scratch);
}
#endif
