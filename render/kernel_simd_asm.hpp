// Private to kernel_simd.cpp (included by it, nowhere else): the loops the driver calls, in asm
// where GCC 12's code was worse, each with the reason and its measurement next to the asm.
//   step()        one iteration z <- z^2 + c of one vector, in asm (phase 1's C loop, slow path)
//   mag()         |z|^2 of one vector
//   run_blocks()  phase 2: blocks of kBlock iterations on kVec vectors, one asm statement
//   phase1_run()  phase 1: kVec1 vectors with a test after every iteration (C, replaced by
//                 one asm statement on AVX-512 and on AVX2)
// The state they share with the driver (P2Block, P1Block) is laid out here, in the order the asm
// addresses it. The OD_* macros only build asm strings. Anonymous namespace: the file is
// compiled once per ISA (see kernel_simd_traits.hpp) and the two objects share nothing.
#pragma once

#include "render/kernel_simd_knobs.hpp"
#include "render/kernel_simd_traits.hpp"

#include <cstddef>
#include <cstdint>

namespace overdrive::detail {
namespace {

// ---- one iteration ----------------------------------------------------------------------------

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
template <class S>
inline __attribute__((always_inline)) typename S::V mag(typename S::V zr, typename S::V zi) {
  return S::fma(zr, zr, S::mul(zi, zi));
}

// ---- phase 2 --------------------------------------------------------------------------------

// Phase 2's hot loop in one asm statement, on fixed registers. It loads the lanes' z, then runs
// blocks: save z (the block start, so a lane that escapes inside a block can be re-run exactly),
// kBlock iterations of kVec vectors with cr and ci as memory operands of the FMAs, and one escape
// test over all lanes (OR of the compare results, one branch). Escaped lanes are parked inside
// the asm (AVX-512 with k-masks, AVX2 with blends and a branch per vector); a parked or empty lane
// holds z = c = 0, which never escapes, so the test needs no mask of active lanes. It returns when
// enough lanes are parked or it reaches due, and stores z back.
// Why asm: written with intrinsics (or one asm per step), GCC 12 reshuffled and spilled the 16
// live vectors at every block start and ran out of mask registers for the per-vector active
// and parked masks: about 60 vector moves and 40 mask moves per block, many of them on the FMA
// ports. Measured in-process A/B, min of 9 rounds: full view f64 26.1 -> 25.0 ms (bench/README.md,
// "What changed in this kernel", first row); all-interior view f64 122 -> 114 ms together with
// phase 1's asm below (commit d521215, which brought in both).
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
// AVX2 parks escaped lanes inside the asm too, without k-masks: per vector, ymm13 = its escaped
// lanes (vcmppd) and %[t] their bits (vmovmskpd; vectors without escapes are skipped): their
// block-start z and c go to pr, pi, pcr, pci (load, vblendvpd with the field as memory
// operand, store), z and c become 0 (vandnpd), pblock gets %[s] (the block's start iteration)
// lane by lane from the bits, parked ORs the bits and the parked count grows.
#define OD_PB(v, pbsz) "10*" OD_KV "*" OD_VB "+" #v "*" pbsz
#define OD_PK(v, pbsz) "10*" OD_KV "*" OD_VB "+" OD_KV "*" pbsz "+" #v "*4(%[b])"
#define OD_PARK_AVX2(v, i, px, pbsz)                                        \
  "vmul" px " %%ymm" #i ", %%ymm" #i ", %%ymm13\n\t"                        \
  "vfmadd231" px " %%ymm" #v ", %%ymm" #v ", %%ymm13\n\t"                   \
  "vcmpnle_uq" px " %%ymm14, %%ymm13, %%ymm13\n\t"                          \
  "vmovmsk" px " %%ymm13, %k[t]\n\t"                                        \
  "test %k[t], %k[t]\n\t"                                                   \
  "jz 7" #v "f\n\t"                                                         \
  "or %k[t], " OD_PK(v, pbsz) "\n\t"                                        \
  "vmova" px " " OD_OFF(6, v) ", %%ymm15\n\t"                               \
  "vblendv" px " %%ymm13, " OD_OFF(4, v) ", %%ymm15, %%ymm15\n\t"           \
  "vmova" px " %%ymm15, " OD_OFF(6, v) "\n\t"                               \
  "vmova" px " " OD_OFF(7, v) ", %%ymm15\n\t"                               \
  "vblendv" px " %%ymm13, " OD_OFF(5, v) ", %%ymm15, %%ymm15\n\t"           \
  "vmova" px " %%ymm15, " OD_OFF(7, v) "\n\t"                               \
  "vmova" px " " OD_OFF(8, v) ", %%ymm15\n\t"                               \
  "vblendv" px " %%ymm13, " OD_OFF(2, v) ", %%ymm15, %%ymm15\n\t"           \
  "vmova" px " %%ymm15, " OD_OFF(8, v) "\n\t"                               \
  "vmova" px " " OD_OFF(9, v) ", %%ymm15\n\t"                               \
  "vblendv" px " %%ymm13, " OD_OFF(3, v) ", %%ymm15, %%ymm15\n\t"           \
  "vmova" px " %%ymm15, " OD_OFF(9, v) "\n\t"                               \
  "vandn" px " " OD_OFF(2, v) ", %%ymm13, %%ymm15\n\t"                      \
  "vmova" px " %%ymm15, " OD_OFF(2, v) "\n\t"                               \
  "vandn" px " " OD_OFF(3, v) ", %%ymm13, %%ymm15\n\t"                      \
  "vmova" px " %%ymm15, " OD_OFF(3, v) "\n\t"                               \
  "vandn" px " %%ymm" #v ", %%ymm13, %%ymm" #v "\n\t"                       \
  "vandn" px " %%ymm" #i ", %%ymm13, %%ymm" #i "\n\t"                       \
  "mov %k[t], %k[t2]\n"                                                     \
  "8" #v ":\n\t"                                                            \
  "bsf %k[t2], %k[t3]\n\t"                                                  \
  "mov %[s], " OD_PB(v, pbsz) "(%[b], %q[t3], 8)\n\t"                       \
  "lea -1(%q[t2]), %q[t3]\n\t"                                              \
  "and %q[t3], %q[t2]\n\t"                                                  \
  "jnz 8" #v "b\n\t"                                                        \
  "popcnt %k[t], %k[t]\n\t"                                                 \
  "add %k[t], %[parked]\n"                                                  \
  "7" #v ":\n\t"
#define OD_PARK_PD(v, i, px) OD_PARK_AVX2(v, i, px, "32")
#define OD_PARK_PS(v, i, px) OD_PARK_AVX2(v, i, px, "64")
#define OD_BLOCKS(px, PARK)                                                 \
  "vmova" px " %[four], " OD_R OD_FOUR "\n\t"                               \
  OD_ALL(OD_LOAD, px)                                                       \
  OD_BLOCK_BODY(px)                                                         \
  "jnz 3f\n"                                                                \
  "4:\n\t"                                                                  \
  "cmp %[due], %[it]\n\t"                                                   \
  "jl 1b\n\t"                                                               \
  "jmp 2f\n"                                                                \
  "3:\n\t"                                                                  \
  "lea -" OD_KB "(%[it]), %[s]\n\t"                                         \
  OD_ALL(PARK, px)                                                          \
  "cmp %[wake], %[parked]\n\t"                                              \
  "jl 4b\n"                                                                 \
  "2:\n\t" OD_ALL(OD_STORE, px)
#endif
// Periodicity (KernelOptions::periodicity): after each block's escape test, every lane's z is
// compared with its saved orbit point (PerState sr, si, addressed from %[q]): |z - s|^2 <= tol2
// (a memory operand; NaN in s, as in idle lanes and lanes before their first save, never
// matches). If a lane matches, the asm returns and the caller answers it; the saves themselves
// (Brent's schedule, per lane) are done by the caller too, which makes the asm return at the
// next save by lowering due. Field f of vector v: 0 sr, 1 si.
#define OD_QOFF(f, v) #f "*" OD_KV "*" OD_VB "+" #v "*" OD_VB "(%[q])"
#if defined(OVERDRIVE_KERNEL_AVX512)
#define OD_PER_INIT "kxorw %%k2, %%k2, %%k2\n\t"
#define OD_PER(v, i, px)                                                    \
  "vsub" px " " OD_QOFF(0, v) ", %%zmm" #v ", %%zmm16\n\t"                  \
  "vsub" px " " OD_QOFF(1, v) ", %%zmm" #i ", %%zmm17\n\t"                  \
  "vmul" px " %%zmm17, %%zmm17, %%zmm17\n\t"                               \
  "vfmadd231" px " %%zmm16, %%zmm16, %%zmm17\n\t"                          \
  "vcmple_oq" px " %[tol], %%zmm17, %%k1\n\t"                              \
  "korw %%k1, %%k2, %%k2\n\t"
#define OD_PER_TEST(px) "kortestw %%k2, %%k2\n\t"
// As OD_BLOCKS, with the periodicity test after each block's escape test (and its parking).
#define OD_BLOCKS_PER(px, PARK)                                             \
  "vmova" px " %[four], " OD_R OD_FOUR "\n\t"                               \
  "vxor" px " %%zmm19, %%zmm19, %%zmm19\n\t"                                \
  OD_ALL(OD_LOAD, px)                                                       \
  OD_BLOCK_BODY(px)                                                         \
  "jnz 3f\n"                                                                \
  "4:\n\t"                                                                  \
  OD_PER_INIT OD_ALL(OD_PER, px) OD_PER_TEST(px)                            \
  "jnz 2f\n\t"                                                              \
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
#define OD_PER_INIT "vxorpd " OD_R OD_ACC ", " OD_R OD_ACC ", " OD_R OD_ACC "\n\t"
#define OD_PER(v, i, px)                                                    \
  "vsub" px " " OD_QOFF(0, v) ", %%ymm" #v ", %%ymm12\n\t"                  \
  "vsub" px " " OD_QOFF(1, v) ", %%ymm" #i ", %%ymm13\n\t"                  \
  "vmul" px " %%ymm13, %%ymm13, %%ymm13\n\t"                               \
  "vfmadd231" px " %%ymm12, %%ymm12, %%ymm13\n\t"                          \
  "vcmple_oq" px " %[tol], %%ymm13, %%ymm13\n\t"                           \
  "vorpd %%ymm13, " OD_R OD_ACC ", " OD_R OD_ACC "\n\t"
#define OD_PER_TEST(px) "vtest" px " " OD_R OD_ACC ", " OD_R OD_ACC "\n\t"
#define OD_BLOCKS_PER(px, PARK)                                             \
  "vmova" px " %[four], " OD_R OD_FOUR "\n\t"                               \
  OD_ALL(OD_LOAD, px)                                                       \
  OD_BLOCK_BODY(px)                                                         \
  "jnz 3f\n"                                                                \
  "4:\n\t"                                                                  \
  OD_PER_INIT OD_ALL(OD_PER, px) OD_PER_TEST(px)                            \
  "jnz 2f\n\t"                                                              \
  "cmp %[due], %[it]\n\t"                                                   \
  "jl 1b\n\t"                                                               \
  "jmp 2f\n"                                                                \
  "3:\n\t"                                                                  \
  "lea -" OD_KB "(%[it]), %[s]\n\t"                                         \
  OD_ALL(PARK, px)                                                          \
  "cmp %[wake], %[parked]\n\t"                                              \
  "jl 4b\n"                                                                 \
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

// Runs blocks until it >= due or wake lanes are parked; returns the new it. parked counts the lanes
// parked.
template <class S>
std::int64_t run_blocks(P2Block<S> &b, std::int64_t it, std::int64_t due, int &parked, int wake) {
  using V = typename S::V;
  static_assert(sizeof(V) == sizeof(typename S::T) * S::L);
  static_assert(offsetof(P2Block<S>, pblock) == 10 * kVec * sizeof(V));
  static_assert(offsetof(P2Block<S>, parked) == offsetof(P2Block<S>, pblock) + 8 * kVec * S::L);
  const V four = S::set1(typename S::T(4));
  std::int64_t t, t2, t3, st;
#define OD_BLOCKS_ASM(px, PARK)                                                                    \
  asm volatile(OD_BLOCKS(px, PARK)                                                                 \
               : [it] "+r"(it), [parked] "+r"(parked), [t] "=&r"(t), [t2] "=&r"(t2),               \
                 [t3] "=&r"(t3), [s] "=&r"(st)                                                     \
               : [b] "r"(&b), [due] "r"(due), [wake] "r"(wake), [four] "m"(four)                   \
               : OD_CLOBBERS, "cc", "memory")
  if constexpr (sizeof(typename S::T) == 8)
    OD_BLOCKS_ASM("pd", OD_PARK_PD);
  else
    OD_BLOCKS_ASM("ps", OD_PARK_PS);
  (void)t, (void)t2, (void)t3, (void)st;
  return it;
}

// Periodicity state of phase 2's lanes (OD_QOFF field numbers): the saved orbit point (NaN
// until the lane's first save, and in idle lanes), then, for the driver only, the phase-2
// iteration of each lane's next save.
template <class S> struct alignas(64) PerState {
  using T = typename S::T;
  T sr[kVec * S::L], si[kVec * S::L]; // 0-1
  std::int64_t save_at[kVec * S::L];
};

// Runs blocks until it >= due or wake lanes are parked or, with periodicity (q not null), a lane's
// z is within tol of its saved point (tol: tol2 in every lane); returns the new it. parked counts
// the lanes parked.
template <class S>
std::int64_t run_blocks(P2Block<S> &b, std::int64_t it, std::int64_t due, int &parked, int wake,
                        PerState<S> *q, typename S::V tol) {
  using V = typename S::V;
  static_assert(offsetof(PerState<S>, si) == kVec * sizeof(V));
  const V four = S::set1(typename S::T(4));
  std::int64_t t, t2, t3, st;
  if (!q) return run_blocks(b, it, due, parked, wake);
#define OD_BLOCKS_PER_ASM(px, PARK)                                                                \
  asm volatile(OD_BLOCKS_PER(px, PARK)                                                             \
               : [it] "+r"(it), [parked] "+r"(parked), [t] "=&r"(t), [t2] "=&r"(t2),               \
                 [t3] "=&r"(t3), [s] "=&r"(st)                                                     \
               : [b] "r"(&b), [q] "r"(q), [due] "r"(due), [wake] "r"(wake), [four] "m"(four),      \
                 [tol] "m"(tol)                                                                    \
               : OD_CLOBBERS, "cc", "memory")
  if constexpr (sizeof(typename S::T) == 8)
    OD_BLOCKS_PER_ASM("pd", OD_PARK_PD);
  else
    OD_BLOCKS_PER_ASM("ps", OD_PARK_PS);
  (void)t, (void)t2, (void)t3, (void)st;
  return it;
}

// ---- phase 1 --------------------------------------------------------------------------------

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
#elif !defined(OVERDRIVE_KERNEL_AVX512) && !defined(OVERDRIVE_P1_C)
// The same loop in asm for AVX2 (the C loop kept 2 vectors in flight and was latency-bound: one
// iteration is 2 dependent FMAs, 8 cycles). 16 ymm registers hold 3 vectors: vector v keeps zr in
// ymm v, zi in ymm 3+v and its active lanes as a vector mask in ymm 6+v (only sign bits are
// read); cr is a memory operand of the FMA. Without k-masks, the test is vcmppd + vandpd +
// vmovmskpd and one branch per vector; the rare lanes escaping now go out of line, where jv and
// mg are blended in memory (no vmaskmovpd: slow stores on some AMD cores). Results identical.
// clang-format off
// Field f of vector v (P1Block: 0 zr, 1 zi, 2 cr, 3 jv, 4 mg).
#define OD_P1OFF(f, v) #f "*3*32+" #v "*32(%[p])"
#define OD_P1ALL(M, px) M(0, 3, 6, px) M(1, 4, 7, px) M(2, 5, 8, px)
// ymm9 ci, 10 four, 11 one, 12 the iteration number, 13 step scratch and escape mask, 14 |z|^2,
// 15 the OR of the active masks (and scratch out of line).
#define OD_P1LOAD(v, i, a, px)                                              \
  "vadd" px " " OD_P1OFF(2, v) ", %%ymm13, %%ymm" #v "\n\t"                 \
  "vadd" px " %%ymm13, %%ymm9, %%ymm" #i "\n\t"                             \
  "vmova" px " %[act" #v "], %%ymm" #a "\n\t"
#define OD_P1STORE(v, i, a, px)                                             \
  "vmova" px " %%ymm" #v ", " OD_P1OFF(0, v) "\n\t"                         \
  "vmova" px " %%ymm" #i ", " OD_P1OFF(1, v) "\n\t"
#define OD_P1STEP(v, i, a, px)                                              \
  "vadd" px " %%ymm" #v ", %%ymm" #v ", %%ymm13\n\t"                        \
  "vfmadd213" px " " OD_P1OFF(2, v) ", %%ymm" #v ", %%ymm" #v "\n\t"        \
  "vfnmadd231" px " %%ymm" #i ", %%ymm" #i ", %%ymm" #v "\n\t"              \
  "vfmadd213" px " %%ymm9, %%ymm13, %%ymm" #i "\n\t"
#define OD_P1TEST(v, i, a, px)                                              \
  "vmul" px " %%ymm" #i ", %%ymm" #i ", %%ymm14\n\t"                        \
  "vfmadd231" px " %%ymm" #v ", %%ymm" #v ", %%ymm14\n\t"                   \
  "vcmpnle_uq" px " %%ymm10, %%ymm14, %%ymm13\n\t"                          \
  "vand" px " %%ymm" #a ", %%ymm13, %%ymm13\n\t"                            \
  "vmovmsk" px " %%ymm13, %k[t]\n\t"                                        \
  "test %k[t], %k[t]\n\t"                                                   \
  "jnz 5" #v "f\n"                                                          \
  "6" #v ":\n\t"
// Out of line: lanes in mask ymm13 escaped now: jv = the iteration, mg = |z|^2, act cleared.
#define OD_P1ESC(v, i, a, px)                                               \
  "5" #v ":\n\t"                                                            \
  "vmova" px " " OD_P1OFF(3, v) ", %%ymm15\n\t"                             \
  "vblendv" px " %%ymm13, %%ymm12, %%ymm15, %%ymm15\n\t"                    \
  "vmova" px " %%ymm15, " OD_P1OFF(3, v) "\n\t"                             \
  "vmova" px " " OD_P1OFF(4, v) ", %%ymm15\n\t"                             \
  "vblendv" px " %%ymm13, %%ymm14, %%ymm15, %%ymm15\n\t"                    \
  "vmova" px " %%ymm15, " OD_P1OFF(4, v) "\n\t"                             \
  "vandn" px " %%ymm" #a ", %%ymm13, %%ymm" #a "\n\t"                       \
  "jmp 6" #v "b\n"
#define OD_P1PACK(v, i, a, px)                                              \
  "vmovmsk" px " %%ymm" #a ", %k[t]\n\t"                                    \
  "shl $(8*" #v "), %k[t]\n\t"                                              \
  "or %k[t], %k[a]\n\t"
// The loop counts %[n] down; act comes back as 8-bit fields of %[a].
#define OD_P1(px)                                                           \
  "vmova" px " %[ci], %%ymm9\n\t"                                           \
  "vmova" px " %[four], %%ymm10\n\t"                                        \
  "vmova" px " %[one], %%ymm11\n\t"                                         \
  "vxor" px " %%ymm13, %%ymm13, %%ymm13\n\t"                                \
  OD_P1ALL(OD_P1LOAD, px)                                                   \
  "vmova" px " %%ymm11, %%ymm12\n\t"                                        \
  "jmp 3f\n"                                                                \
  "1:\n\t"                                                                  \
  "vadd" px " %%ymm11, %%ymm12, %%ymm12\n\t"                                \
  OD_P1ALL(OD_P1STEP, px)                                                   \
  "3:\n\t"                                                                  \
  OD_P1ALL(OD_P1TEST, px)                                                   \
  "vor" px " %%ymm6, %%ymm7, %%ymm15\n\t"                                   \
  "vor" px " %%ymm8, %%ymm15, %%ymm15\n\t"                                  \
  "dec %[n]\n\t"                                                            \
  "vtest" px " %%ymm15, %%ymm15\n\t"                                        \
  "jz 2f\n\t"                                                               \
  "test %[n], %[n]\n\t"                                                     \
  "jnz 1b\n\t"                                                              \
  "jmp 2f\n"                                                                \
  OD_P1ALL(OD_P1ESC, px)                                                    \
  "2:\n\t"                                                                  \
  OD_P1ALL(OD_P1STORE, px)                                                  \
  "xor %k[a], %k[a]\n\t"                                                    \
  OD_P1ALL(OD_P1PACK, px)
#define OD_P1CLOBBERS                                                       \
  "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8",   \
  "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"
// clang-format on
#define OD_P1_ASM(px)                                                                              \
  asm volatile(OD_P1(px)                                                                           \
               : [n] "+r"(left), [a] "=&r"(acts), [t] "=&r"(tmp)                                   \
               : [p] "r"(&p), [ci] "m"(ci), [four] "m"(four), [one] "m"(one), [act0] "m"(act[0]),  \
                 [act1] "m"(act[1]), [act2] "m"(act[2])                                            \
               : OD_P1CLOBBERS, "cc", "memory")
template <class S> int phase1_asm(P1Block<S> &p, typename S::V ci, int n) {
  using V = typename S::V;
  static_assert(kVec1 == 3 && offsetof(P1Block<S>, act) == 5 * 3 * 32);
  const V four = S::set1(4), one = S::set1(1);
  // Active lanes as vector masks: sign bit set (the asm reads nothing else).
  V act[kVec1];
  for (int v = 0; v < kVec1; ++v)
    act[v] = S::blend(S::zero(), p.act[v], S::set1(-1));
  int left = n;
  std::uint32_t acts, tmp;
  if constexpr (sizeof(typename S::T) == 8)
    OD_P1_ASM("pd");
  else
    OD_P1_ASM("ps");
  for (int v = 0; v < kVec1; ++v)
    p.act[v] = (acts >> (8 * v)) & 0xffu;
  return n - left;
}
template <> int phase1_run<F64>(P1Block<F64> &p, __m256d ci, int n) {
  return phase1_asm<F64>(p, ci, n);
}
template <> int phase1_run<F32>(P1Block<F32> &p, __m256 ci, int n) {
  return phase1_asm<F32>(p, ci, n);
}
#endif

} // namespace
} // namespace overdrive::detail
