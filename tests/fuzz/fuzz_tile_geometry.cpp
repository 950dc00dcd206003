// libFuzzer target: tile geometry. For any valid z/x/y/size: bounds are exact powers-of-two
// spans inside the zoom-0 square, neighbours share edges exactly, the four children partition
// the parent exactly, and the viewport's pixel grid covers the tile.
#include "render/render.hpp"

#include <cmath>
#include <cstdint>
#include <cstring>

namespace {
#define OVERDRIVE_FUZZ_CHECK(cond) ((cond) ? void() : __builtin_trap())

template <typename T> T take(const std::uint8_t *&p, std::size_t &n) {
  T v{};
  const std::size_t k = n < sizeof v ? n : sizeof v;
  std::memcpy(&v, p, k);
  p += k;
  n -= k;
  return v;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
  using namespace overdrive;
  const auto z = static_cast<int>(take<std::int8_t>(data, size));
  auto x = take<std::int64_t>(data, size);
  auto y = take<std::int64_t>(data, size);
  const int px = 1 + static_cast<int>(take<std::uint16_t>(data, size) % Limits::max_tile_size);
  // Half of the inputs folded into range, so valid tiles are common at every zoom.
  if (take<std::uint8_t>(data, size) & 1 && z >= 0 && z <= Limits::max_tile_zoom) {
    const std::int64_t n = std::int64_t{1} << z;
    x = static_cast<std::int64_t>(static_cast<std::uint64_t>(x) % static_cast<std::uint64_t>(n));
    y = static_cast<std::int64_t>(static_cast<std::uint64_t>(y) % static_cast<std::uint64_t>(n));
  }
  const TileId t{z, x, y};
  const bool valid = tile_is_valid(t);
  const bool expect = z >= 0 && z <= Limits::max_deep_zoom && x >= 0 && y >= 0 &&
                      x < (TileIndex{1} << z) && y < (TileIndex{1} << z);
  OVERDRIVE_FUZZ_CHECK(valid == expect);
  if (!valid || z > Limits::max_tile_zoom) return 0; // deeper: exact only in tile_exact_view

  const TileBounds b = tile_bounds(t);
  const double span = std::ldexp(4.0, -z);
  OVERDRIVE_FUZZ_CHECK(b.re_max - b.re_min == span && b.im_max - b.im_min == span);
  OVERDRIVE_FUZZ_CHECK(b.re_min >= -2.5 && b.re_max <= 1.5 && b.im_min >= -2.0 && b.im_max <= 2.0);
  const std::int64_t n = std::int64_t{1} << z;
  if (x + 1 < n) OVERDRIVE_FUZZ_CHECK(tile_bounds({z, x + 1, y}).re_min == b.re_max);
  if (y + 1 < n) OVERDRIVE_FUZZ_CHECK(tile_bounds({z, x, y + 1}).im_max == b.im_min);
  if (z < Limits::max_tile_zoom) {
    const TileBounds tl = tile_bounds({z + 1, 2 * x, 2 * y});
    const TileBounds br = tile_bounds({z + 1, 2 * x + 1, 2 * y + 1});
    OVERDRIVE_FUZZ_CHECK(tl.re_min == b.re_min && tl.im_max == b.im_max);
    OVERDRIVE_FUZZ_CHECK(br.re_max == b.re_max && br.im_min == b.im_min);
    OVERDRIVE_FUZZ_CHECK(tl.re_max == br.re_min && tl.im_min == br.im_max);
  }
  const Viewport v = tile_viewport(t, px);
  OVERDRIVE_FUZZ_CHECK(v.pixel_width == px && v.pixel_height == px && v.width == span);
  OVERDRIVE_FUZZ_CHECK(v.center_re > b.re_min && v.center_re < b.re_max);
  OVERDRIVE_FUZZ_CHECK(v.center_im > b.im_min && v.center_im < b.im_max);
  // Pixel centres lie inside the tile, half a pixel from its edges (to rounding).
  const double pix = v.pixel_size(), tol = pix * 1e-6;
  OVERDRIVE_FUZZ_CHECK(std::fabs(v.re_at(0) - (b.re_min + 0.5 * pix)) <= tol);
  OVERDRIVE_FUZZ_CHECK(std::fabs(v.re_at(px - 1) - (b.re_max - 0.5 * pix)) <= tol);
  OVERDRIVE_FUZZ_CHECK(std::fabs(v.im_at(0) - (b.im_max - 0.5 * pix)) <= tol);
  OVERDRIVE_FUZZ_CHECK(std::fabs(v.im_at(px - 1) - (b.im_min + 0.5 * pix)) <= tol);
  return 0;
}
