// Number formats, single thread: the escape loop in every software format (render/formats)
// beside the f64 SIMD kernel (run_kernel_rows, Isa::Auto, interior skipping as in production)
// and the f64 scalar reference, on the same pixels of two views. Counter "it/s" = useful
// iterations (sum of escape counts) per second, the same work for every format on a view where
// the format resolves it; "ns/it" = its inverse, the figure behind iteration_cost_ns. dd, qd and
// mp skip points deep inside the cardioid/bulb as the f64 SIMD kernel does (skipped points
// count max_iter); masked, fixed and posit iterate every point (their errors are the study).
#include "render/formats/format_kernel.hpp"
#include "render/render.hpp"

#include <benchmark/benchmark.h>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

using namespace overdrive;
using namespace overdrive::formats;

namespace {

struct View {
  const char *name;
  const char *re, *im, *width; // centre and width, decimal
  int w, h;                    // pixels
  int max_iter;
};

// full: the whole set, 128x128, 1000 iterations. deep: the seahorse valley at width 1e-20, a
// 128x8 strip, escape counts ~9000-10000 (f64 cannot resolve it: its pixels share one c; its
// figure is speed only). Rows of 128 as in a tile (the kernels work row by row).
const View views[] = {
    {"full", "-0.5", "0", "3", 128, 128, 1000},
    {"deep", "-0.743643887037158704752191506114774", "0.131825904205311970493132056385139", "1e-20",
     128, 8, 12000},
};

/// Exact pixel centres of a view (400-bit MPFR) and their doubles.
struct Pixels {
  int w, h;
  std::unique_ptr<mpfr_t[]> re, im;
  std::vector<double> re_d, im_d;
  explicit Pixels(const View &v)
      : w(v.w), h(v.h), re(new mpfr_t[static_cast<std::size_t>(v.w)]),
        im(new mpfr_t[static_cast<std::size_t>(v.h)]), re_d(static_cast<std::size_t>(v.w)),
        im_d(static_cast<std::size_t>(v.h)) {
    mpfr_t c, wd, t;
    mpfr_inits2(400, c, wd, t, static_cast<mpfr_ptr>(nullptr));
    mpfr_set_str(wd, v.width, 10, MPFR_RNDN);
    for (int axis = 0; axis < 2; ++axis) {
      mpfr_set_str(c, axis == 0 ? v.re : v.im, 10, MPFR_RNDN);
      const int n = axis == 0 ? w : h;
      for (int k = 0; k < n; ++k) {
        mpfr_t &d = axis == 0 ? re[k] : im[k];
        mpfr_init2(d, 400);
        // Square pixels: the step is width / w on both axes.
        mpfr_mul_d(t, wd, (k + 0.5 - n / 2.0) / w, MPFR_RNDN);
        if (axis == 0)
          mpfr_add(d, c, t, MPFR_RNDN);
        else
          mpfr_sub(d, c, t, MPFR_RNDN);
        (axis == 0 ? re_d : im_d)[static_cast<std::size_t>(k)] = mpfr_get_d(d, MPFR_RNDN);
      }
    }
    mpfr_clears(c, wd, t, static_cast<mpfr_ptr>(nullptr));
  }
  ~Pixels() {
    for (int k = 0; k < w; ++k)
      mpfr_clear(re[k]);
    for (int k = 0; k < h; ++k)
      mpfr_clear(im[k]);
  }
  Pixels(const Pixels &) = delete;
  Pixels &operator=(const Pixels &) = delete;
};

void report(benchmark::State &state, std::uint64_t useful) {
  state.counters["it/s"] = benchmark::Counter(static_cast<double>(useful),
                                              benchmark::Counter::kIsIterationInvariantRate);
  state.counters["ns/it"] = benchmark::Counter(static_cast<double>(useful) * 1e-9,
                                               benchmark::Counter::kIsIterationInvariantRate |
                                                   benchmark::Counter::kInvert);
}

void bm_format(benchmark::State &state, Spec spec, const View *v) {
  const Pixels px(*v);
  const auto n = static_cast<std::size_t>(v->w), rows = static_cast<std::size_t>(v->h);
  std::vector<std::uint32_t> iters(n * rows);
  std::vector<float> mag2(iters.size());
  auto kernel = make_format_kernel(spec);
  std::uint64_t useful = 0;
  for (auto _ : state) {
    kernel->set_columns(px.re.get(), v->w);
    for (std::size_t r = 0; r < rows; ++r)
      kernel->row(px.im[r], v->max_iter, iters.data() + r * n, mag2.data() + r * n);
    benchmark::DoNotOptimize(iters.data());
    useful = 0;
    for (std::uint32_t c : iters)
      useful += c;
  }
  report(state, useful);
}

// f64 on the same pixels: c = re0 + k dre as the f64 kernels take it (re0, dre from the exact
// centres; at the deep view dre is below f64's spacing, as in the real renderer).
void bm_f64(benchmark::State &state, Isa isa, const View *v) {
  const Pixels px(*v);
  const auto n = static_cast<std::size_t>(v->w), rows = static_cast<std::size_t>(v->h);
  std::vector<std::uint32_t> iters(n * rows);
  std::vector<float> mag2(iters.size());
  const double dre = (px.re_d[n - 1] - px.re_d[0]) / static_cast<double>(n - 1);
  std::uint64_t useful = 0;
  for (auto _ : state) {
    run_kernel_rows(
        {px.re_d[0], dre, px.im_d.data(), v->h, v->w, v->max_iter, iters.data(), mag2.data()},
        Precision::F64, isa);
    benchmark::DoNotOptimize(iters.data());
    useful = 0;
    for (std::uint32_t c : iters)
      useful += c;
  }
  report(state, useful);
}

const struct {
  const char *name;
  Spec spec;
} formats[] = {
    {"masked:11.52", {Kind::Masked, 11, 52}},
    {"masked:4.50", {Kind::Masked, 4, 50}},
    {"fixed:11.5", {Kind::Fixed, 11, 5}},
    {"fixed:20.12", {Kind::Fixed, 20, 12}},
    {"fixed:8.56", {Kind::Fixed, 8, 56}},
    {"fixed:8.120", {Kind::Fixed, 8, 120}},
    {"posit8", {Kind::Posit, 8, 0}},
    {"posit16", {Kind::Posit, 16, 0}},
    {"posit32", {Kind::Posit, 32, 0}},
    {"dd", {Kind::DD}},
    {"qd", {Kind::QD}},
    {"mp:128", {Kind::MP, 128, 0}},
    {"mp:256", {Kind::MP, 256, 0}},
    {"mp:1024", {Kind::MP, 1024, 0}},
};

const int registered = [] {
  for (const View &v : views) {
    const std::string view = v.name;
    benchmark::RegisterBenchmark(("Formats/" + view + "/f64_simd").c_str(), bm_f64, Isa::Auto, &v)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("Formats/" + view + "/f64_scalar").c_str(), bm_f64, Isa::Scalar,
                                 &v)
        ->Unit(benchmark::kMillisecond);
    for (const auto &f : formats)
      benchmark::RegisterBenchmark(("Formats/" + view + "/" + f.name).c_str(), bm_format, f.spec,
                                   &v)
          ->Unit(benchmark::kMillisecond);
  }
  return 0;
}();

} // namespace

BENCHMARK_MAIN();
