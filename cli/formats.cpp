// `overdrive render --precision f32,f64,posit16 --out cmp.png`: each format's image, the pixels
// where it disagrees with the reference (dd or mp, chosen by depth), and the fractions.
#include "cli/formats.hpp"

#include "executors/executor.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <future>
#include <iostream>

namespace overdrive::cli {
namespace {

std::vector<std::string> split_names(const std::string &list) {
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    const auto comma = list.find(',', start);
    out.push_back(list.substr(start, comma - start));
    if (comma == std::string::npos) return out;
    start = comma + 1;
  }
}

std::string file_name(const std::string &out, const std::string &name, const char *suffix) {
  std::string stem = out;
  if (stem.size() > 4 && stem.substr(stem.size() - 4) == ".png") stem.resize(stem.size() - 4);
  std::string n = name;
  std::replace(n.begin(), n.end(), ':', '_');
  std::replace(n.begin(), n.end(), '.', '_');
  return stem + "-" + n + suffix + ".png";
}

struct Counts {
  std::vector<std::uint32_t> iters;
  std::vector<float> mag2;
  double ms = 0;
};

/// Escape counts of the whole image, in bands of rows on the executor.
Counts counts_of(const RenderRequest &req, Executor &executor) {
  const int w = req.view.pixel_width, h = req.view.pixel_height;
  const auto rw = static_cast<std::size_t>(w);
  Counts c{std::vector<std::uint32_t>(rw * static_cast<std::size_t>(h)),
           std::vector<float>(rw * static_cast<std::size_t>(h)), 0};
  const auto t0 = std::chrono::steady_clock::now();
  const int band = std::clamp(h / (executor.workers() * 16), 1, 16);
  std::vector<std::future<int>> bands;
  for (int row = 0; row < h; row += band) {
    const int end = std::min(h, row + band);
    auto f = submit_task(
        executor,
        [&req, &c, row, end, rw](const JobContext &) {
          const auto off = static_cast<std::size_t>(row) * rw;
          const auto len = static_cast<std::size_t>(end - row) * rw;
          render_counts(req, row, end, std::span(c.iters).subspan(off, len),
                        std::span(c.mag2).subspan(off, len));
          return 0;
        },
        "rows " + std::to_string(row));
    if (!f) throw std::runtime_error("the executor refused work");
    bands.push_back(std::move(*f));
  }
  for (auto &b : bands)
    b.get();
  c.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  return c;
}

bool write_png(const std::string &path, const std::vector<std::uint8_t> &rgb, int w, int h) {
  const auto png = encode_png(rgb, w, h);
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char *>(png.data()), static_cast<std::streamsize>(png.size()));
  return static_cast<bool>(f);
}

} // namespace

std::string precision_list_error(std::string &value) {
  for (const auto &name : split_names(value))
    if (std::string why = precision_error(name); !why.empty()) return why;
  return {};
}

int run_compare(const RenderRequest &base, const std::string &formats, const std::string &out,
                const CompareOptions &options) {
  ExecutorOptions eo;
  eo.workers = options.workers;
  const auto executor = make_executor(options.executor, eo);
  const int w = base.view.pixel_width, h = base.view.pixel_height;
  RenderRequest ref_req = base;
  ref_req.precision = reference_precision(base);
  const Counts ref = counts_of(ref_req, *executor);
  std::string json = "{\"reference\":\"" + to_string(ref_req.precision) + "\",\"formats\":[";
  bool first = true;
  for (const auto &name : split_names(formats)) {
    RenderRequest req = base;
    req.precision = *parse_precision(name);
    req.precision = resolve_precision(req);
    const Counts c = req.precision == ref_req.precision ? ref : counts_of(req, *executor);
    std::vector<std::uint8_t> rgb(static_cast<std::size_t>(w) * static_cast<std::size_t>(h) * 3);
    colour_counts(req, c.iters, c.mag2, rgb);
    // The difference image: the format's picture dimmed to a third, disagreeing pixels red.
    std::vector<std::uint8_t> diff(rgb.size());
    for (std::size_t k = 0; k < c.iters.size(); ++k) {
      const bool differs = c.iters[k] != ref.iters[k];
      for (std::size_t ch = 0; ch < 3; ++ch)
        diff[3 * k + ch] =
            differs ? (ch == 0 ? 255 : 0) : static_cast<std::uint8_t>(rgb[3 * k + ch] / 3);
    }
    const std::string image = file_name(out, name, ""), diff_image = file_name(out, name, "-diff");
    if (!write_png(image, rgb, w, h) || !write_png(diff_image, diff, w, h)) {
      std::cerr << "overdrive render: error: cannot write '" << image << "' or '" << diff_image
                << "'\n";
      return 1;
    }
    const double frac = disagreement(c.iters, ref.iters);
    char line[512];
    std::snprintf(line, sizeof line,
                  "{\"precision\":\"%s\",\"reference\":\"%s\",\"disagreement\":%.6f,"
                  "\"render_ms\":%.3f,\"image\":\"%s\",\"diff\":\"%s\"}",
                  to_string(req.precision).c_str(), to_string(ref_req.precision).c_str(), frac,
                  c.ms, image.c_str(), diff_image.c_str());
    if (!first) json += ',';
    json += line;
    first = false;
    std::cerr << "wrote " << image << " and " << diff_image << " (" << to_string(req.precision)
              << ": " << frac * 100.0 << "% of pixels disagree with "
              << to_string(ref_req.precision) << ")\n";
    if (options.stats) std::cerr << line << std::endl;
  }
  executor->shutdown();
  if (options.json) std::cout << json << "]}" << std::endl;
  return 0;
}

} // namespace overdrive::cli
