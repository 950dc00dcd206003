// `overdrive render`: renders a view or a tile to a PNG file, streamed in row bands
// (cli/poster.cpp), with progress; under mpirun across the ranks.
#include "cli/commands.hpp"
#include "cli/formats.hpp"
#include "cli/mpi_session.hpp"
#include "cli/poster.hpp"
#include "executors/executor.hpp"
#include "render/render.hpp"

#include <CLI/CLI.hpp>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <future>
#include <iostream>
#include <string>
#include <unistd.h>

namespace overdrive::cli {
namespace {

struct RenderArgs {
  std::string center;
  std::string width = "3"; // any number of digits (exact views for the deep formats)
  std::string tile;
  std::string size;
  int iter = 1000;
  int aa = 1;
  std::string palette = "classic";
  std::string precision = "f64";
  std::string isa = "auto";
  std::string out = "mandelbrot.png";
  std::string executor = "pool";
  int workers = 0;
  bool split = false;
  bool stats = false;
  bool json = false;
};

[[noreturn]] void fail(const std::string &msg) {
  std::cerr << "overdrive render: error: " << msg << "\n";
  std::exit(usage_error);
}

bool parse_pair(const std::string &s, char sep, std::string &a, std::string &b) {
  const auto pos = s.find(sep);
  if (pos == std::string::npos) return false;
  a = s.substr(0, pos);
  b = s.substr(pos + 1);
  return !a.empty() && !b.empty();
}

double parse_double(const std::string &s, const char *what) {
  try {
    std::size_t used = 0;
    const double v = std::stod(s, &used);
    if (used != s.size() || !std::isfinite(v)) throw std::invalid_argument(s);
    return v;
  } catch (const std::exception &) {
    fail(std::string("malformed ") + what + " '" + s + "'");
  }
}

std::int64_t parse_int(const std::string &s, const char *what) {
  try {
    std::size_t used = 0;
    const long long v = std::stoll(s, &used);
    if (used != s.size()) throw std::invalid_argument(s);
    return v;
  } catch (const std::exception &) {
    fail(std::string("malformed ") + what + " '" + s + "'");
  }
}

// "WxH" or "N" (square).
std::pair<int, int> parse_size(const std::string &s) {
  std::string a, b;
  const bool pair = parse_pair(s, 'x', a, b);
  const auto w = parse_int(pair ? a : s, "--size");
  const auto h = pair ? parse_int(b, "--size") : w;
  if (w < 1 || h < 1 || w > Limits::max_image_side || h > Limits::max_image_side)
    fail("--size " + s + " is out of range (1 to " + std::to_string(Limits::max_image_side) +
         " pixels per side)");
  if (static_cast<std::uint64_t>(w) * static_cast<std::uint64_t>(h) > Limits::max_image_pixels)
    fail("--size " + s + " is " + std::to_string(w * h) + " pixels, more than the cap of " +
         std::to_string(Limits::max_image_pixels) + " (65536x65536)");
  return {static_cast<int>(w), static_cast<int>(h)};
}

RenderRequest build_request(const RenderArgs &a) {
  RenderRequest req;
  req.max_iter = a.iter;
  req.aa = a.aa;
  if (auto p = parse_palette(a.palette)) req.palette = *p;
  // A list of formats is the compare mode (cli/formats.cpp); one format renders as usual.
  if (a.precision.find(',') == std::string::npos)
    if (auto p = parse_precision(a.precision)) req.precision = *p;
  if (auto i = parse_isa(a.isa)) {
    if (!isa_supported(*i)) fail("--isa " + a.isa + " is not supported by this CPU or build");
    req.isa = *i;
  }
  if (!a.tile.empty()) {
    const auto first = a.tile.find('/'), last = a.tile.rfind('/');
    if (first == std::string::npos || first == last)
      fail("malformed --tile '" + a.tile + "' (expected Z/X/Y)");
    const auto z = parse_int(a.tile.substr(0, first), "tile zoom");
    // x and y may exceed 64 bits at deep zooms.
    auto index = [&a](const std::string &s, const char *what) {
      const auto v = parse_tile_index(s);
      if (!v) fail(std::string("malformed ") + what + " '" + s + "' in --tile " + a.tile);
      return *v;
    };
    const TileId t{static_cast<int>(std::clamp<std::int64_t>(z, -1, Limits::max_deep_zoom + 1)),
                   index(a.tile.substr(first + 1, last - first - 1), "tile x"),
                   index(a.tile.substr(last + 1), "tile y")};
    if (!tile_is_valid(t))
      fail("--tile " + a.tile + " is outside its zoom level (zoom 0.." +
           std::to_string(Limits::max_deep_zoom) + ", 0 <= x,y < 2^zoom)");
    const auto [w, h] = a.size.empty() ? std::pair{256, 256} : parse_size(a.size);
    if (w != h) fail("--size for a tile must be square");
    req.view = tile_viewport(t, w);
    req.exact = tile_exact_view(t);
    req.precision = resolve_precision(req);
    return req;
  }
  const auto [w, h] = a.size.empty() ? std::pair{1024, 1024} : parse_size(a.size);
  std::string re = "-0.5", im = "0";
  if (!a.center.empty() && !parse_pair(a.center, ',', re, im))
    fail("malformed --center '" + a.center + "' (expected RE,IM, e.g. -0.75,0.1)");
  // Any number of digits: the doubles place the native kernels, the exact strings every format
  // that needs more (computed exactly, rounded once into the format).
  for (const auto &[s, what] :
       {std::pair{re, "--center real part"}, std::pair{im, "--center imaginary part"},
        std::pair{a.width, "--width"}})
    if (const std::string why = exact_number_error(s); !why.empty())
      fail(std::string(what) + ": " + why);
  req.view = {parse_double(re, "--center real part"), parse_double(im, "--center imaginary part"),
              parse_double(a.width, "--width"), w, h};
  req.exact = {re, im, a.width};
  if (req.view.pixel_size() <= 0.0 || !std::isfinite(req.view.pixel_size()))
    fail("--width is too small for this image size");
  req.precision = resolve_precision(req);
  return req;
}

int run_render(const RenderArgs &a) {
  const RenderRequest req = build_request(a);
  if (a.precision.find(',') != std::string::npos)
    return run_compare(req, a.precision, a.out, {a.executor, a.workers, a.stats, a.json});
  const int w = req.view.pixel_width, h = req.view.pixel_height;
  ExecutorOptions eo;
  eo.workers = a.workers;
  eo.split = a.split;
  const auto executor = make_executor(a.executor, eo);

  // Streamed (cli/poster.cpp): bands rendered and encoded on the workers, written in order; under
  // mpirun spread over the ranks, rank 0 writing.
  const BandRenderer render = [&req](const JobContext &ctx, int begin, int end,
                                     std::span<std::uint8_t> out) {
    const auto row_bytes = static_cast<std::size_t>(req.view.pixel_width) * 3;
    RenderStats s;
    ctx.for_rows(begin, end, [&](int a0, int b0) {
      s += render_rows(req, a0, b0,
                       out.subspan(static_cast<std::size_t>(a0 - begin) * row_bytes,
                                   static_cast<std::size_t>(b0 - a0) * row_bytes));
    });
    return s;
  };
  const bool writer = mpi_world().rank == 0;
  const PosterResult res =
      render_poster(w, h, *executor, render, a.out, writer && isatty(STDERR_FILENO) != 0);
  executor->shutdown();
  if (!res.ok) fail(res.error);
  if (!writer) return 0;
  const ExecutorStats es = executor->stats();
  std::cerr << "wrote " << a.out << " (" << w << "x" << h << ", " << res.png_bytes / 1024
            << " KiB; " << res.wall_ms << " ms: render " << res.render_ms << " ms, encode "
            << res.encode_ms << " ms summed over " << res.ranks << " x " << executor->workers()
            << " workers)\n";
  if (a.stats) {
    char line[640];
    std::snprintf(line, sizeof line,
                  "{\"executor\":\"%s\",\"workers\":%d,\"split\":%s,\"ranks\":%d,\"width\":%d,"
                  "\"height\":%d,\"max_iter\":%d,\"precision\":\"%s\",\"isa\":\"%s\","
                  "\"iterations\":%llu,\"wall_ms\":%.3f,\"render_ms\":%.3f,\"encode_ms\":%.3f,"
                  "\"png_bytes\":%llu,\"bands\":%zu,\"busy_ms\":[",
                  std::string(executor->name()).c_str(), executor->workers(),
                  a.split ? "true" : "false", res.ranks, w, h, req.max_iter,
                  std::string(to_string(req.precision)).c_str(),
                  std::string(to_string(req.isa == Isa::Auto ? best_isa() : req.isa)).c_str(),
                  static_cast<unsigned long long>(res.stats.iterations), res.wall_ms, res.render_ms,
                  res.encode_ms, static_cast<unsigned long long>(res.png_bytes), res.bands);
    std::string json = line;
    // Per-worker busy time (this process) shows how evenly the bands spread over the workers.
    for (std::size_t k = 0; k < es.busy_seconds.size(); ++k) {
      char v[32];
      std::snprintf(v, sizeof v, "%s%.3f", k ? "," : "", es.busy_seconds[k] * 1000.0);
      json += v;
    }
    std::cerr << json << "]}" << std::endl;
  }
  return 0;
}

} // namespace

void add_render_command(CLI::App &app) {
  auto args = std::make_shared<RenderArgs>();
  auto *cmd = app.add_subcommand("render", "Render a view or a tile of the Mandelbrot set to PNG");
  auto *center =
      cmd->add_option("--center", args->center, "Centre of the view as RE,IM (default -0.5,0)");
  auto *width =
      cmd->add_option("--width", args->width, "Width of the view in the complex plane (default 3)")
          ->check(CLI::Validator(
              [](std::string &v) {
                double d = 0;
                return exact_number_error(v).empty() && CLI::detail::lexical_cast(v, d) &&
                               std::isfinite(d) && d > 0
                           ? std::string{}
                           : "must be a positive number (any number of digits), got " + v;
              },
              "POSITIVE"));
  cmd->add_option("--tile", args->tile,
                  "Render slippy-map tile Z/X/Y instead (zoom 0 = re [-2.5,1.5] x im [-2,2], "
                  "zoom up to " +
                      std::to_string(Limits::max_deep_zoom) + "; x, y any number of digits)")
      ->excludes(center)
      ->excludes(width);
  cmd->add_option("--size", args->size,
                  "Image size WIDTHxHEIGHT or N (default 1024x1024, 256 for a tile; at most " +
                      std::to_string(Limits::max_image_side) + " per side and " +
                      std::to_string(Limits::max_image_pixels) + " pixels)");
  cmd->add_option("--iter", args->iter,
                  "Maximum iterations per pixel (1 to " + std::to_string(Limits::max_iterations) +
                      ", default 1000)")
      ->check(CLI::Range(1, Limits::max_iterations));
  cmd->add_option("--aa", args->aa,
                  "Adaptive anti-aliasing: N x N samples for pixels on colour edges (1 to " +
                      std::to_string(Limits::max_aa) + ", default 1 = off)")
      ->check(CLI::Range(1, Limits::max_aa));
  cmd->add_option("--palette", args->palette, "Colour palette: " + palette_names())
      ->check(CLI::IsMember(all_palette_names()));
  cmd->add_option("--precision", args->precision,
                  "Number format of the kernel: " + precision_names() +
                      " (default f64). A comma-separated list renders each format and its "
                      "difference from the reference: OUT-<name>.png and OUT-<name>-diff.png")
      ->check(CLI::Validator(precision_list_error, "FORMAT[,FORMAT...]"));
  cmd->add_option("--isa", args->isa,
                  "Kernel instruction set: auto, scalar, avx2, avx512 (default auto)")
      ->check(CLI::IsMember(all_isa_names()));
  cmd->add_option("--out", args->out, "Output PNG file (default mandelbrot.png)");
  cmd->add_option("--executor", args->executor,
                  "Executor that renders the row bands: " + executor_kind_names() +
                      " (default pool)")
      ->check(CLI::IsMember(all_executor_names()));
  cmd->add_option("--workers", args->workers, "Workers (default: number of cores)")
      ->check(CLI::Range(1, 256));
  cmd->add_flag("--split", args->split, "tbb: also split each band across all workers");
  cmd->add_flag("--stats", args->stats,
                "Print one JSON line on stderr after the render: executor, workers, ranks, size, "
                "iterations, wall ms, render and encode ms (summed over workers and ranks: "
                "they overlap; with several --precision formats: one line per format with its "
                "disagreement with the reference)");
  cmd->add_flag("--json", args->json,
                "With several --precision formats: print one JSON object on stdout with each "
                "format's disagreement with the reference");
  cmd->callback([args] { std::exit(run_render(*args)); });
}

} // namespace overdrive::cli
