// Number formats around the kernels (issue 16): names and their grammar, deep tile indices, exact
// pixel centres rounded once, the CLI's tiles equal the library's, the reference format by depth,
// and disagreement with it (f64 agrees shallow and fails deep, where dd still agrees with mp).
#include "common/run_binary.hpp"
#include "common/stb_decode.hpp"
#include "render/render.hpp"

#include <algorithm>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <mpfr.h>
#include <string>
#include <unistd.h>
#include <vector>

using namespace overdrive;

namespace {

/// A view of size x size pixels around the Misiurewicz point c = i: its neighbourhood has
/// structure at every depth with modest escape counts, and c = i itself is in the set, so a
/// format that cannot tell pixels apart sees the whole view as that one interior point.
RenderRequest around_i(const char *width, int size, Precision p, int iter = 1000) {
  RenderRequest req;
  req.view = {0.0, 1.0, std::stod(width), size, size};
  req.exact = {"0", "1", width};
  req.max_iter = iter;
  req.precision = p;
  return req;
}

std::vector<std::uint32_t> counts(const RenderRequest &req) {
  const auto n = static_cast<std::size_t>(req.view.pixel_width) *
                 static_cast<std::size_t>(req.view.pixel_height);
  std::vector<std::uint32_t> iters(n);
  std::vector<float> mag2(n);
  render_counts(req, 0, req.view.pixel_height, iters, mag2);
  return iters;
}

double disagreement_with_reference(const RenderRequest &req) {
  RenderRequest ref = req;
  ref.precision = reference_precision(req);
  return disagreement(counts(req), counts(ref));
}

/// An MPFR value for exact comparisons.
struct Mp {
  explicit Mp(const std::string &s, mpfr_prec_t bits = 512) {
    mpfr_init2(v, bits);
    REQUIRE(mpfr_set_str(v, s.c_str(), 0, MPFR_RNDN) == 0);
  }
  ~Mp() { mpfr_clear(v); }
  mpfr_t v;
};

std::filesystem::path temp_png(const char *name) {
  return std::filesystem::temp_directory_path() /
         (std::string("overdrive_prec_") + std::to_string(::getpid()) + "_" + name);
}

std::vector<std::uint8_t> read_file(const std::filesystem::path &p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

} // namespace

TEST_CASE("Precision.NamesParseAndPrintBack") {
  for (const std::string &name : all_precision_names()) {
    CAPTURE(name);
    const auto p = parse_precision(name);
    REQUIRE(p);
    CHECK(to_string(*p) == name);
    CHECK(precision_error(name).empty());
  }
  CHECK(parse_precision("f64") == Precision::F64);
  CHECK(RenderRequest{}.precision == Precision::F64);
  CHECK(parse_precision("masked:4.50") == Precision::masked(4, 50));
  CHECK(parse_precision("fixed:20.12") == Precision::fixed(20, 12));
  CHECK(parse_precision("posit16") == Precision::posit(16));
  CHECK(parse_precision("mp:256") == Precision::mp(256));
  CHECK(parse_precision("auto") == Precision::Auto);
  CHECK(Precision::F64.native());
  CHECK_FALSE(Precision::DD.native());
  // The menus offer the study's formats.
  const auto names = all_precision_names();
  for (const char *n : {"f64", "f32", "dd", "posit8", "posit16", "posit32", "masked:4.50",
                        "fixed:11.5", "fixed:20.12", "fixed:22.10", "auto"})
    CHECK_MESSAGE(std::find(names.begin(), names.end(), std::string(n)) != names.end(), n);
  CHECK(precision_forms().size() == 11);
}

TEST_CASE("Precision.MalformedNamesAreRejectedListingTheValidForms") {
  for (const char *bad : {"masked:0.99",  "fixed:3.3",   "posit7",     "",
                          "F64",          "f16",         "masked:4",   "masked:4.050",
                          "masked:12.10", "masked:4.53", "fixed:0.16", "fixed:8.8.8",
                          "fixed:-8.24",  "posit",       "posit08",    "mp:",
                          "mp:7",         "mp:100000",   "dd ",        "auto,f64"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_precision(bad));
    const std::string why = precision_error(bad);
    CHECK(why.find("masked:E.M (E 2..11, M 1..52)") != std::string::npos);
    CHECK(why.find("fixed:I.F") != std::string::npos);
    CHECK(why.find("posit8") != std::string::npos);
    CHECK(why.find("mp:BITS") != std::string::npos);
    CHECK(why.find('\n') == std::string::npos);
  }
}

TEST_CASE("Precision.DeepTileIndicesParseExactly") {
  // 2^100 - 1 and 2^120 - 1: beyond 64 bits.
  const std::string max100 = "1267650600228229401496703205375";
  const auto x = parse_tile_index(max100);
  REQUIRE(x);
  CHECK(*x == (TileIndex{1} << 100) - 1);
  CHECK(to_string(*x) == max100);
  CHECK(tile_is_valid({100, *x, *x}));
  CHECK_FALSE(tile_is_valid({100, *x + 1, 0}));
  CHECK(tile_is_valid({Limits::max_deep_zoom, (TileIndex{1} << 120) - 1, 0}));
  CHECK_FALSE(tile_is_valid({Limits::max_deep_zoom + 1, 0, 0}));
  CHECK(Limits::max_deep_zoom >= 100);
  for (const char *bad :
       {"", "-1", "+1", "01", "1e3", "12a", "1 ", "99999999999999999999999999999999999999999"}) {
    CAPTURE(bad);
    CHECK_FALSE(parse_tile_index(bad));
  }
  CHECK(parse_tile_index("0") == TileIndex{0});
  // int64 callers keep compiling and meaning the same tile.
  const std::int64_t ix = 5, iy = 2;
  CHECK(tile_viewport(TileId{3, ix, iy}, 256) == tile_viewport(TileId{3, 5, 2}, 256));

  // The exact view of a deep tile: centre (-5 * 2^z + 4 (2x + 1)) / 2^(z+1), width 4 / 2^z.
  const TileId t{100, *x, 12345};
  const ExactView e = tile_exact_view(t);
  Mp re(e.center_re), im(e.center_im), w(e.width);
  Mp want_w("0x4p-100");
  CHECK(mpfr_equal_p(w.v, want_w.v));
  // re = 1.5 - 2^-100 * 2 (the last column's centre is half a tile width from 1.5).
  Mp want_re("1.5"), half(e.width);
  mpfr_div_2ui(half.v, half.v, 1, MPFR_RNDN);
  mpfr_sub(want_re.v, want_re.v, half.v, MPFR_RNDN);
  CHECK(mpfr_equal_p(re.v, want_re.v));
  // im = 2 - (12345 + 0.5) * 4 / 2^100.
  Mp want_im("2"), step("0x4p-100");
  mpfr_mul_d(step.v, step.v, 12345.5, MPFR_RNDN);
  mpfr_sub(want_im.v, want_im.v, step.v, MPFR_RNDN);
  CHECK(mpfr_equal_p(im.v, want_im.v));
  // Shallow tiles: the exact view and the doubles agree.
  const ExactView s = tile_exact_view({3, 5, 2});
  const Viewport v = tile_viewport({3, 5, 2}, 256);
  CHECK(std::stod(s.center_re) == v.center_re);
}

TEST_CASE("Precision.PixelCentresAreExactAndRoundedOnce") {
  // A zoom-50 tile at the tip c = -2 (its corner), just above the real axis, in f64: half its
  // centres -2 + (k + 1/2) 2^-52 lie halfway between doubles. Each is computed exactly, then
  // rounded once (ties to even), so the counts equal those of the scalar kernel on exactly those
  // doubles, pixel by pixel; re0 + k * step in doubles would round differently.
  const TileId t{50, TileIndex{1} << 47, (TileIndex{1} << 49) - 1};
  const int size = 16;
  RenderRequest req;
  req.view = tile_viewport(t, size);
  req.exact = tile_exact_view(t);
  req.max_iter = 200;
  req.isa = Isa::Scalar;
  const auto got = counts(req);
  Mp re0(req.exact.center_re), im0(req.exact.center_im), step(req.exact.width), x("0"), y("0");
  mpfr_div_ui(step.v, step.v, size, MPFR_RNDN); // exact: 4 / 2^70 / 16
  for (int py = 0; py < size; ++py)
    for (int px = 0; px < size; ++px) {
      // x = re + (px - size/2 + 0.5) * step, y = im - (py - size/2 + 0.5) * step: exact at 512
      // bits.
      mpfr_mul_d(x.v, step.v, px - size / 2 + 0.5, MPFR_RNDN);
      mpfr_add(x.v, x.v, re0.v, MPFR_RNDN);
      mpfr_mul_d(y.v, step.v, py - size / 2 + 0.5, MPFR_RNDN);
      mpfr_sub(y.v, im0.v, y.v, MPFR_RNDN);
      std::uint32_t n = 0;
      float m = 0;
      kernel_reference(
          {mpfr_get_d(x.v, MPFR_RNDN), 0.0, mpfr_get_d(y.v, MPFR_RNDN), 1, 200, &n, &m});
      CHECK(got[static_cast<std::size_t>(py * size + px)] == n);
    }
  CHECK(std::count(got.begin(), got.end(), got.front()) < static_cast<std::ptrdiff_t>(got.size()));
}

TEST_CASE("Precision.ReferenceAndAutoFollowDepth") {
  RenderRequest full;
  full.view = {-0.5, 0.0, 3.0, 256, 256};
  CHECK(reference_precision(full) == Precision::DD);
  CHECK(auto_precision(full) == Precision::F64);
  CHECK(resolve_precision(full) == Precision::F64);
  // 2^-66 per pixel: f64 is out of bits, dd resolves with margin and is the reference.
  const RenderRequest deep = around_i("1e-18", 32, Precision::Auto);
  CHECK(view_bits(deep) > 60);
  CHECK(auto_precision(deep) == Precision::DD);
  CHECK(reference_precision(deep) == Precision::DD);
  // 2^-100 per pixel: mp, with at least 32 bits to spare.
  const RenderRequest deeper = around_i("1e-29", 32, Precision::Auto);
  const Precision r = reference_precision(deeper);
  CHECK(r.kind() == Precision::Kind::MP);
  CHECK(precision_bits(r) >= view_bits(deeper) + 32);
  CHECK(precision_bits(auto_precision(deeper)) >= view_bits(deeper));
  // Tiles: a zoom-40 tile of 256 pixels is still f64's.
  RenderRequest tile;
  tile.view = tile_viewport({40, 12345, 67890}, 256);
  tile.exact = tile_exact_view({40, 12345, 67890});
  CHECK(auto_precision(tile) == Precision::F64);
  tile.view = tile_viewport({60, 12345, 67890}, 256);
  tile.exact = tile_exact_view({60, 12345, 67890});
  CHECK(auto_precision(tile) == Precision::DD);
}

TEST_CASE("Precision.DisagreementF64ShallowAndDeepDdDeep" * doctest::timeout(120)) {
  // Shallow: f64 agrees with its reference but for a few chaotic boundary pixels.
  RenderRequest full;
  full.view = {-0.5, 0.0, 3.0, 64, 64};
  full.max_iter = 300;
  CHECK(disagreement_with_reference(full) < 0.01);
  // 1e-18 wide around i (2^-65 per pixel): f64 sees one point, the reference a spiral.
  const RenderRequest f64_deep = around_i("1e-18", 32, Precision::F64);
  CHECK(disagreement_with_reference(f64_deep) > 0.5);
  const RenderRequest dd_deep = around_i("1e-18", 32, Precision::DD);
  CHECK(disagreement_with_reference(dd_deep) < 0.01);
  // And against mp outright, deeper still (2^-86 per pixel, 20 bits to spare in dd).
  RenderRequest dd = around_i("1e-24", 32, Precision::DD);
  RenderRequest mp = dd;
  mp.precision = Precision::mp(256);
  const auto mp_counts = counts(mp);
  CHECK(disagreement(counts(dd), mp_counts) < 0.01);
  RenderRequest f64 = dd;
  f64.precision = Precision::F64;
  CHECK(disagreement(counts(f64), mp_counts) > 0.5);
  // The reference has structure there (not one count everywhere): the test can fail.
  CHECK(std::count(mp_counts.begin(), mp_counts.end(), mp_counts.front()) <
        static_cast<std::ptrdiff_t>(mp_counts.size()) / 2);
  CHECK(disagreement(mp_counts, mp_counts) == 0.0);
}

TEST_CASE("Precision.CliTileEqualsTheLibrarysPixels" * doctest::timeout(120)) {
  // The server renders a tile with render_rows on exactly this request; the CLI must agree.
  for (const char *fmt : {"masked:4.20", "dd", "f64"}) {
    CAPTURE(fmt);
    const TileId t{50, (TileIndex{1} << 48) + 99, (TileIndex{1} << 47) + 5};
    RenderRequest req;
    req.view = tile_viewport(t, 32);
    req.exact = tile_exact_view(t);
    req.max_iter = 200;
    req.precision = *parse_precision(fmt);
    const Image img = render_image(req);
    const auto out = temp_png("tile.png");
    const overdrive::test::Run r = overdrive::test::run_overdrive(
        "render --tile 50/" + to_string(t.x) + "/" + to_string(t.y) +
        " --size 32 --iter 200 --precision " + fmt + " --out " + out.string());
    REQUIRE(r.status == 0);
    const auto d = overdrive::test::decode_png(read_file(out));
    CHECK(d.width == 32);
    CHECK(d.pixels == img.rgb);
    std::filesystem::remove(out);
  }
}
