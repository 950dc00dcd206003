// Kernel and PNG benchmarks, single thread: every kernel (ISA x precision, with and without
// interior skipping; one row per call, and "/rows" = batches of rows per call through
// run_kernel_rows as render_rows does) against the scalar reference on three scenes, PNG encoder
// settings on a 256x256 tile, and render + encode per tile. Counter "it/s" = useful iterations (sum
// of escape counts, the same for every kernel) per second; "px/s" = pixels per second.
#include "render/render.hpp"

#include <algorithm>
#include <benchmark/benchmark.h>
#include <string>
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
        for (const bool skip : {false, true}) {
          if (isa == Isa::Scalar && p == Precision::F32) continue;
          const std::string name = "Kernel/" + sc + "/" + std::string(to_string(isa)) + "/" +
                                   std::string(to_string(p)) + (skip ? "/skip" : "/noskip");
          benchmark::RegisterBenchmark(name.c_str(), [&s, isa, p, skip](benchmark::State &st) {
            bench_scene(st, s,
                        [=](const RowJob &j) { run_kernel(j, p, isa, KernelOptions{skip}); });
          })->Unit(benchmark::kMillisecond);
          // Batches of rows per call (render_rows' path); scalar is the same loop per row.
          if (isa == Isa::Scalar) continue;
          benchmark::RegisterBenchmark((name + "/rows").c_str(), [&s, isa, p,
                                                                  skip](benchmark::State &st) {
            bench_scene(
                st, s, [](const RowJob &) {}, true, p, isa, KernelOptions{skip});
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
