// Private to render/: the entry points of the per-ISA translation units, declared once. The
// callers (kernel.cpp, after its CPU check) and the definitions (kernel_simd.cpp and
// colour_simd.cpp, each compiled once with AVX2 + FMA flags and once with AVX-512 flags, see
// render/CMakeLists.txt) both include this header; the definitions are written with qualified
// names (detail::kernel_f64_avx2, ...), so a definition that does not match its declaration
// here is a compile error, not a silent overload.
#pragma once

#include "render/render.hpp"

#include <cstddef>
#include <cstdint>

namespace overdrive::detail {

// ---- kernel_simd.cpp -----------------------------------------------------------------------

/// Bytes of the scratch the kernels of this ISA need for rows of n pixels (64-byte aligned by
/// the caller; one buffer serves f64 and f32).
int kernel_scratch_bytes_avx2(int n);
int kernel_scratch_bytes_avx512(int n);

/// Escape counts of job (run_kernel_rows semantics), with the interior skipping and the
/// periodicity detection that options ask for. job.rows * job.n must fit an int: the caller
/// splits larger jobs.
void kernel_f64_avx2(const RowsJob &job, const KernelOptions &options, void *scratch);
void kernel_f32_avx2(const RowsJob &job, const KernelOptions &options, void *scratch);
void kernel_f64_avx512(const RowsJob &job, const KernelOptions &options, void *scratch);
void kernel_f32_avx512(const RowsJob &job, const KernelOptions &options, void *scratch);

// ---- colour_simd.cpp -----------------------------------------------------------------------

/// colour_indices for this ISA: idx[k] = colour_index_scalar(iters[k], mag2[k], max_iter).
void colour_indices_avx2(const std::uint32_t *iters, const float *mag2, std::size_t n, int max_iter,
                         std::uint16_t *idx);
void colour_indices_avx512(const std::uint32_t *iters, const float *mag2, std::size_t n,
                           int max_iter, std::uint16_t *idx);

} // namespace overdrive::detail
