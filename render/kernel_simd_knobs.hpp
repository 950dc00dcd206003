// Private to kernel_simd.cpp (included by it and by the other kernel_simd_*.hpp, nowhere else):
// the tuning knobs of the SIMD kernels, in one place. Each knob is a macro so that a tuning run
// can set it on the compiler command line (-DOVERDRIVE_KBLOCK=24); each one not set gets its
// default here on its own, and invalid combinations fail to compile. The defaults were chosen by
// measurement (bench/README.md, "Kernels": kBlock 24 and 32 and kPhase1 8-48 were tried there
// and dropped). Everything lives in an anonymous namespace: this code is
// compiled twice (AVX-512 and AVX2 + FMA flags) and must not be shared between the two objects.
#pragma once

namespace overdrive::detail {
namespace {

// ---- knobs (command-line macros with per-knob defaults) -------------------------------------

// OVERDRIVE_KBLOCK: iterations between escape tests in phase 2 (kBlock). A lane that escapes
// inside a block is re-run from the block start, so counts do not depend on it. An integer
// literal: phase 2's asm pastes it in as a repeat count and an immediate.
#ifndef OVERDRIVE_KBLOCK
#define OVERDRIVE_KBLOCK 16
#endif

// OVERDRIVE_KPHASE1: iterations of phase 1, which tests for escape after every iteration
// (kPhase1). Pixels that escape this early finish in phase 1; the others are queued for phase 2.
#ifndef OVERDRIVE_KPHASE1
#define OVERDRIVE_KPHASE1 24
#endif

// OVERDRIVE_KVEC: independent vectors in flight in phase 2 (kVec). Phase 2's asm names its
// registers, so only the register assignments it has are valid: 6 or 8 with AVX-512 (32 zmm
// registers: 8 vectors of zr and zi, c read from memory, hide the 4-cycle FMA latency on 2
// ports; 12 and 16 measured slower), 6 with AVX2 (16 ymm registers: 12 for z, 4 scratch).
#ifndef OVERDRIVE_KVEC
#if defined(OVERDRIVE_KERNEL_AVX512)
#define OVERDRIVE_KVEC 8
#else
#define OVERDRIVE_KVEC 6
#endif
#endif

// OVERDRIVE_KPARK: parked (escaped) lanes that wake phase 2's slow path (park_threshold below).
// Unset: three quarters of the lanes in flight.

// Switches, off in every build of the project:
// OVERDRIVE_KSTATS counts vector-steps per phase in the g_* counters (for tuning, KSTAT below);
// OVERDRIVE_P1_C runs phase 1 with the C loop (phase1_run) instead of its asm (AVX-512, AVX2).

// ---- the constants the code uses ----------------------------------------------------------

constexpr int kBlock = OVERDRIVE_KBLOCK;   // iterations between escape tests in phase 2
constexpr int kPhase1 = OVERDRIVE_KPHASE1; // iterations with a per-iteration test in phase 1
constexpr int kVec = OVERDRIVE_KVEC;       // independent vectors in flight in phase 2
constexpr int kRerun = 4; // packed vectors of parked lanes re-run side by side (slow path)
// Periodicity (KernelOptions::periodicity): a phase-2 lane first saves its orbit point after
// this many of its blocks, then at windows of half its age (kernel_simd.cpp, periodicity).
constexpr int kPerFirst = 8;
#if defined(OVERDRIVE_KERNEL_AVX512)
// Vectors in phase 1 (5 registers of state per vector there). Not a knob: phase 1's AVX-512 asm
// names the registers of exactly 4 (static_assert in phase1_asm).
constexpr int kVec1 = 4;
#else
// Vectors in phase 1. Not a knob: phase 1's AVX2 asm names the registers of exactly 3 (16 ymm
// registers; static_assert in phase1_asm); the C loop it replaced ran 2.
constexpr int kVec1 = 3;
#endif

static_assert(kBlock >= 1, "OVERDRIVE_KBLOCK: at least one iteration per block");
// Phase 1's asm counts its iterations down and tests after the first one.
static_assert(kPhase1 >= 1, "OVERDRIVE_KPHASE1: at least one iteration in phase 1");
#if defined(OVERDRIVE_KERNEL_AVX512)
static_assert(kVec == 6 || kVec == 8,
              "OVERDRIVE_KVEC: phase 2's AVX-512 asm has registers for 6 or 8 vectors");
#else
static_assert(kVec == 6, "OVERDRIVE_KVEC: phase 2's AVX2 asm has registers for 6 vectors "
                         "(ymm12-15 are its scratch)");
#endif

// Parked (escaped) lanes that trigger phase 2's slow path, for L lanes per vector: its fixed
// cost (state spill, refill, branch misses) outweighs idle lanes until about three quarters of
// them wait. Fewer lanes may wait when no work is left; more than kVec * L never can.
template <int L> constexpr int park_threshold() {
#ifdef OVERDRIVE_KPARK
  constexpr int park = OVERDRIVE_KPARK;
#else
  constexpr int park = kVec * L * 3 / 4;
#endif
  static_assert(park >= 1 && park <= kVec * L, "OVERDRIVE_KPARK: 1 to kVec * L lanes");
  return park;
}

#ifdef OVERDRIVE_KSTATS
// Instrumentation for tuning: vector-steps per phase.
long long g_p1_steps = 0, g_p2_steps = 0, g_rerun_steps = 0, g_slow = 0;
#define KSTAT(x) (x)
#else
#define KSTAT(x) ((void)0)
#endif

} // namespace
} // namespace overdrive::detail
