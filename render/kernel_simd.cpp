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
#include "render/render.hpp"

#include <cstdint>
#include <cstring>
#include <immintrin.h>

// GCC 12's AVX-512 conversion intrinsics start from an uninitialised "undefined" vector and
// trip -Wmaybe-uninitialized when inlined; the value is fully overwritten.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

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
  static void compress_idx(int *p, M m, const int *idx) {
    _mm256_mask_compressstoreu_epi32(p, m,
                                     _mm256_loadu_si256(reinterpret_cast<const __m256i *>(idx)));
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
  static void compress_idx(int *p, M m, const int *idx) {
    _mm512_mask_compressstoreu_epi32(p, m, _mm512_loadu_si512(idx));
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

struct F64 {
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
  static void compress_idx(int *p, M m, const int *idx) {
    for (; m; m &= m - 1)
      *p++ = idx[__builtin_ctz(m)];
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
};

struct F32 {
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
  static void compress_idx(int *p, M m, const int *idx) {
    for (; m; m &= m - 1)
      *p++ = idx[__builtin_ctz(m)];
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
// The same step with cr and ci read from memory (phase 2: each lane has its own row, and
// 8 vectors of zr, zi, cr, ci would not fit the register file; the loads micro-fuse with the
// FMAs and the load ports are otherwise idle).
template <class S>
inline __attribute__((always_inline)) void
step_mm(typename S::V &zr, typename S::V &zi, const typename S::T *cr, const typename S::T *ci) {
  typename S::V two_zr;
  if constexpr (sizeof(typename S::T) == 8)
    asm("vaddpd %[zr], %[zr], %[t]\n\t"
        "vfmadd213pd %[cr], %[zr], %[zr]\n\t"
        "vfnmadd231pd %[zi], %[zi], %[zr]\n\t"
        "vfmadd213pd %[ci], %[t], %[zi]"
        : [zr] "+v"(zr), [zi] "+v"(zi), [t] "=&v"(two_zr)
        : [cr] "m"(*reinterpret_cast<const typename S::V *>(cr)), [ci] "m"(*reinterpret_cast<
                                                                           const typename S::V *>(
                                                                      ci)));
  else
    asm("vaddps %[zr], %[zr], %[t]\n\t"
        "vfmadd213ps %[cr], %[zr], %[zr]\n\t"
        "vfnmadd231ps %[zi], %[zi], %[zr]\n\t"
        "vfmadd213ps %[ci], %[t], %[zi]"
        : [zr] "+v"(zr), [zi] "+v"(zi), [t] "=&v"(two_zr)
        : [cr] "m"(*reinterpret_cast<const typename S::V *>(cr)), [ci] "m"(*reinterpret_cast<
                                                                           const typename S::V *>(
                                                                      ci)));
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
  auto phase1 = [&](int r) {
    const std::size_t roff = static_cast<std::size_t>(r) * static_cast<std::size_t>(rj.n);
    const RowJob job{rj.re0, rj.dre, rj.im[r], rj.n, max_iter, rj.iters + roff, rj.mag2 + roff};
    const int nwork = prepass<S>(job, skip, sc.work);
    const T cim = S::im(job.im);
    const V ci = S::set1(cim);
    const int gbase = static_cast<int>(roff);
    for (int g = 0; g < nwork; g += kVec1 * L) {
      V zr[kVec1], zi[kVec1], cr[kVec1], jv[kVec1], mg[kVec1];
      M act[kVec1];
      for (int v = 0; v < kVec1; ++v) {
        const int base = g + v * L;
        act[v] = S::first_lanes(nwork - base > 0 ? nwork - base : 0);
        cr[v] = S::cre(sc.work + base, act[v], job.re0, job.dre);
        zr[v] = zi[v] = jv[v] = mg[v] = S::zero();
      }
      for (int j = 1; j <= p1; ++j) {
        const V jj = S::set1(static_cast<T>(j));
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
        KSTAT(g_p1_steps += kVec1);
        if (!any) break;
      }
      for (int v = 0; v < kVec1; ++v) {
        const int base = g + v * L;
        if (base >= nwork) break;
        const M valid = S::first_lanes(nwork - base);
        S::scatter(job.iters, job.mag2, sc.work + base, static_cast<M>(valid & ~act[v]), jv[v],
                   mg[v]);
        if (p1 == max_iter) {
          S::scatter(job.iters, job.mag2, sc.work + base, act[v], S::set1(static_cast<T>(max_iter)),
                     S::zero());
        } else if (act[v]) {
          const int got = __builtin_popcount(static_cast<unsigned>(act[v]));
          S::compress(sc.qzr + nq, act[v], zr[v]);
          S::compress(sc.qzi + nq, act[v], zi[v]);
          S::compress(sc.qcr + nq, act[v], cr[v]);
          S::compress_idx(sc.qidx + nq, act[v], sc.work + base);
          for (int i = 0; i < got; ++i) {
            sc.qidx[nq + i] += gbase;
            sc.qci[nq + i] = cim;
          }
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
    T zr[kVec * L], zi[kVec * L], cr[kVec * L], ci[kVec * L], s0r[kVec * L], s0i[kVec * L];
    T pr[kVec * L], pi[kVec * L];  // parked lanes: z at the start of the block they escaped in
    std::int64_t start[kVec * L];  // phase-2 iteration at which the lane's pixel had done 0
    std::int64_t pblock[kVec * L]; // parked lanes: phase-2 iteration at that block's start
    int idx[kVec * L];
    M active[kVec], parked[kVec];
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
    S::store(st.zr + o,
             S::blend(S::expand(S::load(st.zr + o), fill, sc.qzr + q), empty, S::zero()));
    S::store(st.zi + o,
             S::blend(S::expand(S::load(st.zi + o), fill, sc.qzi + q), empty, S::zero()));
    S::store(st.cr + o,
             S::blend(S::expand(S::load(st.cr + o), fill, sc.qcr + q), empty, S::zero()));
    S::store(st.ci + o,
             S::blend(S::expand(S::load(st.ci + o), fill, sc.qci + q), empty, S::zero()));
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
    for (int v = 0; v < kVec; ++v)
      for (unsigned b = st.active[v]; b; b &= b - 1) {
        const std::int64_t s = st.start[v * L + __builtin_ctz(b)] + max_iter;
        if (s < d) d = s;
      }
    return d;
  };
  for (int v = 0; v < kVec; ++v)
    refill(v, S::first_lanes(L));
  std::int64_t due = deadline();

  for (;;) {
    V zr[kVec], zi[kVec];
    M act[kVec], park[kVec];
#pragma GCC unroll 16
    for (int v = 0; v < kVec; ++v) {
      zr[v] = S::load(st.zr + v * L);
      zi[v] = S::load(st.zi + v * L);
      act[v] = st.active[v];
      park[v] = 0;
    }
    // Park the slow path until this many lanes wait, or all lanes would idle.
    const bool more = q < nq || row < rj.rows;
    const int wake = more && live >= kPark ? kPark : live;
    int parked = 0;
    for (;;) {
#pragma GCC unroll 16
      for (int v = 0; v < kVec; ++v) {
        S::store(st.s0r + v * L, zr[v]);
        S::store(st.s0i + v * L, zi[v]);
      }
#pragma GCC unroll 16
      for (int j = 0; j < kBlock; ++j)
#pragma GCC unroll 16
        for (int v = 0; v < kVec; ++v)
          step_mm<S>(zr[v], zi[v], st.cr + v * L, st.ci + v * L);
#pragma GCC unroll 16
      for (int v = 0; v < kVec; ++v) {
        const M e = S::escaped(act[v], mag<S>(zr[v], zi[v]), four);
        // Branch-free: masked stores with an empty mask cost a store slot and nothing else.
        S::mask_store(st.pr + v * L, e, S::load(st.s0r + v * L));
        S::mask_store(st.pi + v * L, e, S::load(st.s0i + v * L));
        S::mask_store_i64(st.pblock + v * L, e, it);
        act[v] = static_cast<M>(act[v] & ~e);
        park[v] = static_cast<M>(park[v] | e);
        parked += __builtin_popcount(static_cast<unsigned>(e));
      }
      it += kBlock;
      KSTAT(g_p2_steps += kVec * kBlock);
      if (parked >= wake || it >= due) break;
    }
#pragma GCC unroll 16
    for (int v = 0; v < kVec; ++v) {
      S::store(st.zr + v * L, zr[v]);
      S::store(st.zi + v * L, zi[v]);
      st.active[v] = act[v];
    }
    live -= parked;
    KSTAT(++g_slow);
    // Slow path: exact counts of parked lanes by re-running their block from its saved start,
    // lanes out of iterations, then refill. The parked lanes of all vectors are packed into as
    // few vectors as possible and re-run side by side (one dependent chain per vector would
    // leave the FMA pipes idle).
    int np = 0;
    for (int v = 0; v < kVec; ++v) {
      if (!park[v]) continue;
      const int o = v * L;
      S::compress(rr.zr + np, park[v], S::load(st.pr + o));
      S::compress(rr.zi + np, park[v], S::load(st.pi + o));
      S::compress(rr.cr + np, park[v], S::load(st.cr + o));
      S::compress(rr.ci + np, park[v], S::load(st.ci + o));
      for (unsigned b = park[v]; b; b &= b - 1, ++np) {
        const int l = __builtin_ctz(b);
        rr.idx[np] = st.idx[o + l];
        rr.base[np] = st.pblock[o + l] - st.start[o + l];
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
      M retire = park[v];
      if (it >= due) {
        for (unsigned b = st.active[v]; b; b &= b - 1) {
          const int l = __builtin_ctz(b);
          if (it - st.start[o + l] >= max_iter) {
            const int k = st.idx[o + l];
            rj.iters[k] = max_u;
            rj.mag2[k] = 0.0f;
            retire = static_cast<M>(retire | (1u << l));
            --live;
          }
        }
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

#if defined(OVERDRIVE_KERNEL_AVX512)
#define OVERDRIVE_KERNEL_NAME(x) x##_avx512
#else
#define OVERDRIVE_KERNEL_NAME(x) x##_avx2
#endif

// Scratch for rows of n pixels: work list, queue of survivors (double-sized, fits float too).
int OVERDRIVE_KERNEL_NAME(kernel_scratch_bytes)(int n) {
  return scratch_layout<F64>(nullptr, n, nullptr);
}
// rows * n must fit an int (the caller splits larger jobs).
void OVERDRIVE_KERNEL_NAME(kernel_f64)(const RowsJob &job, bool skip_interior, void *scratch) {
  kernel<F64>(job, skip_interior, scratch);
}
void OVERDRIVE_KERNEL_NAME(kernel_f32)(const RowsJob &job, bool skip_interior, void *scratch) {
  kernel<F32>(job, skip_interior, scratch);
}

} // namespace overdrive::detail
