// Kernels: every SIMD path and precision against the scalar reference, ISA dispatch, interior
// skipping, row tails and iteration-count edge cases.
#include "common/stb_decode.hpp"
#include "render/render.hpp"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <doctest/doctest.h>
#include <stdexcept>
#include <string>
#include <vector>

using namespace overdrive;

namespace {

struct Counts {
  std::vector<std::uint32_t> iters;
  std::vector<float> mag2;
};

// Counts of a w x h view, row by row through the given kernel (isa empty = the reference).
Counts run_view(const Viewport &v, int max_iter, Precision p, Isa isa, bool reference,
                KernelOptions opt = {}) {
  const auto w = static_cast<std::size_t>(v.pixel_width);
  Counts c{std::vector<std::uint32_t>(w * static_cast<std::size_t>(v.pixel_height)),
           std::vector<float>(w * static_cast<std::size_t>(v.pixel_height))};
  for (int y = 0; y < v.pixel_height; ++y) {
    const RowJob job{v.re_at(0),
                     v.pixel_size(),
                     v.im_at(y),
                     v.pixel_width,
                     max_iter,
                     c.iters.data() + static_cast<std::size_t>(y) * w,
                     c.mag2.data() + static_cast<std::size_t>(y) * w};
    if (reference && p == Precision::F64)
      kernel_reference(job);
    else
      run_kernel(job, p, isa, opt);
  }
  return c;
}

std::size_t mismatches(const Counts &a, const Counts &b) {
  std::size_t n = 0;
  for (std::size_t i = 0; i < a.iters.size(); ++i)
    n += a.iters[i] != b.iters[i];
  return n;
}

// The reference for a precision: kernel_reference for f64, the scalar f32 loop for f32.
Counts reference(const Viewport &v, int max_iter, Precision p) {
  return run_view(v, max_iter, p, Isa::Scalar, true, KernelOptions{false});
}

bool available(Isa isa) {
  if (isa_supported(isa)) return true;
  MESSAGE("CPU lacks " << to_string(isa) << "; skipped");
  return false;
}

const Viewport full_view{-0.5, 0.0, 3.0, 512, 512};
// Outside the set, away from its boundary: no chaotic pixels, counts 2..20.
const Viewport calm_tile{-1.2, 0.75, 0.25, 96, 96};

void matches_reference(Isa isa, Precision p) {
  if (!available(isa)) return;
  for (const bool skip : {false, true}) {
    CAPTURE(skip);
    const Counts ref = reference(full_view, 1000, p);
    const Counts got = run_view(full_view, 1000, p, isa, false, KernelOptions{skip});
    const double frac =
        static_cast<double>(mismatches(ref, got)) / static_cast<double>(ref.iters.size());
    MESSAGE(to_string(isa) << " " << to_string(p) << " skip=" << skip
                           << " full-view mismatch fraction " << frac);
    // f32 rounds 2^29 times more coarsely, so more boundary pixels flip (and deep zooms fail).
    CHECK(frac < (p == Precision::F64 ? 1e-4 : 1e-2));
    const Counts tref = reference(calm_tile, 2000, p);
    const Counts tgot = run_view(calm_tile, 2000, p, isa, false, KernelOptions{skip});
    CHECK(mismatches(tref, tgot) == 0);
    // Smooth colouring needs |z|^2 at escape: same to float rounding where counts agree and
    // the orbit is not chaotic (the calm tile).
    std::size_t bad_mag = 0;
    for (std::size_t i = 0; i < tref.iters.size(); ++i)
      if (tref.iters[i] < 2000u && std::abs(tref.mag2[i] - tgot.mag2[i]) > 1e-3f * tref.mag2[i])
        ++bad_mag;
    CHECK(bad_mag == 0);
  }
}

void odd_rows(Isa isa, Precision p) {
  if (!available(isa)) return;
  for (const int n : {1, 2, 7, 13, 17, 33, 100, 1000}) {
    for (const int max_iter : {1, 2, 3, 9, 25, 300}) {
      CAPTURE(n);
      CAPTURE(max_iter);
      // A row through the set and its boundary, so tails mix fast and slow pixels.
      const Viewport v{-0.75, 0.1, 2.6, n, 1};
      const Counts ref = reference(v, max_iter, p);
      const Counts got = run_view(v, max_iter, p, isa, false);
      const Counts noskip = run_view(v, max_iter, p, isa, false, KernelOptions{false});
      CHECK(mismatches(ref, got) <= static_cast<std::size_t>(n) / 500);
      CHECK(mismatches(ref, noskip) <= static_cast<std::size_t>(n) / 500);
    }
  }
}

void interior_points(Isa isa, Precision p) {
  if (!available(isa)) return;
  // Cardioid, bulb, period-3 bulb (iterated, not skipped) and points that escape late.
  const double pts[][2] = {{0.0, 0.0},   {-1.0, 0.0},   {-0.1226, 0.7449}, {0.2, 0.1},
                           {-0.1, 0.65}, {0.2501, 0.0}, {-0.75, 0.01},     {0.3, 0.5}};
  for (const auto &pt : pts)
    for (const int max_iter : {1, 2, 50, 5000}) {
      CAPTURE(pt[0]);
      CAPTURE(pt[1]);
      CAPTURE(max_iter);
      std::uint32_t a = 0, b = 0;
      float ma = 0, mb = 0;
      const RowJob ja{pt[0], 0.0, pt[1], 1, max_iter, &a, &ma};
      const RowJob jb{pt[0], 0.0, pt[1], 1, max_iter, &b, &mb};
      if (p == Precision::F64)
        kernel_reference(ja);
      else
        run_kernel(ja, p, Isa::Scalar, KernelOptions{false});
      run_kernel(jb, p, isa);
      CHECK(a == b);
    }
}

// run_kernel_rows must give exactly (bitwise, counts and |z|^2) what run_kernel gives row by row,
// whatever the batch: the SIMD kernels' lanes mix pixels of different rows.
void rows_match_rows(Isa isa, Precision p) {
  if (!available(isa)) return;
  struct Case {
    Viewport v;
    int max_iter;
  };
  const Case cases[] = {{{-0.5, 0.0, 3.0, 97, 61}, 300},
                        {{-0.5, 0.0, 3.0, 1, 40}, 50},
                        {{-0.1, 0.0, 0.2, 33, 9}, 200}, // all interior (skipped or iterated)
                        {{-1.2, 0.75, 0.25, 40, 30}, 2000},
                        {{-0.743643887037151, 0.131825904205330, 1e-4, 64, 48}, 3000},
                        {{-0.75, 0.1, 2.6, 17, 23}, 3}};
  for (const Case &c : cases)
    for (const bool skip : {false, true}) {
      CAPTURE(c.v.pixel_width);
      CAPTURE(c.max_iter);
      CAPTURE(skip);
      const Counts want = run_view(c.v, c.max_iter, p, isa, false, KernelOptions{skip});
      for (const int batch : {1, 2, 7, c.v.pixel_height}) {
        CAPTURE(batch);
        const auto w = static_cast<std::size_t>(c.v.pixel_width);
        Counts got{std::vector<std::uint32_t>(want.iters.size(), 0xdeadbeefu),
                   std::vector<float>(want.mag2.size(), -1.0f)};
        for (int y0 = 0; y0 < c.v.pixel_height; y0 += batch) {
          const int rows = std::min(batch, c.v.pixel_height - y0);
          std::vector<double> im(static_cast<std::size_t>(rows));
          for (int r = 0; r < rows; ++r)
            im[static_cast<std::size_t>(r)] = c.v.im_at(y0 + r);
          const std::size_t off = static_cast<std::size_t>(y0) * w;
          run_kernel_rows({c.v.re_at(0), c.v.pixel_size(), im.data(), rows, c.v.pixel_width,
                           c.max_iter, got.iters.data() + off, got.mag2.data() + off},
                          p, isa, KernelOptions{skip});
        }
        CHECK(mismatches(want, got) == 0);
        std::size_t bad_mag = 0;
        for (std::size_t i = 0; i < want.iters.size(); ++i)
          if (want.iters[i] < static_cast<std::uint32_t>(c.max_iter) && want.mag2[i] != got.mag2[i])
            ++bad_mag;
        CHECK(bad_mag == 0);
      }
    }
}

} // namespace

TEST_CASE("Kernel.RowsMatchRowByRow.scalar") {
  rows_match_rows(Isa::Scalar, Precision::F64);
}
TEST_CASE("Kernel.RowsMatchRowByRow.avx2") {
  rows_match_rows(Isa::Avx2, Precision::F64);
}
TEST_CASE("Kernel.RowsMatchRowByRow.avx512") {
  rows_match_rows(Isa::Avx512, Precision::F64);
}
TEST_CASE("Kernel.RowsMatchRowByRow.avx2.f32") {
  rows_match_rows(Isa::Avx2, Precision::F32);
}
TEST_CASE("Kernel.RowsMatchRowByRow.avx512.f32") {
  rows_match_rows(Isa::Avx512, Precision::F32);
}

TEST_CASE("Kernel.MatchesReference.scalar") {
  matches_reference(Isa::Scalar, Precision::F64);
}
TEST_CASE("Kernel.MatchesReference.avx2") {
  matches_reference(Isa::Avx2, Precision::F64);
}
TEST_CASE("Kernel.MatchesReference.avx512") {
  matches_reference(Isa::Avx512, Precision::F64);
}
TEST_CASE("Kernel.MatchesReference.avx2.f32") {
  matches_reference(Isa::Avx2, Precision::F32);
}
TEST_CASE("Kernel.MatchesReference.avx512.f32") {
  matches_reference(Isa::Avx512, Precision::F32);
}

TEST_CASE("Kernel.OddRowLengths.scalar") {
  odd_rows(Isa::Scalar, Precision::F64);
}
TEST_CASE("Kernel.OddRowLengths.avx2") {
  odd_rows(Isa::Avx2, Precision::F64);
}
TEST_CASE("Kernel.OddRowLengths.avx512") {
  odd_rows(Isa::Avx512, Precision::F64);
}
TEST_CASE("Kernel.OddRowLengths.avx2.f32") {
  odd_rows(Isa::Avx2, Precision::F32);
}
TEST_CASE("Kernel.OddRowLengths.avx512.f32") {
  odd_rows(Isa::Avx512, Precision::F32);
}

TEST_CASE("Kernel.InteriorAndEdgePoints.scalar") {
  interior_points(Isa::Scalar, Precision::F64);
}
TEST_CASE("Kernel.InteriorAndEdgePoints.avx2") {
  interior_points(Isa::Avx2, Precision::F64);
}
TEST_CASE("Kernel.InteriorAndEdgePoints.avx512") {
  interior_points(Isa::Avx512, Precision::F64);
}
TEST_CASE("Kernel.InteriorAndEdgePoints.avx512.f32") {
  interior_points(Isa::Avx512, Precision::F32);
}

TEST_CASE("Kernel.SkippingInteriorKeepsReferenceCounts") {
  // The scalar path with skipping is the reference loop plus a test that only answers points
  // that never escape, so counts must be identical, not just close.
  const Counts ref = reference(full_view, 300, Precision::F64);
  const Counts got = run_view(full_view, 300, Precision::F64, Isa::Scalar, false);
  CHECK(mismatches(ref, got) == 0);
}

TEST_CASE("Kernel.DispatchIsConsistent") {
  CHECK(isa_supported(Isa::Auto));
  CHECK(isa_supported(Isa::Scalar));
  CHECK(isa_supported(best_isa()));
  if (isa_supported(Isa::Avx512)) CHECK(isa_supported(Isa::Avx2));
  const char *env = std::getenv("OVERDRIVE_ISA");
  if (!env) {
    const Isa expect = isa_supported(Isa::Avx512) ? Isa::Avx512
                       : isa_supported(Isa::Avx2) ? Isa::Avx2
                                                  : Isa::Scalar;
    CHECK(best_isa() == expect);
  } else if (const auto forced = parse_isa(env);
             forced && isa_supported(*forced) && *forced != Isa::Auto) {
    CHECK(best_isa() == *forced);
  }
  // Asking for an ISA the CPU lacks still renders (falls back), here checked on one point.
  for (const Isa isa : {Isa::Auto, Isa::Scalar, Isa::Avx2, Isa::Avx512}) {
    std::uint32_t n = 0;
    float m = 0;
    run_kernel({1.0, 0.0, 0.0, 1, 100, &n, &m}, Precision::F64, isa);
    CHECK(n == 3u);
  }
}

namespace {
// CRC-32 of PNG (ISO 3309), bit by bit: an independent check of the encoder's chunk CRCs.
std::uint32_t crc32_bitwise(const std::uint8_t *p, std::size_t n) {
  std::uint32_t c = 0xffffffffu;
  for (std::size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int b = 0; b < 8; ++b)
      c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
  }
  return ~c;
}
// Every chunk after the signature: length, type, data, CRC over type and data.
bool chunk_crcs_valid(const std::vector<std::uint8_t> &png) {
  const auto be32 = [&](std::size_t at) {
    return std::uint32_t{png[at]} << 24 | std::uint32_t{png[at + 1]} << 16 |
           std::uint32_t{png[at + 2]} << 8 | std::uint32_t{png[at + 3]};
  };
  std::size_t at = 8, chunks = 0;
  while (at + 12 <= png.size()) {
    const std::size_t len = be32(at);
    if (at + 12 + len > png.size()) return false;
    if (crc32_bitwise(png.data() + at + 4, len + 4) != be32(at + 8 + len)) return false;
    at += 12 + len;
    ++chunks;
  }
  return at == png.size() && chunks >= 3;
}
} // namespace

TEST_CASE("Png.EncoderSettingsRoundTripAndStaySmall") {
  using D = detail::PngSettings::Deflate;
  RenderRequest r;
  r.view = {-0.5, 0.0, 3.0, 256, 256};
  r.max_iter = 256;
  const Image img = render_image(r);
  const auto stb = detail::encode_png_with(img.rgb, 256, 256, {D::Stb, 0, -1});
  const auto ours = encode_png(img);
  CHECK(test::decode_png(stb).pixels == img.rgb);
  CHECK(test::decode_png(ours).pixels == img.rgb);
  CHECK(chunk_crcs_valid(stb));
  CHECK(chunk_crcs_valid(ours));
  // The production encoder may be at most 10% larger than stb as shipped.
  CHECK(static_cast<double>(ours.size()) <= 1.1 * static_cast<double>(stb.size()));
  for (const D d : {D::Isal, D::Libdeflate})
    for (const int level : {0, 1, 3, 12})
      for (const int filter : {-1, 0, 1, 2, 3, 4}) {
        if (d == D::Isal && level > 3) continue;
        CAPTURE(static_cast<int>(d));
        CAPTURE(level);
        CAPTURE(filter);
        const auto png = detail::encode_png_with(img.rgb, 256, 256, {d, level, filter});
        CHECK(test::decode_png(png).pixels == img.rgb);
        CHECK(chunk_crcs_valid(png));
      }
  // The experiment restores the production settings.
  CHECK(encode_png(img) == ours);
  CHECK_THROWS_AS(detail::encode_png_with(img.rgb, 256, 256, {D::Libdeflate, 13, 0}),
                  std::invalid_argument);
  CHECK_THROWS_AS(detail::encode_png_with(img.rgb, 256, 256, {D::Isal, 4, 0}),
                  std::invalid_argument);
}
