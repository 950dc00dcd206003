// Validation of everything a client can send, in one place, before any work is queued.
#include "web/server.hpp"

#include <charconv>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <thread>

namespace overdrive {
namespace {

// Strict canonical unsigned decimal: digits only, no sign, no spaces, no leading "+" and no
// leading zero (one spelling per value, so one cache entry per tile), fits in int64.
std::optional<std::int64_t> parse_u64(std::string_view s) noexcept {
  if (s.empty() || s.size() > 19 || (s.size() > 1 && s[0] == '0')) return std::nullopt;
  if (s[0] < '0' || s[0] > '9') return std::nullopt; // from_chars takes "-0"
  std::int64_t v = 0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || ptr != s.data() + s.size() || v < 0) return std::nullopt;
  return v;
}

std::string quoted(std::string_view s) {
  // Keep reasons one line and printable, whatever the client sent.
  std::string out = "'";
  for (char c : s.substr(0, 64))
    out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (s.size() > 64) out += "...";
  return out + "'";
}

} // namespace

std::optional<WorkSpec> parse_work_spec(std::string_view text) noexcept {
  if (text == "none" || text.empty()) return WorkSpec{};
  const auto colon = text.find(':');
  if (colon == std::string_view::npos) return std::nullopt;
  const auto kind = text.substr(0, colon);
  const auto ms = parse_u64(text.substr(colon + 1));
  if (!ms || *ms > 60000) return std::nullopt;
  if (kind == "sleep") return WorkSpec{WorkSpec::Kind::Sleep, static_cast<int>(*ms)};
  if (kind == "spin") return WorkSpec{WorkSpec::Kind::Spin, static_cast<int>(*ms)};
  return std::nullopt;
}

std::string to_string(const WorkSpec &work) {
  switch (work.kind) {
  case WorkSpec::Kind::Sleep:
    return "sleep:" + std::to_string(work.ms);
  case WorkSpec::Kind::Spin:
    return "spin:" + std::to_string(work.ms);
  case WorkSpec::Kind::None:
    break;
  }
  return "none";
}

void perform_work(const WorkSpec &work) {
  if (work.kind == WorkSpec::Kind::Sleep) {
    std::this_thread::sleep_for(std::chrono::milliseconds(work.ms));
  } else if (work.kind == WorkSpec::Kind::Spin) {
    // Burn this thread's CPU time, not wall time: threads sharing a core then take longer, as
    // real rendering would.
    auto cpu_ns = [] {
      timespec ts{};
      clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
      return std::int64_t{ts.tv_sec} * 1000000000 + ts.tv_nsec;
    };
    const std::int64_t until = cpu_ns() + std::int64_t{work.ms} * 1000000;
    volatile std::uint64_t sink = 0;
    while (cpu_ns() < until)
      for (int i = 0; i < 1000; ++i)
        sink = sink + static_cast<std::uint64_t>(i);
  }
}

TileParse parse_tile_query(std::string_view z, std::string_view x, std::string_view y,
                           const std::multimap<std::string, std::string> &params) {
  TileParse out;
  auto bad = [&out](std::string reason) {
    out.error = std::move(reason);
    return out;
  };
  // Tile indices beyond 64 bits (zoom up to max_deep_zoom, for the deep formats).
  const auto zv = parse_u64(z);
  const auto xv = parse_tile_index(x), yv = parse_tile_index(y);
  if (!zv) return bad("zoom " + quoted(z) + " is not a non-negative integer");
  if (*zv > Limits::max_deep_zoom)
    return bad("zoom " + std::to_string(*zv) + " is out of range (0.." +
               std::to_string(Limits::max_deep_zoom) + ")");
  if (!xv) return bad("x " + quoted(x) + " is not a non-negative integer in range");
  if (!yv) return bad("y " + quoted(y) + " is not a non-negative integer in range");
  const TileId tile{static_cast<int>(*zv), *xv, *yv};
  if (!tile_is_valid(tile))
    return bad("tile " + std::to_string(tile.z) + "/" + to_string(tile.x) + "/" +
               to_string(tile.y) + " is outside zoom " + std::to_string(tile.z) +
               " (0 <= x, y < 2^zoom)");

  TileQuery q;
  q.tile = tile;
  int size = Limits::default_tile_size;
  q.request.max_iter = Limits::default_tile_iterations;
  std::string_view last_key;
  for (const auto &[key, value] : params) {
    if (key == last_key) return bad("parameter " + quoted(key) + " is given more than once");
    last_key = key;
    if (key == "iter") {
      const auto v = parse_u64(value);
      if (!v || *v < 1 || *v > Limits::max_tile_iterations)
        return bad("iter " + quoted(value) + " must be an integer from 1 to " +
                   std::to_string(Limits::max_tile_iterations));
      q.request.max_iter = static_cast<int>(*v);
    } else if (key == "size") {
      const auto v = parse_u64(value);
      if (!v || *v < Limits::min_tile_size || *v > Limits::max_tile_size)
        return bad("size " + quoted(value) + " must be an integer from " +
                   std::to_string(Limits::min_tile_size) + " to " +
                   std::to_string(Limits::max_tile_size));
      size = static_cast<int>(*v);
    } else if (key == "palette") {
      const auto p = parse_palette(value);
      if (!p) return bad("unknown palette " + quoted(value) + " (valid: " + palette_names() + ")");
      q.request.palette = *p;
    } else if (key == "precision") {
      const auto p = parse_precision(value);
      if (!p) return bad("precision: " + precision_error(value));
      q.request.precision = *p;
    } else if (key == "ref") {
      if (value != "0" && value != "1") return bad("ref " + quoted(value) + " must be 0 or 1");
      q.ref = value == "1";
    } else if (key == "executor") {
      const auto e = parse_executor_kind(value);
      if (!e)
        return bad("unknown executor " + quoted(value) + " (valid: " + executor_kind_names() + ")");
      q.executor = *e;
    } else if (key == "nonce") {
      if (value.size() > 64) return bad("nonce is longer than 64 characters");
      q.nonce = true;
    } else {
      return bad("unknown parameter " + quoted(key) +
                 " (valid: iter, size, palette, precision, ref, executor, nonce)");
    }
  }
  const auto work = static_cast<std::uint64_t>(size) * static_cast<std::uint64_t>(size) *
                    static_cast<std::uint64_t>(q.request.max_iter);
  if (work > Limits::max_tile_work)
    return bad("iter x size^2 = " + std::to_string(work) + " exceeds the per-tile budget of " +
               std::to_string(Limits::max_tile_work));
  q.request.view = tile_viewport(tile, size);
  q.request.exact = tile_exact_view(tile);
  // Formats: auto resolves here (the tile's key, ETag and headers name the format used); the
  // format's cost per iteration bounds the time one tile may hold a worker.
  q.request.precision = resolve_precision(q.request);
  double seconds = estimated_seconds(q.request);
  if (q.ref) { // the reference's render too, unless the format is its own reference
    RenderRequest r = q.request;
    r.precision = reference_precision(q.request);
    if (r.precision != q.request.precision) seconds += estimated_seconds(r);
  }
  // f64 within doubles' depth stays far below the bound (0.2 ns x max_tile_work is < 1 s).
  if (seconds > Limits::max_tile_seconds) {
    char est[32];
    std::snprintf(est, sizeof est, "%.1f", seconds);
    return bad("iter x size^2 in " + to_string(q.request.precision) +
               (q.ref ? " with its reference " + to_string(reference_precision(q.request)) : "") +
               " would take about " + est + " s, over the per-tile bound of " +
               std::to_string(static_cast<int>(Limits::max_tile_seconds)) +
               " s; lower iter or size");
  }
  out.query = q;
  return out;
}

} // namespace overdrive
