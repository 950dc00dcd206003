// Renderer: known escape counts, geometry of tiles, colouring and PNG round trips.
#include "common/require_isa.hpp"
#include "common/stb_decode.hpp"
#include "render/render.hpp"

#include <algorithm>
#include <cmath>
#include <complex>
#include <doctest/doctest.h>
#include <set>
#include <vector>

using namespace overdrive;

namespace {

// Escape count of one point through the given kernel (row of length 1).
std::uint32_t escape_count(double re, double im, int max_iter, Precision p = Precision::F64,
                           Isa isa = Isa::Scalar) {
  std::uint32_t it = 0;
  float m = 0;
  run_kernel({re, 0.0, im, 1, max_iter, &it, &m}, p, isa);
  return it;
}

// An independent textbook implementation on std::complex, for cross-checking the kernel.
std::uint32_t complex_escape(std::complex<double> c, int max_iter) {
  std::complex<double> z = 0;
  for (int n = 1; n <= max_iter; ++n) {
    z = z * z + c;
    if (std::norm(z) > 4.0) return static_cast<std::uint32_t>(n);
  }
  return static_cast<std::uint32_t>(max_iter);
}

RenderRequest full_view(int size, int iter) {
  RenderRequest r;
  r.view = {-0.5, 0.0, 3.0, size, size};
  r.max_iter = iter;
  return r;
}

} // namespace

TEST_CASE("Render.InteriorPointsNeverEscape") {
  // 0 (main cardioid), -1 (period-2 bulb), -0.1226+0.7449i (near the centre of the period-3
  // bulb). -0.1+0.65i, often quoted as inside, escapes at iteration 75 (see below).
  for (auto [re, im] : {std::pair{0.0, 0.0}, {-1.0, 0.0}, {-0.1226, 0.7449}}) {
    CAPTURE(re);
    CAPTURE(im);
    CHECK(escape_count(re, im, 10000) == 10000u);
    CHECK(escape_count(re, im, 500) == 500u);
  }
}

TEST_CASE("Render.EscapeCountsOfKnownPoints") {
  // c = 1: z = 1, 2, 5 -> |z| > 2 first at iteration 3.
  CHECK(escape_count(1.0, 0.0, 1000) == 3u);
  // c = 0.5: z = 0.5, 0.75, 1.0625, 1.6289, 3.1533 -> iteration 5.
  CHECK(escape_count(0.5, 0.0, 1000) == 5u);
  // c = 2i: z = 2i (|z| = 2, not beyond), -4 + 2i -> iteration 2.
  CHECK(escape_count(0.0, 2.0, 1000) == 2u);
  // Just outside the period-3 bulb; Python's complex arithmetic agrees.
  CHECK(escape_count(-0.1, 0.65, 1000) == 75u);
  // Far outside escapes at once.
  CHECK(escape_count(3.0, 3.0, 1000) == 1u);
}

TEST_CASE("Render.ReferenceKernelMatchesTextbookOnAGrid") {
  // An 8x8 grid straddling the boundary, checked point by point against std::complex.
  for (int j = 0; j < 8; ++j)
    for (int i = 0; i < 8; ++i) {
      const double re = -2.0 + i * 0.33, im = -1.1 + j * 0.3;
      CAPTURE(re);
      CAPTURE(im);
      CHECK(escape_count(re, im, 200) == complex_escape({re, im}, 200));
    }
}

TEST_CASE("Render.FullViewIsSymmetricAboutTheRealAxis") {
  const RenderRequest r = full_view(256, 256);
  const Image img = render_image(r);
  const std::size_t row = static_cast<std::size_t>(img.width) * 3;
  int mismatched_rows = 0;
  for (int y = 0; y < img.height / 2; ++y) {
    const auto *a = img.rgb.data() + static_cast<std::size_t>(y) * row;
    const auto *b = img.rgb.data() + static_cast<std::size_t>(img.height - 1 - y) * row;
    if (!std::equal(a, a + row, b)) ++mismatched_rows;
  }
  CHECK(mismatched_rows == 0);
}

TEST_CASE("Render.InsideIsBlackOutsideIsNot") {
  RenderRequest r = full_view(64, 256);
  const Image img = render_image(r);
  auto px = [&](int x, int y) {
    const auto *p = &img.rgb[(static_cast<std::size_t>(y) * 64 + static_cast<std::size_t>(x)) * 3];
    return std::array<int, 3>{p[0], p[1], p[2]};
  };
  // The centre column near -0.5+0i is inside the main cardioid; the corner is far outside.
  CHECK(px(32, 32) == std::array<int, 3>{0, 0, 0});
  CHECK(px(0, 0) != std::array<int, 3>{0, 0, 0});
}

TEST_CASE("Render.IsDeterministic") {
  const RenderRequest r = full_view(128, 500);
  CHECK(render_image(r).rgb == render_image(r).rgb);
  CHECK(encode_png(render_image(r)) == encode_png(render_image(r)));
}

TEST_CASE("Render.PalettesDiffer") {
  RenderRequest a = full_view(64, 200), b = a;
  b.palette = Palette::Fire;
  CHECK(render_image(a).rgb != render_image(b).rgb);
  CHECK(parse_palette("ocean") == Palette::Ocean);
  CHECK_FALSE(parse_palette("plaid").has_value());
  CHECK(palette_names().find("grey") != std::string::npos);
}

namespace {

// |z|^2 at escape that colouring must survive: at and just past the escape radius, below it
// (clamped to 4), 16 (exact power of two), huge, the largest float and infinity.
const float edge_mag2[] = {4.0f, 4.0000005f, 3.999f, 0.0f, 16.0f, 1e3f, 1e30f, 3.4e38f, INFINITY};
constexpr int colour_max_iter = 5000;
// Escape counts: 0, 1, around a palette turn (64), the last before max_iter, and interior ones.
const std::uint32_t edge_counts[] = {
    0, 1, 2, 63, 64, 65, colour_max_iter - 1, colour_max_iter, colour_max_iter + 7};

// Counts and |z|^2 of a real render (64 x 64), then every edge |z|^2 with every edge count: 4177
// pixels, so the SIMD loops also end in a tail that is not a multiple of any vector width.
struct ColourInput {
  std::vector<std::uint32_t> iters;
  std::vector<float> mag2;
};
ColourInput colour_input() {
  ColourInput in{std::vector<std::uint32_t>(4096), std::vector<float>(4096)};
  const Viewport v{-0.743643887037151, 0.131825904205330, 1e-3, 64, 64};
  for (int y = 0; y < 64; ++y)
    run_kernel({v.re_at(0), v.pixel_size(), v.im_at(y), 64, colour_max_iter,
                in.iters.data() + 64 * y, in.mag2.data() + 64 * y},
               Precision::F64, Isa::Auto);
  for (const float m : edge_mag2)
    for (const std::uint32_t n : edge_counts) {
      in.iters.push_back(n);
      in.mag2.push_back(m);
    }
  return in;
}

// Where colour_index_scalar's formula puts a pixel on the palette, in long double with libm's
// log2 instead of the fast polynomial: mu = n + 2 - log2(log2(max(|z|^2, 4))), position =
// frac(max(mu, 0) / period) * palette_size. -1 for interior points (black).
long double palette_position(std::uint32_t n, float mag2, int max_iter) {
  if (n >= static_cast<std::uint32_t>(max_iter)) return -1;
  const long double mu = n + 2.0L - std::log2(std::log2(std::max<long double>(mag2, 4.0L)));
  const long double turns = std::max(mu, 0.0L) / detail::palette_period;
  return (turns - std::floor(turns)) * detail::palette_size;
}

void colour_indices_match_scalar(Isa isa) {
  if (!test::require_isa(isa)) return;
  const ColourInput in = colour_input();
  std::vector<std::uint16_t> want(in.iters.size()), got(in.iters.size(), 0xffff);
  for (std::size_t i = 0; i < in.iters.size(); ++i)
    want[i] = detail::colour_index_scalar(in.iters[i], in.mag2[i], colour_max_iter);
  detail::colour_indices(in.iters.data(), in.mag2.data(), in.iters.size(), colour_max_iter, isa,
                         got.data());
  std::size_t bad = 0, bad_edges = 0;
  for (std::size_t i = 0; i < got.size(); ++i) {
    const bool b = got[i] != want[i] || got[i] > detail::palette_size;
    bad += b;
    bad_edges += b && i >= 4096;
  }
  CHECK(bad == 0);
  CHECK(bad_edges == 0);
}

} // namespace

TEST_CASE("Render.ColourInputCoversTheEdgeCases") {
  const ColourInput in = colour_input();
  REQUIRE(in.iters.size() == 4096 + std::size(edge_mag2) * std::size(edge_counts));
  CHECK(in.iters.size() % 8 != 0);
  for (const float m : edge_mag2) {
    CAPTURE(m);
    CHECK(std::count(in.mag2.begin(), in.mag2.end(), m) >= 9);
  }
  // The rendered part (a zoom near the boundary) spreads over many escape counts.
  const std::set<std::uint32_t> counts(in.iters.begin(), in.iters.begin() + 4096);
  CHECK(counts.size() > 100);
}

TEST_CASE("Render.ColourIndexScalarMatchesTheFormula") {
  // colour_index_scalar against libm. The index is floor(position), except near an entry
  // boundary where it may be the neighbour: the fast log2 is off by < 2e-5 (about 1e-3 of an
  // entry), and mu = n + 2 - ... is a float, whose rounding at n ~ 5000 (2^-11 iterations) is
  // 0.008 of an entry; allowed: within 0.05 of a boundary. Infinity is outside the formula (libm
  // gives mu = -inf, the fast log2 treats it as 2^128); it is checked across ISAs below.
  const ColourInput in = colour_input();
  std::size_t checked = 0, bad = 0, near_boundary = 0;
  for (std::size_t i = 0; i < in.iters.size(); ++i) {
    if (std::isinf(in.mag2[i])) continue;
    const auto idx = detail::colour_index_scalar(in.iters[i], in.mag2[i], colour_max_iter);
    const long double pos = palette_position(in.iters[i], in.mag2[i], colour_max_iter);
    ++checked;
    if (pos < 0) {
      bad += idx != detail::palette_size;
      continue;
    }
    const long double frac = pos - std::floor(pos);
    const auto lo = static_cast<int>(std::floor(pos)) % detail::palette_size;
    if (frac < 0.05L || frac > 0.95L) {
      ++near_boundary;
      const int d = (idx - lo + detail::palette_size) % detail::palette_size;
      bad += d > 1 && d < detail::palette_size - 1;
    } else {
      bad += idx != lo;
    }
  }
  MESSAGE(checked << " pixels, " << near_boundary << " within 0.05 of an entry boundary");
  CHECK(checked == in.iters.size() - std::size(edge_counts));
  CHECK(bad == 0);
  CHECK(near_boundary * 4 < checked); // the tolerance covers some pixels, not the test
}

TEST_CASE("Render.ColourIndicesMatchAcrossIsas.avx2") {
  colour_indices_match_scalar(Isa::Avx2);
}
TEST_CASE("Render.ColourIndicesMatchAcrossIsas.avx512") {
  colour_indices_match_scalar(Isa::Avx512);
}

TEST_CASE("Render.RowRangesComposeTheImage") {
  const RenderRequest r = full_view(96, 300);
  const Image whole = render_image(r);
  std::vector<std::uint8_t> parts(whole.rgb.size());
  const std::size_t row = 96 * 3;
  for (int a = 0; a < 96; a += 17) {
    const int b = std::min(96, a + 17);
    render_rows(r, a, b,
                std::span(parts).subspan(static_cast<std::size_t>(a) * row,
                                         static_cast<std::size_t>(b - a) * row));
  }
  CHECK(parts == whole.rgb);
}

TEST_CASE("Tile.ZoomZeroCoversTheFixedSquare") {
  const TileBounds b = tile_bounds({0, 0, 0});
  CHECK(b.re_min == -2.5);
  CHECK(b.re_max == 1.5);
  CHECK(b.im_min == -2.0);
  CHECK(b.im_max == 2.0);
  const TileBounds t = tile_bounds({2, 3, 0});
  CHECK(t.re_max == 1.5); // x grows to the right
  CHECK(t.im_max == 2.0); // y = 0 is the top row
}

TEST_CASE("Tile.ValidityFollowsZoom") {
  CHECK(tile_is_valid({0, 0, 0}));
  CHECK_FALSE(tile_is_valid({0, 1, 0}));
  CHECK(tile_is_valid({3, 7, 7}));
  CHECK_FALSE(tile_is_valid({3, 8, 0}));
  CHECK_FALSE(tile_is_valid({3, -1, 0}));
  CHECK_FALSE(tile_is_valid({-1, 0, 0}));
  CHECK_FALSE(tile_is_valid({Limits::max_deep_zoom + 1, 0, 0}));
  const std::int64_t last = (std::int64_t{1} << Limits::max_tile_zoom) - 1;
  CHECK(tile_is_valid({Limits::max_tile_zoom, last, last}));
}

TEST_CASE("Tile.ChildrenCoverTheirParentExactly") {
  for (const TileId parent : {TileId{0, 0, 0}, TileId{3, 5, 2}, TileId{20, 123456, 654321}}) {
    const TileBounds p = tile_bounds(parent);
    const TileBounds tl = tile_bounds({parent.z + 1, 2 * parent.x, 2 * parent.y});
    const TileBounds br = tile_bounds({parent.z + 1, 2 * parent.x + 1, 2 * parent.y + 1});
    CHECK(tl.re_min == p.re_min);
    CHECK(tl.im_max == p.im_max);
    CHECK(br.re_max == p.re_max);
    CHECK(br.im_min == p.im_min);
    CHECK(tl.re_max == br.re_min); // children meet in the middle
    CHECK(tl.im_min == br.im_max);
  }
}

TEST_CASE("Tile.NeighboursShareEdges") {
  const TileBounds a = tile_bounds({4, 6, 9});
  CHECK(a.re_max == tile_bounds({4, 7, 9}).re_min);
  CHECK(a.im_min == tile_bounds({4, 6, 10}).im_max);
}

TEST_CASE("Tile.FourChildrenRenderTheParentPixels") {
  // A parent at 2s pixels samples the same points as its four children at s pixels.
  const TileId parent{1, 0, 1};
  RenderRequest pr;
  pr.view = tile_viewport(parent, 64);
  pr.max_iter = 200;
  const Image big = render_image(pr);
  for (int dy = 0; dy < 2; ++dy)
    for (int dx = 0; dx < 2; ++dx) {
      RenderRequest cr = pr;
      cr.view = tile_viewport({2, 2 * parent.x + dx, 2 * parent.y + dy}, 32);
      const Image child = render_image(cr);
      int diff = 0;
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32 * 3; ++x)
          diff += child.rgb[static_cast<std::size_t>(y * 96 + x)] !=
                  big.rgb[static_cast<std::size_t>((dy * 32 + y) * 192 + dx * 96 + x)];
      CHECK(diff == 0);
    }
}

TEST_CASE("Png.RoundTripsThePixels") {
  const Image img = render_image(full_view(80, 300));
  const auto png = encode_png(img);
  REQUIRE(png.size() > 8);
  const std::uint8_t signature[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  CHECK(std::equal(std::begin(signature), std::end(signature), png.begin()));
  const auto d = test::decode_png(png);
  CHECK(d.width == 80);
  CHECK(d.height == 80);
  CHECK(d.channels == 3);
  CHECK(d.pixels == img.rgb);
}

TEST_CASE("Png.RejectsAMismatchedBuffer") {
  std::vector<std::uint8_t> rgb(10);
  CHECK_THROWS_AS(encode_png(rgb, 4, 4), std::invalid_argument);
}

// ---- rectangle filling and adaptive anti-aliasing -------------------------------------------

namespace {

// Pixels (of 3 bytes) that differ between two images of the same size.
std::size_t differing_pixels(const Image &a, const Image &b) {
  REQUIRE(a.rgb.size() == b.rgb.size());
  std::size_t n = 0;
  for (std::size_t k = 0; k < a.rgb.size(); k += 3)
    n += a.rgb[k] != b.rgb[k] || a.rgb[k + 1] != b.rgb[k + 1] || a.rgb[k + 2] != b.rgb[k + 2];
  return n;
}

// Renders req with and without rectangle filling; the pixels must match (fill.cpp allows at
// most 1e-4 of them to differ, for filaments thinner than a pixel) and the iteration totals too.
RenderStats fill_matches_plain(RenderRequest req) {
  req.fill = false;
  RenderStats plain_stats, fill_stats;
  const Image plain = render_image(req, &plain_stats);
  req.fill = true;
  const Image filled = render_image(req, &fill_stats);
  const auto px = static_cast<double>(req.view.pixel_width) * req.view.pixel_height;
  const auto diff = differing_pixels(plain, filled);
  CAPTURE(diff);
  CHECK(static_cast<double>(diff) <= 1e-4 * px);
  if (diff == 0) CHECK(fill_stats.iterations == plain_stats.iterations);
  CHECK(plain_stats.filled == 0);
  CHECK(plain_stats.computed == plain_stats.iterations);
  CHECK(fill_stats.computed + fill_stats.filled * static_cast<std::uint64_t>(req.max_iter) ==
        fill_stats.iterations);
  return fill_stats;
}

RenderRequest tile_request(TileId t, int size, int iter) {
  RenderRequest r;
  r.view = tile_viewport(t, size);
  r.max_iter = iter;
  return r;
}

} // namespace

TEST_CASE("Render.FillMatchesPlainOnTilesCrossingTheBoundary") {
  // Tiles at 4096+ iterations (fill.cpp's minimum).
  for (const TileId t : {TileId{2, 1, 1}, TileId{2, 1, 2}, TileId{2, 2, 1}, TileId{3, 3, 2},
                         TileId{5, 9, 12}, TileId{7, 76, 39}}) {
    CAPTURE(t.z);
    CAPTURE(t.x);
    CAPTURE(t.y);
    fill_matches_plain(tile_request(t, 128, 4096));
  }
  // The seahorse valley of issue 15: a zoom-18 tile (width 1.5e-5) holding its mini-set.
  const RenderStats s = fill_matches_plain(tile_request({18, 115104, 122432}, 512, 8000));
  CHECK(s.filled > 0);
}

TEST_CASE("Render.FillMatchesPlainOnArbitraryViews") {
  // Pixel sizes that are not powers of two and unaligned origins: the kernel computes each
  // grid line's and cell's pixels at exactly the plain render's c (RowsJob::k0, kstep).
  RenderRequest r;
  r.view = {-0.1226, 0.7449, 0.02, 100, 100};
  r.max_iter = 5000;
  fill_matches_plain(r);
  r.view = {-0.7453, 0.1127, 6.5e-3, 301, 157};
  fill_matches_plain(r);
  r.view = {-0.1226, 0.7449, 0.3, 301, 157}; // the period-3 bulb, filled
  CHECK(fill_matches_plain(r).filled > 0);
  // Issue 15's seahorse (its centre and width, 512^2 instead of 1024^2): every pixel equal.
  r.view = {-0.743643887037151, 0.131825904205330, 1e-5, 512, 512};
  r.max_iter = 20000;
  RenderRequest plain = r;
  plain.fill = false;
  RenderStats fs;
  const Image filled = render_image(r, &fs);
  CHECK(differing_pixels(render_image(plain), filled) == 0);
  CHECK(fs.filled > 5000); // inside its mini-set
}

TEST_CASE("Render.FillMatchesPlainInRowBlocks") {
  // render_rows on row ranges (as the CLI's bands and the executors' splits call it), 20 rows
  // each (narrower than a grid cell: the block's edges are its only level-0 lines).
  RenderRequest r = tile_request({2, 1, 1}, 96, 4096);
  const Image whole = render_image(r);
  r.fill = false;
  const Image plain = render_image(r);
  r.fill = true;
  std::vector<std::uint8_t> parts(whole.rgb.size());
  const std::size_t row = 96 * 3;
  for (int a = 0; a < 96; a += 20) {
    const int b = std::min(96, a + 20);
    render_rows(r, a, b,
                std::span(parts).subspan(static_cast<std::size_t>(a) * row,
                                         static_cast<std::size_t>(b - a) * row));
  }
  CHECK(parts == plain.rgb);
  CHECK(whole.rgb == plain.rgb);
}

TEST_CASE("Render.FillSkipsAnInteriorTile") {
  // Tile 7/76/40 lies entirely inside the period-3 bulb: only its grid lines are computed.
  const RenderStats s = fill_matches_plain(tile_request({7, 76, 40}, 256, 5000));
  const std::uint64_t all = 256ull * 256 * 5000;
  CHECK(s.iterations == all);
  CHECK(s.computed < all / 20); // < 5% of the pixels' iterations
}

TEST_CASE("Render.AaOneIsThePlainRender") {
  RenderRequest r = tile_request({2, 1, 1}, 64, 300);
  RenderStats s;
  const Image a = render_image(r, &s);
  r.aa = 1;
  CHECK(render_image(r).rgb == a.rgb);
  CHECK(s.supersampled == 0);
}

TEST_CASE("Render.AaSmoothsEdgesAndKeepsFlatRegions") {
  RenderRequest r = tile_request({2, 1, 1}, 96, 400);
  const Image plain = render_image(r);
  r.aa = 3;
  RenderStats s;
  const Image smooth = render_image(r, &s);
  REQUIRE(s.supersampled > 0);
  CHECK(s.supersampled < 96u * 96u / 2); // adaptive: not every pixel
  // Pixels whose 3x3 neighbourhood is one flat colour in the plain render keep it; some pixels
  // next to a strong edge change.
  std::size_t flat = 0, flat_changed = 0, edge = 0, edge_changed = 0;
  auto at = [](const Image &im, int x, int y) {
    return im.rgb.data() + (static_cast<std::size_t>(y) * 96 + static_cast<std::size_t>(x)) * 3;
  };
  for (int y = 1; y < 95; ++y)
    for (int x = 1; x < 95; ++x) {
      int spread = 0;
      for (int dy = -1; dy <= 1; ++dy)
        for (int dx = -1; dx <= 1; ++dx)
          for (int ch = 0; ch < 3; ++ch)
            spread =
                std::max(spread, std::abs(at(plain, x + dx, y + dy)[ch] - at(plain, x, y)[ch]));
      const bool changed = !std::equal(at(plain, x, y), at(plain, x, y) + 3, at(smooth, x, y));
      if (spread <= 4) {
        ++flat;
        flat_changed += changed;
      } else if (spread >= 128) {
        ++edge;
        edge_changed += changed;
      }
    }
  CHECK(flat > 1000);
  CHECK(flat_changed == 0);
  REQUIRE(edge > 100);
  CHECK(edge_changed > edge / 2);
}

TEST_CASE("Render.AaDoesNotDependOnRowBlocks") {
  RenderRequest r = tile_request({3, 3, 2}, 64, 500);
  r.aa = 2;
  const Image whole = render_image(r);
  std::vector<std::uint8_t> parts(whole.rgb.size());
  const std::size_t row = 64 * 3;
  for (int a = 0; a < 64; a += 7) {
    const int b = std::min(64, a + 7);
    render_rows(r, a, b,
                std::span(parts).subspan(static_cast<std::size_t>(a) * row,
                                         static_cast<std::size_t>(b - a) * row));
  }
  CHECK(parts == whole.rgb);
}
