// `overdrive pyramid`: every tile of zoom levels A..B within a bbox, written once as
// DIR/z/x/y.png (the server's bytes for /tile/z/x/y.png with the same parameters) plus
// DIR/pyramid.json. Resumable: each tile goes to y.png.HOST-PID.part (a name no other process
// writes, so even two runs overlapping in one DIR cannot mix bytes) and is renamed, so an
// interrupted run leaves only complete tiles and a rerun skips them. Under `mpirun -n R` the ranks
// share the tiles (pyramid_mpi.cpp) and write into one DIR.
#include "cli/commands.hpp"
#include "cli/mpi_session.hpp"
#include "cli/pyramid.hpp"
#include "executors/executor.hpp"
#include "web/server.hpp"
#include "web/tile_cache.hpp"

#include <CLI/CLI.hpp>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <future>
#include <iostream>
#include <list>
#include <memory>
#include <sstream>
#include <unistd.h>

namespace overdrive::cli {
namespace {

namespace fs = std::filesystem;
using namespace pyramid;

struct PyramidArgs {
  std::string zoom;
  std::string bbox;
  std::string out;
  std::string iter = std::to_string(Limits::default_tile_iterations);
  std::string size = std::to_string(Limits::default_tile_size);
  std::string palette = "classic";
  std::string precision = "f64";
  std::string executor = "pool";
  int workers = 0;
  bool force = false;
  std::int64_t max_tiles = 5000000;
  bool json = false;
  std::string schedule = "dynamic";
  int batch = 4;
};

struct Bbox {
  double re0 = -2.5, im0 = -2.0, re1 = 1.5, im1 = 2.0;
};

/// A usage error: one line on stderr (rank 0 only: every rank finds the same error).
int usage(const std::string &msg) {
  if (mpi_world().rank == 0) std::cerr << "overdrive pyramid: error: " << msg << "\n";
  return usage_error;
}

bool parse_int(std::string_view s, int &v) {
  const auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  return ec == std::errc{} && p == s.data() + s.size() && !s.empty() && s[0] != '-';
}

bool parse_double(const std::string &s, double &v) {
  try {
    std::size_t used = 0;
    v = std::stod(s, &used);
    return used == s.size() && std::isfinite(v);
  } catch (const std::exception &) {
    return false;
  }
}

std::string fmt_g(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string fmt_f(double v, int digits) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", digits, v);
  return buf;
}

/// The tiles of zoom z meeting the (clipped) bbox.
ZoomRange zoom_range(int z, const Bbox &b) {
  const std::int64_t n = std::int64_t{1} << z;
  const double side = 4.0 / static_cast<double>(n);
  auto clampi = [n](double v) {
    return std::clamp<std::int64_t>(static_cast<std::int64_t>(v), 0, n - 1);
  };
  ZoomRange r;
  r.z = z;
  r.x0 = clampi(std::floor((b.re0 + 2.5) / side));
  const std::int64_t x1 = clampi(std::ceil((b.re1 + 2.5) / side) - 1);
  r.y0 = clampi(std::floor((2.0 - b.im1) / side));
  const std::int64_t y1 = clampi(std::ceil((2.0 - b.im0) / side) - 1);
  r.nx = x1 - r.x0 + 1;
  r.ny = y1 - r.y0 + 1;
  return r;
}

/// ".HOST-PID.part": this process's temporary names (unique on a shared file system too).
const std::string &part_suffix() {
  static const std::string suffix = [] {
    char host[256] = {};
    gethostname(host, sizeof host - 1);
    return "." + std::string(host) + "-" + std::to_string(getpid()) + ".part";
  }();
  return suffix;
}

/// Removes the *.part files a killed run left under dir/z for the plan's zooms, those older than
/// since (a run writing into dir right now keeps its own). Returns how many.
std::size_t remove_stale_parts(const fs::path &dir, const Plan &plan, fs::file_time_type since) {
  std::size_t n = 0;
  for (const auto &zr : plan.zooms) {
    std::error_code ec;
    for (auto it = fs::recursive_directory_iterator(dir / std::to_string(zr.z), ec);
         !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      const std::string name = it->path().filename().string();
      std::error_code ec2;
      if (name.size() > 5 && name.ends_with(".part") && it->last_write_time(ec2) < since && !ec2 &&
          fs::remove(it->path(), ec2))
        ++n;
    }
  }
  return n;
}

/// The "tile_params" of an existing DIR/pyramid.json, or "" if there is none or it has none.
std::string existing_tile_params(const fs::path &dir) {
  std::ifstream in(dir / "pyramid.json");
  if (!in) return {};
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string text = ss.str();
  const std::string tag = "\"tile_params\": \"";
  const auto at = text.find(tag);
  if (at == std::string::npos) return {};
  const auto end = text.find('"', at + tag.size());
  return end == std::string::npos ? std::string()
                                  : text.substr(at + tag.size(), end - at - tag.size());
}

bool write_atomically(const fs::path &path, const std::string &text) {
  const fs::path part = path.string() + part_suffix();
  {
    std::ofstream out(part, std::ios::binary | std::ios::trunc);
    out << text;
    if (!out.flush()) return false;
  }
  std::error_code ec;
  fs::rename(part, path, ec);
  return !ec;
}

/// One tile on the local executor.
class ExecutorRunner final : public TileRunner {
public:
  ExecutorRunner(Executor &ex, TileWork work) : ex_(ex), work_(std::move(work)) {}
  bool submit(std::int64_t index) override {
    auto f = submit_task(ex_, [this, index](const JobContext &) { return work_(index); });
    if (!f) return false;
    futures_.push_back(std::move(*f));
    return true;
  }
  std::size_t in_flight() const override { return futures_.size(); }
  int reap(RankStats &stats, int wait_us) override {
    int n = 0;
    if (wait_us > 0 && !futures_.empty())
      futures_.front().wait_for(std::chrono::microseconds(wait_us));
    for (auto it = futures_.begin(); it != futures_.end();) {
      if (it->wait_for(std::chrono::seconds(0)) != std::future_status::ready) {
        ++it;
        continue;
      }
      try {
        const TileOutcome o = it->get();
        const auto z = static_cast<std::size_t>(o.z);
        (o.rendered ? stats.rendered : stats.skipped)[z] += 1;
        stats.bytes[z] += static_cast<double>(o.bytes);
        stats.seconds[z] += o.seconds;
      } catch (const std::exception &e) {
        if (stats.errors == 0)
          std::cerr << "overdrive pyramid: error (rank " << mpi_world().rank << "): " << e.what()
                    << "\n";
        stats.errors += 1;
      }
      it = futures_.erase(it);
      ++n;
    }
    return n;
  }

private:
  Executor &ex_;
  TileWork work_;
  std::list<std::future<TileOutcome>> futures_;
};

int run_pyramid(const PyramidArgs &a) {
  const MpiWorld &world = mpi_world();
  // ---- validate everything before touching the file system --------------------------------
  int z0 = 0, z1 = 0;
  {
    const auto dash = a.zoom.find('-');
    const std::string lo = a.zoom.substr(0, dash);
    const std::string hi = dash == std::string::npos ? lo : a.zoom.substr(dash + 1);
    if (!parse_int(lo, z0) || !parse_int(hi, z1))
      return usage("--zoom '" + a.zoom + "' is malformed (expected A-B or A, e.g. 0-7)");
    if (z0 > z1) return usage("--zoom " + a.zoom + " is reversed (A must be <= B)");
    if (z1 > Limits::max_tile_zoom)
      return usage("--zoom " + a.zoom + " goes beyond the cap (0.." +
                   std::to_string(Limits::max_tile_zoom) + ")");
  }
  Bbox box;
  if (!a.bbox.empty()) {
    std::vector<std::string> parts;
    std::stringstream ss(a.bbox);
    for (std::string part; std::getline(ss, part, ',');)
      parts.push_back(part);
    double v[4];
    bool ok = parts.size() == 4;
    for (std::size_t i = 0; ok && i < 4; ++i)
      ok = parse_double(parts[i], v[i]);
    if (!ok) return usage("--bbox '" + a.bbox + "' is malformed (expected re0,im0,re1,im1)");
    if (!(v[0] < v[2]) || !(v[1] < v[3]))
      return usage("--bbox " + a.bbox + " is empty (need re0 < re1 and im0 < im1)");
    box = {std::max(v[0], -2.5), std::max(v[1], -2.0), std::min(v[2], 1.5), std::min(v[3], 2.0)};
    if (!(box.re0 < box.re1) || !(box.im0 < box.im1))
      return usage("--bbox " + a.bbox + " lies outside the plane (re -2.5..1.5, im -2..2)");
  }
  // The tile flags go through the server's own validation (a tile 0/0/0 with these parameters).
  const std::multimap<std::string, std::string> params{
      {"iter", a.iter}, {"palette", a.palette}, {"precision", a.precision}, {"size", a.size}};
  const TileParse parsed = parse_tile_query("0", "0", "0", params);
  if (!parsed.query) return usage(parsed.error);
  const TileQuery proto = *parsed.query;
  const int size = proto.request.view.pixel_width;
  const std::string tile_params = detail::tile_params_key(proto);
  const auto kind = parse_executor_kind(a.executor);
  if (!kind)
    return usage("unknown --executor '" + a.executor + "' (valid: " + executor_kind_names() + ")");
  if (a.schedule != "static" && a.schedule != "dynamic")
    return usage("--schedule '" + a.schedule + "' is not static or dynamic");
  if (a.max_tiles < 1) return usage("--max-tiles must be at least 1");

  Plan plan;
  for (int z = z0; z <= z1; ++z) {
    ZoomRange r = zoom_range(z, box);
    if (r.ny > (a.max_tiles - plan.total) / r.nx)
      return usage("the pyramid would have more than --max-tiles " + std::to_string(a.max_tiles) +
                   " tiles (zoom " + a.zoom + ")");
    r.first = plan.total;
    plan.total += r.nx * r.ny;
    plan.zooms.push_back(r);
  }
  if (a.out.empty()) return usage("--out DIR is required");

  // ---- the output directory: rank 0 checks and prepares it, the others follow ---------------
  const fs::path dir = a.out;
  const std::string previous = world.rank == 0 ? existing_tile_params(dir) : std::string();
  const bool overwrite = a.force && !previous.empty() && previous != tile_params;
  int status = 0;
  if (world.rank == 0) {
    std::error_code ec;
    auto fail = [&status](const std::string &msg) {
      std::cerr << "overdrive pyramid: error: " << msg << "\n";
      status = usage_error;
    };
    if (fs::exists(dir, ec) && !fs::is_directory(dir, ec)) {
      fail("--out " + a.out + " is not a directory");
    } else if (fs::exists(dir, ec)) {
      if (access(dir.c_str(), W_OK | X_OK) != 0)
        fail("--out " + a.out + " is not writable");
      else if (!a.force && previous.empty() && !fs::is_empty(dir, ec))
        fail("--out " + a.out + " is not empty and holds no pyramid.json (--force writes into it)");
      else if (!a.force && previous != tile_params && !previous.empty())
        fail("--out " + a.out + " holds a pyramid with other parameters (" + previous + ", not " +
             tile_params + "); --force overwrites it");
    } else if (!fs::create_directories(dir, ec) || ec) {
      fail("--out " + a.out + " cannot be created: " + ec.message());
    }
    if (status == 0) {
      // Written first: a rerun after a crash compares its parameters with these.
      std::ostringstream j;
      j << "{\n  \"format\": \"overdrive-pyramid 1\",\n  \"tile_params\": \"" << tile_params
        << "\",\n  \"complete\": false\n}\n";
      if (!write_atomically(dir / "pyramid.json", j.str())) {
        std::cerr << "overdrive pyramid: error: cannot write " << (dir / "pyramid.json") << "\n";
        status = 1;
      }
    }
  }
  status = broadcast_status(status);
  if (status != 0) return status;

  const auto started = fs::file_time_type::clock::now();
  // ---- render this rank's share ---------------------------------------------------------------
  ExecutorOptions eo;
  eo.workers = a.workers;
  const auto executor = make_executor(*kind, eo);
  const TileWork work = [&](std::int64_t index) {
    const TileId t = plan.tile(index);
    TileOutcome o;
    o.z = t.z;
    const fs::path folder = dir / std::to_string(t.z) / overdrive::to_string(t.x);
    const fs::path file = folder / (overdrive::to_string(t.y) + ".png");
    std::error_code ec;
    if (!overwrite && fs::exists(file, ec)) return o; // complete: renamed into place
    const auto t0 = std::chrono::steady_clock::now();
    // The server's path (web/tile_handler.cpp): its parsed request for this tile, all rows,
    // encode_png of the RGB rows.
    const TileParse q = parse_tile_query(std::to_string(t.z), overdrive::to_string(t.x),
                                         overdrive::to_string(t.y), params);
    if (!q.query) throw std::runtime_error(q.error);
    const RenderRequest &req = q.query->request;
    std::vector<std::uint8_t> rgb(static_cast<std::size_t>(size) * static_cast<std::size_t>(size) *
                                  3);
    render_rows(req, 0, req.view.pixel_height, rgb);
    const std::vector<std::uint8_t> png =
        encode_png(rgb, req.view.pixel_width, req.view.pixel_height);
    fs::create_directories(folder, ec);
    const fs::path part = file.string() + part_suffix();
    {
      std::ofstream out(part, std::ios::binary | std::ios::trunc);
      out.write(reinterpret_cast<const char *>(png.data()),
                static_cast<std::streamsize>(png.size()));
      if (!out.flush()) throw std::runtime_error("cannot write " + part.string());
    }
    fs::rename(part, file, ec);
    if (ec) throw std::runtime_error("cannot rename " + part.string() + ": " + ec.message());
    o.rendered = true;
    o.bytes = png.size();
    o.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    return o;
  };
  ExecutorRunner runner(*executor, work);
  RunOptions ro;
  ro.schedule = a.schedule == "static" ? Schedule::Static : Schedule::Dynamic;
  ro.batch = a.batch;
  ro.window = 2 * executor->workers();
  ro.progress = isatty(STDERR_FILENO) != 0;
  const auto t0 = std::chrono::steady_clock::now();
  const RankStats mine = run_share(plan, runner, ro);
  executor->shutdown();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const std::vector<RankStats> ranks = gather_stats(mine);
  if (world.rank != 0) return mine.errors > 0 ? 1 : 0;
  const std::size_t stale = remove_stale_parts(dir, plan, started);

  // ---- summary and pyramid.json (rank 0) ------------------------------------------------------
  RankStats sum;
  std::vector<double> rank_tiles;
  for (const auto &r : ranks) {
    double t = 0;
    for (std::size_t z = 0; z < kZooms; ++z) {
      sum.rendered[z] += r.rendered[z];
      sum.skipped[z] += r.skipped[z];
      sum.bytes[z] += r.bytes[z];
      sum.seconds[z] += r.seconds[z];
      t += r.rendered[z] + r.skipped[z];
    }
    sum.errors += r.errors;
    rank_tiles.push_back(t);
  }
  double rendered = 0, skipped = 0, bytes = 0;
  for (std::size_t z = 0; z < kZooms; ++z) {
    rendered += sum.rendered[z];
    skipped += sum.skipped[z];
    bytes += sum.bytes[z];
  }
  const double total = static_cast<double>(plan.total);
  // Every tile must be accounted for exactly once over all ranks (a scheduling bug otherwise).
  if (rendered + skipped + sum.errors != total) {
    std::cerr << "overdrive pyramid: error: the ranks accounted for "
              << fmt_f(rendered + skipped + sum.errors, 0) << " tiles, not " << plan.total << "\n";
    sum.errors += 1;
  }
  auto share = [&](std::size_t r) { return total > 0 ? 100.0 * rank_tiles[r] / total : 0.0; };
  std::ostringstream j;
  j << "{\n  \"format\": \"overdrive-pyramid 1\",\n  \"tile_params\": \"" << tile_params
    << "\",\n  \"renderer_version\": \"" << detail::kRendererVersion << "\",\n  \"size\": " << size
    << ",\n  \"iter\": " << proto.request.max_iter << ",\n  \"palette\": \""
    << to_string(proto.request.palette) << "\",\n  \"precision\": \""
    << to_string(proto.request.precision) << "\",\n  \"zoom\": [" << z0 << ", " << z1
    << "],\n  \"bbox\": [" << fmt_g(box.re0) << ", " << fmt_g(box.im0) << ", " << fmt_g(box.re1)
    << ", " << fmt_g(box.im1) << "],\n  \"complete\": " << (sum.errors == 0 ? "true" : "false")
    << ",\n  \"tiles\": " << plan.total << ",\n  \"rendered\": " << fmt_f(rendered, 0)
    << ",\n  \"skipped\": " << fmt_f(skipped, 0) << ",\n  \"errors\": " << fmt_f(sum.errors, 0)
    << ",\n  \"stale_parts_removed\": " << stale << ",\n  \"bytes_written\": " << fmt_f(bytes, 0)
    << ",\n  \"wall_seconds\": " << fmt_f(wall, 3)
    << ",\n  \"tiles_per_second\": " << fmt_f(wall > 0 ? rendered / wall : 0, 1)
    << ",\n  \"ranks\": " << world.size << ",\n  \"schedule\": \"" << a.schedule
    << "\",\n  \"executor\": \"" << to_string(*kind)
    << "\",\n  \"workers_per_rank\": " << executor->workers() << ",\n  \"rank_share_percent\": [";
  for (std::size_t r = 0; r < rank_tiles.size(); ++r)
    j << (r ? ", " : "") << fmt_f(share(r), 1);
  j << "],\n  \"zooms\": [";
  for (const auto &zr : plan.zooms) {
    const auto z = static_cast<std::size_t>(zr.z);
    j << (zr.z == z0 ? "" : ",") << "\n    {\"zoom\": " << zr.z << ", \"tiles\": " << zr.nx * zr.ny
      << ", \"x\": [" << zr.x0 << ", " << zr.x0 + zr.nx - 1 << "], \"y\": [" << zr.y0 << ", "
      << zr.y0 + zr.ny - 1 << "], \"rendered\": " << fmt_f(sum.rendered[z], 0)
      << ", \"skipped\": " << fmt_f(sum.skipped[z], 0) << ", \"bytes\": " << fmt_f(sum.bytes[z], 0)
      << ", \"render_seconds\": " << fmt_f(sum.seconds[z], 3) << "}";
  }
  j << "\n  ]\n}\n";
  if (!write_atomically(dir / "pyramid.json", j.str())) {
    std::cerr << "overdrive pyramid: error: cannot write " << (dir / "pyramid.json") << "\n";
    return 1;
  }
  if (a.json) {
    std::cout << j.str();
  } else {
    std::cout << "pyramid: " << plan.total << " tiles (" << fmt_f(rendered, 0) << " rendered, "
              << fmt_f(skipped, 0) << " skipped), " << fmt_f(bytes / 1e6, 1) << " MB, "
              << fmt_f(wall, 2) << " s, " << fmt_f(wall > 0 ? rendered / wall : 0, 1)
              << " tiles/s; " << world.size << " rank" << (world.size > 1 ? "s" : "") << " ("
              << a.schedule << ")";
    for (std::size_t r = 0; r < rank_tiles.size(); ++r)
      std::cout << (r ? ", " : ": ") << "rank " << r << " " << fmt_f(share(r), 1) << "%";
    std::cout << std::endl;
  }
  return sum.errors > 0 ? 1 : 0;
}

} // namespace

void add_pyramid_command(CLI::App &app) {
  auto args = std::make_shared<PyramidArgs>();
  auto *cmd = app.add_subcommand(
      "pyramid", "Write every tile of zoom levels A..B (within --bbox) to DIR/z/x/y.png, the "
                 "server's bytes; resumable; `mpirun -n R overdrive pyramid ...` shares the work");
  cmd->add_option("--zoom", args->zoom,
                  "Zoom levels A-B (or A), 0.." + std::to_string(Limits::max_tile_zoom))
      ->required();
  cmd->add_option("--bbox", args->bbox,
                  "Region re0,im0,re1,im1 (default the whole plane re -2.5..1.5, im -2..2)");
  cmd->add_option("--out", args->out, "Output directory DIR")->required();
  cmd->add_option("--iter", args->iter, "Iterations per pixel (as the server's ?iter=)");
  cmd->add_option("--size", args->size, "Tile side in pixels (as ?size=)");
  cmd->add_option("--palette", args->palette, "Palette (as ?palette=)");
  cmd->add_option("--precision", args->precision, "Precision (as ?precision=)");
  cmd->add_option("--executor", args->executor, "Executor on each rank: inline, tbb or pool");
  cmd->add_option("--workers", args->workers, "Workers per rank (0 = number of cores)")
      ->check(CLI::Range(0, 256));
  cmd->add_flag("--force", args->force,
                "Write into a non-empty DIR or over a pyramid with other parameters");
  cmd->add_option("--max-tiles", args->max_tiles, "Refuse a larger pyramid (default 5000000)");
  cmd->add_flag("--json", args->json, "Print the summary as JSON (the final pyramid.json)");
  cmd->add_option("--schedule", args->schedule,
                  "Sharing among MPI ranks: dynamic (rank 0 hands out batches) or static "
                  "(rank r takes every R-th tile)");
  cmd->add_option("--batch", args->batch, "Tiles per request with --schedule dynamic")
      ->check(CLI::Range(1, 100000));
  cmd->callback([args] { std::exit(run_pyramid(*args)); });
}

} // namespace overdrive::cli
