// Geometry, smooth colouring and row rendering. The escape-time loop itself lives behind
// run_kernel() (kernel.cpp) so that faster kernels can replace it without touching this file.
#include "render/render.hpp"

#include "render/format_render.hpp"

#include <algorithm>
#include <array>
#include <cassert>
#include <charconv>
#include <cmath>

namespace overdrive {

double Viewport::re_at(int px) const noexcept {
  const double pix = pixel_size();
  return center_re - 0.5 * width + (px + 0.5) * pix;
}

double Viewport::im_at(int py) const noexcept {
  const double pix = pixel_size();
  return center_im + 0.5 * pix * pixel_height - (py + 0.5) * pix;
}

std::string to_string(TileIndex v) {
  if (v == 0) return "0";
  const bool neg = v < 0;
  auto u = static_cast<unsigned __int128>(v);
  if (neg) u = ~u + 1;
  std::string s;
  for (; u != 0; u /= 10)
    s.insert(s.begin(), static_cast<char>('0' + static_cast<int>(u % 10)));
  return neg ? "-" + s : s;
}

std::optional<TileIndex> parse_tile_index(std::string_view s) noexcept {
  if (s.empty() || s.size() > 38 || (s.size() > 1 && s[0] == '0')) return std::nullopt;
  TileIndex v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  if (v >= TileIndex{1} << 126) return std::nullopt;
  return v;
}

bool tile_is_valid(const TileId &tile) noexcept {
  if (tile.z < 0 || tile.z > Limits::max_deep_zoom) return false;
  const TileIndex n = TileIndex{1} << tile.z;
  return tile.x >= 0 && tile.y >= 0 && tile.x < n && tile.y < n;
}

ExactView tile_exact_view(const TileId &tile) {
  assert(tile_is_valid(tile));
  // Centre re = (-5 * 2^z + 4 * (2x + 1)) / 2^(z+1), im = (2^(z+2) - 4 * (2y + 1)) / 2^(z+1),
  // width 4 / 2^z: integers below 2^(z+4) over powers of two, so exact in hexadecimal.
  auto hex = [](TileIndex num, int exp2) {
    const bool neg = num < 0;
    auto u = static_cast<unsigned __int128>(neg ? -num : num);
    std::string digits;
    do {
      digits.insert(digits.begin(), "0123456789abcdef"[static_cast<int>(u & 15)]);
      u >>= 4;
    } while (u != 0);
    return (neg ? "-0x" : "0x") + digits + "p" + std::to_string(exp2);
  };
  const int z = tile.z;
  const TileIndex re = -5 * (TileIndex{1} << z) + 4 * (2 * tile.x + 1);
  const TileIndex im = (TileIndex{1} << (z + 2)) - 4 * (2 * tile.y + 1);
  return {hex(re, -(z + 1)), hex(im, -(z + 1)), hex(4, -z)};
}

TileBounds tile_bounds(const TileId &tile) noexcept {
  assert(tile_is_valid(tile));
  // 4 / 2^z is a power of two, so every edge below is exact in double (to zoom max_tile_zoom).
  const double span = std::ldexp(4.0, -tile.z);
  const double re_min = -2.5 + static_cast<double>(tile.x) * span;
  const double im_max = 2.0 - static_cast<double>(tile.y) * span;
  return {re_min, re_min + span, im_max - span, im_max};
}

Viewport tile_viewport(const TileId &tile, int size) noexcept {
  const TileBounds b = tile_bounds(tile);
  const double span = b.re_max - b.re_min;
  return {b.re_min + 0.5 * span, b.im_min + 0.5 * span, span, size, size};
}

namespace {

struct Rgb {
  std::uint8_t r, g, b;
};

struct Stop {
  double at;
  Rgb rgb;
};

constexpr int lut_size = detail::palette_size;
// One extra entry, black, for interior points (index palette_size).
using Lut = std::array<Rgb, lut_size + 1>;

Lut make_lut(std::initializer_list<Stop> stops) {
  // Stops are cyclic: the last one wraps to the first at 1.0.
  std::vector<Stop> s(stops);
  s.push_back({1.0, s.front().rgb});
  Lut lut{};
  for (int i = 0; i < lut_size; ++i) {
    const double t = static_cast<double>(i) / lut_size;
    std::size_t k = 0;
    while (k + 2 < s.size() && t >= s[k + 1].at)
      ++k;
    const double f = (t - s[k].at) / (s[k + 1].at - s[k].at);
    auto mix = [f](std::uint8_t a, std::uint8_t b) {
      return static_cast<std::uint8_t>(std::lround(a + (b - a) * f));
    };
    lut[static_cast<std::size_t>(i)] = {mix(s[k].rgb.r, s[k + 1].rgb.r),
                                        mix(s[k].rgb.g, s[k + 1].rgb.g),
                                        mix(s[k].rgb.b, s[k + 1].rgb.b)};
  }
  lut[lut_size] = {0, 0, 0};
  return lut;
}

const Lut &palette_lut(Palette p) {
  static const Lut classic = make_lut({{0.0, {0, 7, 100}},
                                       {0.16, {32, 107, 203}},
                                       {0.42, {237, 255, 255}},
                                       {0.6425, {255, 170, 0}},
                                       {0.8575, {0, 2, 0}}});
  static const Lut fire = make_lut({{0.0, {12, 0, 0}},
                                    {0.25, {170, 20, 0}},
                                    {0.5, {255, 140, 0}},
                                    {0.75, {255, 240, 140}},
                                    {0.9, {255, 255, 255}}});
  static const Lut ocean = make_lut(
      {{0.0, {0, 8, 28}}, {0.3, {0, 70, 130}}, {0.6, {30, 170, 210}}, {0.8, {210, 245, 255}}});
  static const Lut grey = make_lut({{0.0, {16, 16, 16}}, {0.5, {240, 240, 240}}});
  switch (p) {
  case Palette::Fire:
    return fire;
  case Palette::Ocean:
    return ocean;
  case Palette::Grey:
    return grey;
  case Palette::Classic:
    break;
  }
  return classic;
}

} // namespace

RenderStats render_rows(const RenderRequest &req, int row_begin, int row_end,
                        std::span<std::uint8_t> out) {
  const Viewport &v = req.view;
  assert(v.pixel_width > 0 && v.pixel_height > 0 && req.max_iter > 0);
  assert(0 <= row_begin && row_begin <= row_end && row_end <= v.pixel_height);
  assert(out.size() == static_cast<std::size_t>(row_end - row_begin) *
                           static_cast<std::size_t>(v.pixel_width) * 3);
  if (detail::use_format_path(req)) return detail::render_rows_format(req, row_begin, row_end, out);
  const auto w = static_cast<std::size_t>(v.pixel_width);
  // Scratch is per call, so concurrent callers never share it. Rows go to the kernel in batches
  // of about 64K pixels (at least one row, at most 32768 wide), so its vectors stay full across
  // row ends; the counts are those of one row at a time.
  const int batch = std::max(1, std::min(row_end - row_begin, 65536 / v.pixel_width));
  std::vector<std::uint32_t> iters(w * static_cast<std::size_t>(batch));
  std::vector<float> mag2(iters.size());
  std::vector<double> im(static_cast<std::size_t>(batch));
  std::vector<std::uint16_t> idx(iters.size());
  const Lut &lut = palette_lut(req.palette);
  RenderStats stats;
  for (int py0 = row_begin; py0 < row_end; py0 += batch) {
    const int rows = std::min(batch, row_end - py0);
    for (int r = 0; r < rows; ++r)
      im[static_cast<std::size_t>(r)] = v.im_at(py0 + r);
    run_kernel_rows({v.re_at(0), v.pixel_size(), im.data(), rows, v.pixel_width, req.max_iter,
                     iters.data(), mag2.data()},
                    req.precision, req.isa);
    std::uint8_t *dst = out.data() + static_cast<std::size_t>(py0 - row_begin) * w * 3;
    const std::size_t npx = w * static_cast<std::size_t>(rows);
    // Smooth colouring: palette indices (SIMD, identical on every ISA), then a table lookup.
    detail::colour_indices(iters.data(), mag2.data(), npx, req.max_iter, req.isa, idx.data());
    for (std::size_t k = 0; k < npx; ++k) {
      stats.iterations += iters[k];
      const Rgb c = lut[idx[k]];
      dst[3 * k] = c.r;
      dst[3 * k + 1] = c.g;
      dst[3 * k + 2] = c.b;
    }
  }
  return stats;
}

void colour_counts(const RenderRequest &req, std::span<const std::uint32_t> iters,
                   std::span<const float> mag2, std::span<std::uint8_t> rgb) {
  assert(mag2.size() == iters.size() && rgb.size() == 3 * iters.size());
  std::vector<std::uint16_t> idx(iters.size());
  detail::colour_indices(iters.data(), mag2.data(), iters.size(), req.max_iter, req.isa,
                         idx.data());
  const Lut &lut = palette_lut(req.palette);
  for (std::size_t k = 0; k < idx.size(); ++k) {
    const Rgb c = lut[idx[k]];
    rgb[3 * k] = c.r;
    rgb[3 * k + 1] = c.g;
    rgb[3 * k + 2] = c.b;
  }
}

Image render_image(const RenderRequest &req, RenderStats *stats) {
  Image img{req.view.pixel_width, req.view.pixel_height, {}};
  img.rgb.resize(static_cast<std::size_t>(img.width) * static_cast<std::size_t>(img.height) * 3);
  const RenderStats s = render_rows(req, 0, img.height, img.rgb);
  if (stats) *stats = s;
  return img;
}

namespace {
template <typename E, std::size_t N>
std::optional<E> find_name(const std::array<std::pair<std::string_view, E>, N> &names,
                           std::string_view name) noexcept {
  for (const auto &[n, e] : names)
    if (n == name) return e;
  return std::nullopt;
}

constexpr std::array<std::pair<std::string_view, Palette>, 4> palettes{
    {{"classic", Palette::Classic},
     {"fire", Palette::Fire},
     {"ocean", Palette::Ocean},
     {"grey", Palette::Grey}}};
constexpr std::array<std::pair<std::string_view, Isa>, 4> isas{
    {{"auto", Isa::Auto}, {"scalar", Isa::Scalar}, {"avx2", Isa::Avx2}, {"avx512", Isa::Avx512}}};

template <typename E, std::size_t N>
std::string_view find_enum(const std::array<std::pair<std::string_view, E>, N> &names,
                           E e) noexcept {
  for (const auto &[n, v] : names)
    if (v == e) return n;
  return "?";
}
} // namespace

std::string_view to_string(Palette p) noexcept {
  return find_enum(palettes, p);
}
std::string_view to_string(Isa isa) noexcept {
  return find_enum(isas, isa);
}
std::optional<Palette> parse_palette(std::string_view n) noexcept {
  return find_name(palettes, n);
}
std::optional<Isa> parse_isa(std::string_view n) noexcept {
  return find_name(isas, n);
}

namespace {
template <typename E, std::size_t N>
std::vector<std::string> list_of(const std::array<std::pair<std::string_view, E>, N> &names) {
  std::vector<std::string> out;
  for (const auto &[n, e] : names)
    out.emplace_back(n);
  return out;
}
std::string joined(const std::vector<std::string> &names) {
  std::string s;
  for (const auto &n : names)
    s += (s.empty() ? "" : ", ") + n;
  return s;
}
} // namespace

std::vector<std::string> all_palette_names() {
  return list_of(palettes);
}
std::vector<std::string> all_isa_names() {
  return list_of(isas);
}
std::string palette_names() {
  return joined(all_palette_names());
}
std::string precision_names() {
  return joined(precision_forms());
}

} // namespace overdrive
