// Escape-time kernels and their run-time selection. kernel_reference is the textbook loop that
// every faster kernel is tested against; keep it simple and obviously right.
#include "render/render.hpp"

#include <cstdlib>
#include <string_view>

namespace overdrive {

void kernel_reference(const RowJob &job) noexcept {
  for (int k = 0; k < job.n; ++k) {
    const double cr = job.re0 + k * job.dre;
    const double ci = job.im;
    double zr = 0.0, zi = 0.0, zr2 = 0.0, zi2 = 0.0;
    int n = 0;
    // z_{n+1} = z_n^2 + c; escape once |z| > 2.
    while (n < job.max_iter) {
      zi = 2.0 * zr * zi + ci;
      zr = zr2 - zi2 + cr;
      zr2 = zr * zr;
      zi2 = zi * zi;
      ++n;
      if (zr2 + zi2 > 4.0) break;
    }
    job.iters[k] = static_cast<std::uint32_t>(n);
    job.mag2[k] = static_cast<float>(zr2 + zi2);
  }
}

namespace {
void kernel_reference_f32(const RowJob &job) noexcept {
  for (int k = 0; k < job.n; ++k) {
    const float cr = static_cast<float>(job.re0 + k * job.dre);
    const float ci = static_cast<float>(job.im);
    float zr = 0.0f, zi = 0.0f, zr2 = 0.0f, zi2 = 0.0f;
    int n = 0;
    while (n < job.max_iter) {
      zi = 2.0f * zr * zi + ci;
      zr = zr2 - zi2 + cr;
      zr2 = zr * zr;
      zi2 = zi * zi;
      ++n;
      if (zr2 + zi2 > 4.0f) break;
    }
    job.iters[k] = static_cast<std::uint32_t>(n);
    job.mag2[k] = zr2 + zi2;
  }
}
} // namespace

bool isa_supported(Isa isa) noexcept {
  return isa == Isa::Auto || isa == Isa::Scalar;
}

Isa best_isa() noexcept { return Isa::Scalar; }

void run_kernel(const RowJob &job, Precision precision, Isa /*isa*/) noexcept {
  if (precision == Precision::F32)
    kernel_reference_f32(job);
  else
    kernel_reference(job);
}

} // namespace overdrive
