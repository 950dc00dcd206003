// Rectangle filling and adaptive anti-aliasing, side by side in one process on one thread:
// for each scene, the plain render (fill off, aa 1) against filling and against aa 2..3, as
// medians of interleaved repetitions, with iterations computed. Usage: bench_fill [reps]
// (default 5). The ISA is the best this CPU offers unless OVERDRIVE_ISA lowers it.
#include "render/render.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

using namespace overdrive;

namespace {

struct Variant {
  const char *name;
  bool fill;
  int aa;
};

struct Scene {
  const char *name;
  RenderRequest req;
};

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

} // namespace

int main(int argc, char **argv) {
  const int reps = argc > 1 ? std::max(1, std::atoi(argv[1])) : 5;
  std::vector<Scene> scenes;
  {
    RenderRequest r; // tile 7/76/40 lies entirely inside the period-3 bulb
    r.view = tile_viewport({7, 76, 40}, 256);
    r.max_iter = 5000;
    scenes.push_back({"interior-tile-5000", r});
    r.view = tile_viewport({18, 115104, 122432}, 512); // seahorse mini-set, as a tile
    r.max_iter = 20000;
    scenes.push_back({"seahorse-tile-20000", r});
    r.view = {-0.743643887037151, 0.131825904205330, 1e-5, 512, 512}; // issue 15's seahorse
    scenes.push_back({"seahorse-view-20000", r});
    r.view = tile_viewport({2, 1, 1}, 256);
    r.max_iter = 512;
    scenes.push_back({"tile-2/1/1-512", r});
    r.max_iter = 2048;
    scenes.push_back({"tile-2/1/1-2048", r});
  }
  const std::vector<Variant> variants{
      {"plain", false, 1}, {"fill", true, 1}, {"fill+aa2", true, 2}, {"fill+aa3", true, 3}};
  std::printf("ISA %s, %d repetitions, one thread; time and computed iterations relative to "
              "plain\n",
              std::string(to_string(best_isa())).c_str(), reps);
  std::printf("%-20s %-9s %10s %8s %14s %8s %10s\n", "scene", "variant", "ms", "x plain",
              "computed", "x plain", "aa pixels");
  for (const Scene &s : scenes) {
    std::vector<std::vector<double>> ms(variants.size());
    std::vector<RenderStats> stats(variants.size());
    for (int rep = 0; rep < reps; ++rep)
      for (std::size_t v = 0; v < variants.size(); ++v) {
        RenderRequest r = s.req;
        r.fill = variants[v].fill;
        r.aa = variants[v].aa;
        const auto t0 = std::chrono::steady_clock::now();
        render_image(r, &stats[v]);
        ms[v].push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                .count());
      }
    const double base = median(ms[0]);
    for (std::size_t v = 0; v < variants.size(); ++v)
      std::printf("%-20s %-9s %10.2f %8.3f %14llu %8.4f %10llu\n", s.name, variants[v].name,
                  median(ms[v]), median(ms[v]) / base,
                  static_cast<unsigned long long>(stats[v].computed),
                  static_cast<double>(stats[v].computed) / static_cast<double>(stats[0].computed),
                  static_cast<unsigned long long>(stats[v].supersampled));
  }
  return 0;
}
