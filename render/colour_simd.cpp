// Palette indices for smooth colouring, 16 (AVX-512) or 8 (AVX2) pixels at a time. Compiled
// twice like kernel_simd.cpp and entered only after the CPU check in kernel.cpp. Every step is
// the same IEEE float operation, in the same order, as colour_index_scalar() in kernel.cpp
// (plain multiplies and adds, -ffp-contract=off), so every ISA gives identical indices and the
// images do not depend on the CPU. Test: Render.ColourIndicesMatchAcrossIsas.
#include "render/kernel_isa.hpp"
#include "render/render.hpp"

#include <cstddef>
#include <cstdint>
#include <immintrin.h>

// GCC 12's AVX-512 intrinsics start from an uninitialised "undefined" vector and trip
// -Wmaybe-uninitialized (-Wuninitialized in the sanitizer builds) when inlined; the value is
// fully overwritten.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace overdrive::detail {
namespace {
#if defined(OVERDRIVE_KERNEL_AVX512)
struct Simd {
  using F = __m512;
  using I = __m512i;
  static constexpr int L = 16;
  static F set1(float x) { return _mm512_set1_ps(x); }
  static I set1i(int x) { return _mm512_set1_epi32(x); }
  static F add(F a, F b) { return _mm512_add_ps(a, b); }
  static F sub(F a, F b) { return _mm512_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm512_mul_ps(a, b); }
  // (a > b) ? a : b, so max_first(c, x) is the scalar std::max(x, c), a NaN x included.
  static F max_first(F a, F b) { return _mm512_max_ps(a, b); }
  static F floor(F a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
  static I cast_i(F a) { return _mm512_castps_si512(a); }
  static F cast_f(I a) { return _mm512_castsi512_ps(a); }
  static I srl23(I a) { return _mm512_srli_epi32(a, 23); }
  static I andi(I a, I b) { return _mm512_and_si512(a, b); }
  static I ori(I a, I b) { return _mm512_or_si512(a, b); }
  static I subi(I a, I b) { return _mm512_sub_epi32(a, b); }
  static F to_f(I a) { return _mm512_cvtepi32_ps(a); }
  static I to_i(F a) { return _mm512_cvttps_epi32(a); }
  static I mini(I a, I b) { return _mm512_min_epi32(a, b); }
  static I maxi(I a, I b) { return _mm512_max_epi32(a, b); }
  // Lanes with n >= max_iter (unsigned) take black.
  static I interior(I n, I max_iter, I idx, I black) {
    return _mm512_mask_mov_epi32(idx, _mm512_cmpge_epu32_mask(n, max_iter), black);
  }
  static I loadu(const void *p) { return _mm512_loadu_si512(p); }
  static F loadu_f(const float *p) { return _mm512_loadu_ps(p); }
  static void store16(std::uint16_t *p, I a) {
    _mm256_storeu_si256(reinterpret_cast<__m256i *>(p), _mm512_cvtepi32_epi16(a));
  }
};
#else
struct Simd {
  using F = __m256;
  using I = __m256i;
  static constexpr int L = 8;
  static F set1(float x) { return _mm256_set1_ps(x); }
  static I set1i(int x) { return _mm256_set1_epi32(x); }
  static F add(F a, F b) { return _mm256_add_ps(a, b); }
  static F sub(F a, F b) { return _mm256_sub_ps(a, b); }
  static F mul(F a, F b) { return _mm256_mul_ps(a, b); }
  static F max_first(F a, F b) { return _mm256_max_ps(a, b); }
  static F floor(F a) { return _mm256_floor_ps(a); }
  static I cast_i(F a) { return _mm256_castps_si256(a); }
  static F cast_f(I a) { return _mm256_castsi256_ps(a); }
  static I srl23(I a) { return _mm256_srli_epi32(a, 23); }
  static I andi(I a, I b) { return _mm256_and_si256(a, b); }
  static I ori(I a, I b) { return _mm256_or_si256(a, b); }
  static I subi(I a, I b) { return _mm256_sub_epi32(a, b); }
  static F to_f(I a) { return _mm256_cvtepi32_ps(a); }
  static I to_i(F a) { return _mm256_cvttps_epi32(a); }
  static I mini(I a, I b) { return _mm256_min_epi32(a, b); }
  static I maxi(I a, I b) { return _mm256_max_epi32(a, b); }
  static I interior(I n, I max_iter, I idx, I black) {
    // n >= max_iter, unsigned: max(n, max_iter) == n.
    return _mm256_blendv_epi8(idx, black, _mm256_cmpeq_epi32(_mm256_max_epu32(n, max_iter), n));
  }
  static I loadu(const void *p) { return _mm256_loadu_si256(static_cast<const __m256i *>(p)); }
  static F loadu_f(const float *p) { return _mm256_loadu_ps(p); }
  static void store16(std::uint16_t *p, I a) {
    // Indices are 0..palette_size: packing to 16 bits never saturates.
    const __m128i lo = _mm256_castsi256_si128(a), hi = _mm256_extracti128_si256(a, 1);
    _mm_storeu_si128(reinterpret_cast<__m128i *>(p), _mm_packus_epi32(lo, hi));
  }
};
#endif

// fast_log2 of kernel.cpp, lane by lane.
Simd::F log2v(Simd::F x) {
  const Simd::I bits = Simd::cast_i(x);
  const Simd::F e = Simd::to_f(Simd::subi(Simd::srl23(bits), Simd::set1i(127)));
  const Simd::F m = Simd::sub(
      Simd::cast_f(Simd::ori(Simd::andi(bits, Simd::set1i(0x7fffff)), Simd::set1i(0x3f800000))),
      Simd::set1(1.5f));
  Simd::F p = Simd::mul(m, Simd::set1(log2_poly[5]));
  for (int i = 4; i >= 1; --i)
    p = Simd::mul(m, Simd::add(Simd::set1(log2_poly[i]), p));
  return Simd::add(e, Simd::add(Simd::set1(log2_poly[0]), p));
}

void indices(const std::uint32_t *iters, const float *mag2, std::size_t n, int max_iter,
             std::uint16_t *idx) {
  constexpr int L = Simd::L;
  const Simd::I mi = Simd::set1i(max_iter), black = Simd::set1i(palette_size);
  const Simd::I top = Simd::set1i(palette_size - 1), zero_i = Simd::set1i(0);
  const Simd::F four = Simd::set1(4.0f), two = Simd::set1(2.0f), zero = Simd::set1(0.0f);
  const Simd::F per_turn = Simd::set1(1.0f / palette_period);
  const Simd::F scale = Simd::set1(static_cast<float>(palette_size));
  std::size_t k = 0;
  for (; k + L <= n; k += L) {
    const Simd::I cnt = Simd::loadu(iters + k);
    const Simd::F l = log2v(log2v(Simd::max_first(four, Simd::loadu_f(mag2 + k))));
    const Simd::F mu = Simd::sub(Simd::add(Simd::to_f(cnt), two), l);
    const Simd::F turns = Simd::mul(Simd::max_first(zero, mu), per_turn);
    const Simd::F t = Simd::sub(turns, Simd::floor(turns));
    const Simd::I i = Simd::maxi(Simd::mini(Simd::to_i(Simd::mul(t, scale)), top), zero_i);
    Simd::store16(idx + k, Simd::interior(cnt, mi, i, black));
  }
  for (; k < n; ++k)
    idx[k] = colour_index_scalar(iters[k], mag2[k], max_iter);
}
} // namespace
} // namespace overdrive::detail

// The entry points of kernel_isa.hpp, defined with qualified names (a mismatch does not compile).
#if defined(OVERDRIVE_KERNEL_AVX512)
void overdrive::detail::colour_indices_avx512(const std::uint32_t *iters, const float *mag2,
                                              std::size_t n, int max_iter, std::uint16_t *idx) {
  indices(iters, mag2, n, max_iter, idx);
}
#else
void overdrive::detail::colour_indices_avx2(const std::uint32_t *iters, const float *mag2,
                                            std::size_t n, int max_iter, std::uint16_t *idx) {
  indices(iters, mag2, n, max_iter, idx);
}
#endif
