// Kernel and PNG benchmarks, single thread: every kernel (ISA x precision, with and without
// interior skipping; one row per call, and "/rows" = batches of rows per call through
// run_kernel_rows as render_rows does) against the scalar reference on three scenes, PNG encoder
// settings on a 256x256 tile, and render + encode per tile. Counter "it/s" = useful iterations (sum
// of escape counts, the same for every kernel) per second; "px/s" = pixels per second.
#include "executors/executor.hpp"
#include "render/render.hpp"

#include <algorithm>
#include <atomic>
#include <benchmark/benchmark.h>
#include <string>
#include <thread>
#include <vector>

using namespace overdrive;

namespace {

struct Scene {
  const char *name;
  Viewport view;
  int max_iter;
};

const Scene scenes[] = {
    {"full1024", {-0.5, 0.0, 3.0, 1024, 1024}, 1000},
    // 512^2 instead of 1024^2 so the reference finishes in seconds.
    {"seahorse512", {-0.743643887037151, 0.131825904205330, 1e-5, 512, 512}, 5000},
    // Zoom-2 tile 1/1 (re -1.5..-0.5, im 0..1), the dearest of the 16.
    {"z2tile256", tile_viewport({2, 1, 1}, 256), 256},
    // Issue 15's scene: the seahorse valley at full size and depth; 7% of its pixels (the
    // period-39 mini-set in the middle) never escape and carry most of its iterations.
    {"seahorse1024", {-0.743643887037151, 0.131825904205330, 1e-5, 1024, 1024}, 20000},
    // A deep tile entirely inside that mini-set's cardioid (nucleus -0.7436423016578859 +
    // 0.13182651981259472i): every pixel interior, none in the main cardioid or bulb.
    {"interior256", {-0.7436423016578859, 0.13182651981259472, 2e-7, 256, 256}, 20000},
};

// Renders every row of the scene through one kernel; returns the sum of escape counts.
template <class F>
std::uint64_t run_scene(const Scene &s, std::vector<std::uint32_t> &it, std::vector<float> &mag,
                        F &&kernel) {
  const Viewport &v = s.view;
  std::uint64_t sum = 0;
  for (int y = 0; y < v.pixel_height; ++y) {
    kernel(RowJob{v.re_at(0), v.pixel_size(), v.im_at(y), v.pixel_width, s.max_iter, it.data(),
                  mag.data()});
    for (int k = 0; k < v.pixel_width; ++k)
      sum += it[static_cast<std::size_t>(k)];
  }
  return sum;
}

// The same through run_kernel_rows, in batches of ~64K pixels as render_rows does.
std::uint64_t run_scene_rows(const Scene &s, std::vector<std::uint32_t> &it,
                             std::vector<float> &mag, Precision p, Isa isa, KernelOptions opt) {
  const Viewport &v = s.view;
  const int batch = std::max(1, std::min(v.pixel_height, 65536 / v.pixel_width));
  std::vector<double> im(static_cast<std::size_t>(batch));
  std::uint64_t sum = 0;
  for (int y0 = 0; y0 < v.pixel_height; y0 += batch) {
    const int rows = std::min(batch, v.pixel_height - y0);
    for (int r = 0; r < rows; ++r)
      im[static_cast<std::size_t>(r)] = v.im_at(y0 + r);
    run_kernel_rows({v.re_at(0), v.pixel_size(), im.data(), rows, v.pixel_width, s.max_iter,
                     it.data(), mag.data()},
                    p, isa, opt);
    const std::size_t n = static_cast<std::size_t>(rows) * static_cast<std::size_t>(v.pixel_width);
    for (std::size_t k = 0; k < n; ++k)
      sum += it[k];
  }
  return sum;
}

// rows: the kernel sees batches of rows (run_kernel_rows) instead of one row per call.
// Kernel names: /noskip = no interior skipping and no periodicity, /skip = the cardioid and bulb
// test only, /per = the defaults (skipping and periodicity detection).
template <class F>
void bench_scene(benchmark::State &state, const Scene &s, F kernel, bool rows = false,
                 Precision p = Precision::F64, Isa isa = Isa::Auto, KernelOptions opt = {}) {
  std::vector<std::uint32_t> it(
      static_cast<std::size_t>(s.view.pixel_width) *
      static_cast<std::size_t>(rows ? std::max(1, 65536 / s.view.pixel_width) : 1));
  std::vector<float> mag(it.size());
  std::uint64_t iters = 0;
  for (auto _ : state) {
    iters = rows ? run_scene_rows(s, it, mag, p, isa, opt) : run_scene(s, it, mag, kernel);
    benchmark::DoNotOptimize(it.data());
    benchmark::ClobberMemory();
  }
  const double px = static_cast<double>(s.view.pixel_width) * s.view.pixel_height;
  state.counters["it/s"] =
      benchmark::Counter(static_cast<double>(iters) * static_cast<double>(state.iterations()),
                         benchmark::Counter::kIsRate);
  state.counters["px/s"] =
      benchmark::Counter(px * static_cast<double>(state.iterations()), benchmark::Counter::kIsRate);
}

// This CPU's ceiling for the escape loop: 24 independent FMAs per round on 12 accumulators, so
// only the FMA ports' throughput limits it. One iteration of the loop is 4 such instructions per
// lane (see render/kernel_simd_asm.hpp), so the ceiling in iterations/s is FMA/s x lanes / 4.
// Plain asm on fixed registers, R = "zmm" (8 lanes) or "ymm" (4): this file is built without
// AVX-512 or AVX2 flags, and each runs only where the CPU has it.
// clang-format does not settle on one layout for these macros: kept as written.
// clang-format off
#define OD_F(R, r) "vfmadd231pd %%" R "12, %%" R "13, %%" R #r "\n\t"
#define OD_F12(R)                                                                       \
  OD_F(R, 0) OD_F(R, 1) OD_F(R, 2) OD_F(R, 3) OD_F(R, 4) OD_F(R, 5)                     \
  OD_F(R, 6) OD_F(R, 7) OD_F(R, 8) OD_F(R, 9) OD_F(R, 10) OD_F(R, 11)
#define OD_FMA_ROUNDS(R, init, rounds)                                                  \
  asm volatile("vbroadcastsd %0, %%" R "12\n\t"                                         \
               "vbroadcastsd %1, %%" R "13\n\t"                                         \
               ".irp r,0,1,2,3,4,5,6,7,8,9,10,11\n\t"                                   \
               "vmovapd %%" R "12, %%" R "\\r\n\t"                                      \
               ".endr\n\t"                                                              \
               "mov %2, %%rcx\n"                                                        \
               "1:\n\t" OD_F12(R) OD_F12(R) "dec %%rcx\n\t"                             \
               "jnz 1b\n\t"                                                             \
               "vzeroupper"                                                            \
               :                                                                       \
               : "m"(init[0]), "m"(init[1]), "r"(rounds)                               \
               : "rcx", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", \
                 "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "cc", "memory")
// clang-format on

void fma_rounds(long rounds) {
  static const double init[2] = {1.0, 1e-9};
  OD_FMA_ROUNDS("zmm", init, rounds);
}

void fma_rounds_avx2(long rounds) {
  static const double init[2] = {1.0, 1e-9};
  OD_FMA_ROUNDS("ymm", init, rounds);
}
#undef OD_FMA_ROUNDS
#undef OD_F12
#undef OD_F

// rounds(n) issues n x 24 FMAs of `lanes` doubles; reports FMA/s and the escape loop's ceiling.
template <void (*Rounds)(long), int Lanes> void BM_FmaCeiling(benchmark::State &state) {
  constexpr long kRounds = 100000;
  for (auto _ : state)
    Rounds(kRounds);
  const double fma = static_cast<double>(state.iterations()) * kRounds * 24;
  state.counters["FMA/s"] = benchmark::Counter(fma, benchmark::Counter::kIsRate);
  state.counters["ceiling_it/s"] = benchmark::Counter(fma * Lanes / 4, benchmark::Counter::kIsRate);
}

// Two-worker scaling without executors or HTTP: the same total work on `threads` threads that
// take chunks from an atomic counter. `fma` is the ceiling loop above (no memory, no sharing:
// what the VM's vCPUs give); `kernel` is run_kernel_rows on the 4096^2 full view, 16-row bands.
// Compare the threads:1 and threads:2 rows of one interleaved run (real time).
template <class Chunk> void run_chunks(int threads, int chunks, Chunk chunk) {
  std::atomic<int> next{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t)
    pool.emplace_back([&] {
      for (int c; (c = next.fetch_add(1)) < chunks;)
        chunk(c);
    });
  for (auto &t : pool)
    t.join();
}
void BM_ScalingFma(benchmark::State &state) {
  for (auto _ : state)
    run_chunks(static_cast<int>(state.range(0)), 64, [](int) { fma_rounds(50000); });
}
void BM_ScalingKernel(benchmark::State &state) {
  constexpr int n = 4096, band = 16;
  const Viewport v{-0.5, 0.0, 3.0, n, n};
  std::vector<std::uint32_t> it(static_cast<std::size_t>(n) * n);
  std::vector<float> mag(it.size());
  std::vector<double> im(n);
  for (int y = 0; y < n; ++y)
    im[static_cast<std::size_t>(y)] = v.im_at(y);
  for (auto _ : state) {
    run_chunks(static_cast<int>(state.range(0)), n / band, [&](int c) {
      const auto off = static_cast<std::size_t>(c) * band * n;
      run_kernel_rows({v.re_at(0), v.pixel_size(), im.data() + c * band, band, n, 1000,
                       it.data() + off, mag.data() + off},
                      Precision::F64, Isa::Auto);
    });
    benchmark::DoNotOptimize(it.data());
    benchmark::DoNotOptimize(mag.data());
    benchmark::ClobberMemory();
  }
}

// A 4096^2 full-view image (1000 iterations) as `overdrive render` makes it: 16-row bands of
// render_rows (kernel + colouring) submitted to an executor of `workers` workers, waited for.
void BM_ScalingRender(benchmark::State &state, const char *kind) {
  RenderRequest req;
  req.view = {-0.5, 0.0, 3.0, 4096, 4096};
  req.max_iter = 1000;
  std::vector<std::uint8_t> rgb(std::size_t{4096} * 4096 * 3);
  const std::size_t row_bytes = 4096 * 3;
  ExecutorOptions eo;
  eo.workers = static_cast<int>(state.range(0));
  const auto ex = make_executor(kind, eo);
  for (auto _ : state) {
    std::vector<std::future<RenderStats>> bands;
    for (int row = 0; row < 4096; row += 16) {
      const auto part = std::span(rgb).subspan(row * row_bytes, 16 * row_bytes);
      bands.push_back(*submit_task(*ex, [&req, row, part](const JobContext &) {
        return render_rows(req, row, row + 16, part);
      }));
    }
    RenderStats stats;
    for (auto &f : bands)
      stats += f.get();
    benchmark::DoNotOptimize(stats.iterations);
    benchmark::DoNotOptimize(rgb.data());
    benchmark::ClobberMemory();
  }
  ex->shutdown();
}

// The encoder inputs: the full view as a 256^2 tile, and a zoomed tile (seahorse valley, width
// 1e-3) whose smooth colour gradients favour different row filters.
Image render_256(double re, double im, double width, int max_iter) {
  RenderRequest r;
  r.view = {re, im, width, 256, 256};
  r.max_iter = max_iter;
  return render_image(r);
}
const Image &tile_image(int which) {
  static const Image full = render_256(-0.5, 0.0, 3.0, 256);
  static const Image zoom = render_256(-0.743643887037151, 0.131825904205330, 1e-3, 1000);
  return which == 0 ? full : zoom;
}

void BM_Encode(benchmark::State &state, int which, detail::PngSettings s) {
  const Image &img = tile_image(which);
  std::size_t bytes = 0;
  for (auto _ : state) {
    const auto png = detail::encode_png_with(img.rgb, img.width, img.height, s);
    bytes = png.size();
    benchmark::DoNotOptimize(png.data());
  }
  state.counters["KiB"] = static_cast<double>(bytes) / 1024.0;
}

void BM_EncodePng(benchmark::State &state) {
  const Image &img = tile_image(static_cast<int>(state.range(0)));
  std::size_t bytes = 0;
  for (auto _ : state) {
    const auto png = encode_png(img);
    bytes = png.size();
    benchmark::DoNotOptimize(png.data());
  }
  state.counters["KiB"] = static_cast<double>(bytes) / 1024.0;
}

// One 256^2 full-view tile (256 iterations) rendered, then encoded, with the production path.
void BM_RenderTile(benchmark::State &state, Isa isa) {
  RenderRequest r;
  r.view = {-0.5, 0.0, 3.0, 256, 256};
  r.max_iter = 256;
  r.isa = isa;
  for (auto _ : state)
    benchmark::DoNotOptimize(render_image(r).rgb.data());
}
void BM_RenderAndEncodeTile(benchmark::State &state) {
  RenderRequest r;
  r.view = {-0.5, 0.0, 3.0, 256, 256};
  r.max_iter = 256;
  for (auto _ : state)
    benchmark::DoNotOptimize(encode_png(render_image(r)).data());
}

void register_all() {
  for (const Scene &s : scenes) {
    const std::string sc = s.name;
    benchmark::RegisterBenchmark(
        ("Kernel/" + sc + "/reference").c_str(),
        [&s](benchmark::State &st) { bench_scene(st, s, kernel_reference); })
        ->Unit(benchmark::kMillisecond);
    for (const Isa isa : {Isa::Scalar, Isa::Avx2, Isa::Avx512}) {
      if (!isa_supported(isa)) continue;
      for (const Precision p : {Precision::F64, Precision::F32})
        for (const int mode : {0, 1, 2}) {
          if (isa == Isa::Scalar && p == Precision::F32) continue;
          const KernelOptions opt{mode >= 1, mode == 2};
          const char *suffix[] = {"/noskip", "/skip", "/per"};
          const std::string name = "Kernel/" + sc + "/" + std::string(to_string(isa)) + "/" +
                                   std::string(to_string(p)) + suffix[mode];
          benchmark::RegisterBenchmark(name.c_str(), [&s, isa, p, opt](benchmark::State &st) {
            bench_scene(st, s, [=](const RowJob &j) { run_kernel(j, p, isa, opt); });
          })->Unit(benchmark::kMillisecond);
          // Batches of rows per call (render_rows' path); scalar is the same loop per row.
          if (isa == Isa::Scalar) continue;
          benchmark::RegisterBenchmark((name + "/rows").c_str(), [&s, isa, p,
                                                                  opt](benchmark::State &st) {
            bench_scene(
                st, s, [](const RowJob &) {}, true, p, isa, opt);
          })->Unit(benchmark::kMillisecond);
        }
    }
  }
  const char *images[] = {"full256", "zoom256"};
  const char *filters[] = {"none", "sub", "up", "avg", "paeth"};
  for (const int which : {0, 1}) {
    const std::string im = std::string("Encode/") + images[which] + "/";
    using D = detail::PngSettings::Deflate;
    benchmark::RegisterBenchmark((im + "stb_default").c_str(), BM_Encode, which,
                                 detail::PngSettings{D::Stb, 0, -1})
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark((im + "libdeflate_L1_try_all").c_str(), BM_Encode, which,
                                 detail::PngSettings{D::Libdeflate, 1, -1})
        ->Unit(benchmark::kMillisecond);
    const auto add = [&](const char *lib, D d, int level, int f) {
      const std::string name =
          im + lib + "_L" + std::to_string(level) + "_" + (f < 0 ? "try_all" : filters[f]);
      benchmark::RegisterBenchmark(name.c_str(), BM_Encode, which, detail::PngSettings{d, level, f})
          ->Unit(benchmark::kMillisecond);
    };
    for (const int f : {0, 1, 2, 4}) {
      for (const int level : {1, 4, 6})
        add("libdeflate", D::Libdeflate, level, f);
      for (const int level : {0, 1, 2, 3})
        add("isal", D::Isal, level, f);
    }
    benchmark::RegisterBenchmark((im + "encode_png").c_str(), BM_EncodePng)
        ->Arg(which)
        ->Unit(benchmark::kMillisecond);
  }
  if (isa_supported(Isa::Avx2))
    benchmark::RegisterBenchmark("Ceiling/avx2_fma", BM_FmaCeiling<fma_rounds_avx2, 4>)
        ->Unit(benchmark::kMillisecond);
  if (isa_supported(Isa::Avx512)) {
    benchmark::RegisterBenchmark("Ceiling/avx512_fma", BM_FmaCeiling<fma_rounds, 8>)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark("Scaling/fma", BM_ScalingFma)
        ->ArgName("threads")
        ->Arg(1)
        ->Arg(2)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  for (const char *kind : {"pool", "tbb"})
    benchmark::RegisterBenchmark((std::string("Scaling/render4096_") + kind).c_str(),
                                 BM_ScalingRender, kind)
        ->ArgName("workers")
        ->Arg(1)
        ->Arg(2)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("Scaling/kernel4096", BM_ScalingKernel)
      ->ArgName("threads")
      ->Arg(1)
      ->Arg(2)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("Tile/render/reference_scalar", BM_RenderTile, Isa::Scalar)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("Tile/render/auto", BM_RenderTile, Isa::Auto)
      ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("Tile/render+encode/auto", BM_RenderAndEncodeTile)
      ->Unit(benchmark::kMillisecond);
}

} // namespace

int main(int argc, char **argv) {
  register_all();
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
