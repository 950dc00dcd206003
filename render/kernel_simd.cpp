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
//
// This file is the driver: the two phases, the survivor queue, the slow path and the entry
// points. The pieces it is built from are private headers, each readable on its own:
//   kernel_simd_knobs.hpp   tuning knobs (kBlock, kPhase1, kVec, ...) with defaults and checks
//   kernel_simd_traits.hpp  per-ISA lane traits F64 and F32, and the row pre-pass
//   kernel_simd_asm.hpp     the hot loops, mostly asm: step(), run_blocks() (phase 2) and
//                           phase1_run(), with the state they share with this driver
// The entry points are declared in kernel_isa.hpp, which kernel.cpp includes too.
#include "render/kernel_isa.hpp"
#include "render/kernel_simd_asm.hpp"
#include "render/kernel_simd_knobs.hpp"
#include "render/kernel_simd_traits.hpp"
#include "render/render.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>

namespace overdrive::detail {
namespace {

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

template <class S> void kernel(const RowsJob &rj, const KernelOptions &opt, void *scratch) {
  using T = typename S::T;
  using V = typename S::V;
  using M = typename S::M;
  constexpr int L = S::L;
  constexpr int kPark = park_threshold<L>(); // parked lanes that wake the slow path
  Scratch<S> sc;
  scratch_layout<S>(scratch, rj.n, &sc);
  const int max_iter = rj.max_iter;
  const auto max_u = static_cast<std::uint32_t>(max_iter);
  const V four = S::set1(T(4));
  const int p1 = max_iter < kPhase1 ? max_iter : kPhase1;
  const bool skip = opt.skip_interior;
  // Periodicity in phase 2 (phase 1's kPhase1 iterations are too few to need it). The
  // tolerance: |z - s|^2 <= tol2 = (|dre| * 2^-periodicity_shift)^2, in T.
  const bool per = opt.periodicity && max_iter > p1;
  const double tol = std::ldexp(std::fabs(rj.dre), -KernelOptions::periodicity_shift);
  const V tol2 = S::set1(static_cast<T>(tol * tol));
  const V nan = S::set1(std::numeric_limits<T>::quiet_NaN());

  int q = 0, nq = 0; // queue of phase-1 survivors: [q, nq) not yet in a lane
  int row = 0;       // next row for phase 1

  // ---- phase 1, one row: per-iteration test, kVec1 vectors, survivors appended to the queue --
  P1Block<S> p1b{}; // zeroed once: jv and mg of lanes that never escape are never written
  auto phase1 = [&](int r) {
    const std::size_t roff = static_cast<std::size_t>(r) * static_cast<std::size_t>(rj.n);
    const RowJob job{rj.re0,          rj.dre,         rj.im[r], rj.n,    max_iter,
                     rj.iters + roff, rj.mag2 + roff, rj.k0,    rj.kstep};
    const int nwork = prepass<S>(job, skip, sc.work);
    const T cim = S::im(job.im);
    const V ci = S::set1(cim);
    const int gbase = static_cast<int>(roff);
    for (int g = 0; g < nwork; g += kVec1 * L) {
      P1Block<S> &pb = p1b;
      for (int v = 0; v < kVec1; ++v) {
        const int base = g + v * L;
        pb.act[v] = S::first_lanes(nwork - base > 0 ? nwork - base : 0);
        S::store(pb.cr + v * L, S::cre(sc.work + base, pb.act[v], job));
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
  // Periodicity: each lane's saved orbit point and the phase-2 iteration of its next save
  // (Brent-style, in blocks of the lane's own: saves after its blocks 8, 16, 24, 36, 54, 81, ...
  // (kPerFirst, then windows of half its age, at least kPerFirst); every block end compares z
  // with the last save, so a pixel's answer does not depend on its lane or batch). Windows grow
  // without bound, so every period is caught once the orbit has converged; growing by 1.5 rather
  // than 2 shortens the wait after convergence (seahorse: ~10% fewer iterations per interior
  // pixel, measured with a scalar model of this schedule). next_save: the earliest save_at (or
  // earlier).
  PerState<S> ps;
  for (int l = 0; l < kVec * L; ++l) {
    ps.sr[l] = ps.si[l] = std::numeric_limits<T>::quiet_NaN();
    ps.save_at[l] = INT64_MAX;
  }
  std::int64_t next_save = INT64_MAX;
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
    if (per) {
      S::mask_store(ps.sr + o, free, nan);
      S::mask_store(ps.si + o, free, nan);
      S::mask_store_i64(ps.save_at + o, free, INT64_MAX);
      if (fill) {
        S::mask_store_i64(ps.save_at + o, fill, it + kPerFirst * kBlock);
        next_save = it + kPerFirst * kBlock < next_save ? it + kPerFirst * kBlock : next_save;
      }
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
  // Periodicity at a block end (after run_blocks): lanes parked since the last slow path get
  // no more saves; lanes within tol of their saved point are parked as interior (block start
  // kNever: the slow path answers max_iter); lanes due for a save save z.
  constexpr std::int64_t kNever = INT64_MAX / 4;
  auto periodicity = [&](int &parked) {
    const bool saving = it >= next_save;
    if (saving) next_save = INT64_MAX;
    for (int v = 0; v < kVec; ++v) {
      const int o = v * L;
      const M pk = st.b.parked[v];
      if (pk) {
        S::mask_store(ps.sr + o, pk, nan);
        S::mask_store(ps.si + o, pk, nan);
        S::mask_store_i64(ps.save_at + o, pk, INT64_MAX);
      }
      const M cand = static_cast<M>(st.active[v] & ~pk);
      if (!cand) continue;
      const V zr = S::load(st.b.zr + o), zi = S::load(st.b.zi + o);
      const V dr = S::sub(zr, S::load(ps.sr + o)), di = S::sub(zi, S::load(ps.si + o));
      const M hit = static_cast<M>(cand & ~S::escaped(cand, S::fma(dr, dr, S::mul(di, di)), tol2));
      if (hit) {
        for (const auto f : {st.b.pr, st.b.pi, st.b.pcr, st.b.pci, st.b.zr, st.b.zi, st.b.cr,
                             st.b.ci, ps.sr, ps.si})
          S::mask_store(f + o, hit, f == ps.sr || f == ps.si ? nan : S::zero());
        S::mask_store_i64(st.b.pblock + o, hit, kNever);
        S::mask_store_i64(ps.save_at + o, hit, INT64_MAX);
        st.b.parked[v] = static_cast<M>(st.b.parked[v] | hit);
        parked += __builtin_popcount(static_cast<unsigned>(hit));
      }
      if (!saving) continue;
      for (unsigned b = static_cast<M>(cand & ~hit); b; b &= b - 1) {
        const int l = o + __builtin_ctz(b);
        if (ps.save_at[l] <= it) {
          ps.sr[l] = st.b.zr[l];
          ps.si[l] = st.b.zi[l];
          // Windows grow by half the lane's age (in whole blocks), at least kPerFirst blocks.
          const std::int64_t age = (ps.save_at[l] - (st.start[l] + p1)) / kBlock;
          ps.save_at[l] += kBlock * (age / 2 > kPerFirst ? age / 2 : kPerFirst);
        }
        if (ps.save_at[l] < next_save) next_save = ps.save_at[l];
      }
    }
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
      it = per ? run_blocks<S>(st.b, it, due < next_save ? due : next_save, parked, wake, &ps, tol2)
               : run_blocks<S>(st.b, it, due, parked, wake);
      KSTAT(g_p2_steps += kVec * (it - before));
      if (per) periodicity(parked);
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
void overdrive::detail::kernel_f64_avx512(const RowsJob &job, const KernelOptions &options,
                                          void *scratch) {
  kernel<F64>(job, options, scratch);
}
void overdrive::detail::kernel_f32_avx512(const RowsJob &job, const KernelOptions &options,
                                          void *scratch) {
  kernel<F32>(job, options, scratch);
}
#else
int overdrive::detail::kernel_scratch_bytes_avx2(int n) {
  return scratch_layout<F64>(nullptr, n, nullptr);
}
void overdrive::detail::kernel_f64_avx2(const RowsJob &job, const KernelOptions &options,
                                        void *scratch) {
  kernel<F64>(job, options, scratch);
}
void overdrive::detail::kernel_f32_avx2(const RowsJob &job, const KernelOptions &options,
                                        void *scratch) {
  kernel<F32>(job, options, scratch);
}
#endif
