// Posters bigger than memory: the streaming PNG encoder (bands deflated on their own, joined in
// order) and `overdrive render` streaming through it, alone and under mpirun.
#include "common/run_binary.hpp"
#include "common/stb_decode.hpp"
#include "render/render.hpp"

#include <array>
#include <cstdio>
#include <cstdlib>
#include <doctest/doctest.h>
#include <filesystem>
#include <fstream>
#include <future>
#include <iterator>
#include <stdexcept>
#include <string>
#include <sys/wait.h>
#include <unistd.h>

using namespace overdrive;
using overdrive::test::Run;
using overdrive::test::run_overdrive;

namespace {

// Independent of the encoder: bitwise CRC-32 (PNG's) and a plain Adler-32 loop.
std::uint32_t crc32_plain(const std::uint8_t *p, std::size_t n) {
  std::uint32_t c = 0xffffffffu;
  for (std::size_t i = 0; i < n; ++i) {
    c ^= p[i];
    for (int k = 0; k < 8; ++k)
      c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1u)));
  }
  return ~c;
}

std::uint32_t adler32_plain(const std::uint8_t *p, std::size_t n) {
  std::uint32_t a = 1, b = 0;
  for (std::size_t i = 0; i < n; ++i) {
    a = (a + p[i]) % 65521;
    b = (b + a) % 65521;
  }
  return (b << 16) | a;
}

std::uint32_t be32(const std::uint8_t *p) {
  return std::uint32_t{p[0]} << 24 | std::uint32_t{p[1]} << 16 | std::uint32_t{p[2]} << 8 | p[3];
}

// What a strict decoder checks that stb_image does not: the signature, every chunk's CRC, the
// chunk order, and the zlib stream's Adler-32 over the inflated bytes. Returns the IDAT count.
int check_png_structure(const std::vector<std::uint8_t> &png) {
  static constexpr std::uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  REQUIRE(png.size() > 8);
  REQUIRE(std::equal(std::begin(sig), std::end(sig), png.begin()));
  std::vector<std::uint8_t> zlib;
  int idat = 0;
  std::size_t at = 8;
  std::string order;
  while (at < png.size()) {
    REQUIRE(at + 12 <= png.size());
    const std::uint32_t len = be32(&png[at]);
    REQUIRE(at + 12 + len <= png.size());
    const std::string type(reinterpret_cast<const char *>(&png[at + 4]), 4);
    CHECK_MESSAGE(be32(&png[at + 8 + len]) == crc32_plain(&png[at + 4], len + 4), type);
    if (type == "IDAT") {
      ++idat;
      zlib.insert(zlib.end(), png.begin() + static_cast<std::ptrdiff_t>(at + 8),
                  png.begin() + static_cast<std::ptrdiff_t>(at + 8 + len));
    }
    if (order.empty() || order.back() != type[1]) order += type[1]; // H(IHDR) D(IDAT) E(IEND)
    at += 12 + len;
  }
  CHECK(at == png.size());
  CHECK(order == "HDE");
  REQUIRE(zlib.size() > 6);
  CHECK((zlib[0] * 256 + zlib[1]) % 31 == 0);
  int n = 0;
  char *raw = stbi_zlib_decode_malloc(reinterpret_cast<const char *>(zlib.data()),
                                      static_cast<int>(zlib.size()), &n);
  REQUIRE(raw != nullptr);
  CHECK(adler32_plain(reinterpret_cast<const std::uint8_t *>(raw), static_cast<std::size_t>(n)) ==
        be32(&zlib[zlib.size() - 4]));
  std::free(raw);
  return idat;
}

Image render_view(int w, int h, int iter) {
  RenderRequest r;
  r.view = {-0.5, 0.0, 3.0, w, h};
  r.max_iter = iter;
  return render_image(r);
}

std::filesystem::path temp_file(const std::string &name) {
  return std::filesystem::temp_directory_path() /
         ("overdrive_poster_" + std::to_string(::getpid()) + "_" + name);
}

std::vector<std::uint8_t> read_file(const std::filesystem::path &p) {
  std::ifstream f(p, std::ios::binary);
  return {std::istreambuf_iterator<char>(f), {}};
}

} // namespace

TEST_CASE("Png.StreamDecodesToTheSamePixels") {
  // Odd sizes; bands of one row, a few rows, the production size, and all rows at once.
  for (const auto &[w, h] :
       {std::pair{203, 151}, std::pair{1, 1}, std::pair{17, 300}, std::pair{2048, 40}}) {
    const Image img = render_view(w, h, 200);
    const auto reference = test::decode_png(encode_png(img));
    REQUIRE(reference.pixels == img.rgb);
    for (const int band : {1, 7, png_band_rows(w, h), h, h + 5}) {
      CAPTURE(w);
      CAPTURE(h);
      CAPTURE(band);
      const auto png = encode_png_streamed(img.rgb, w, h, band);
      const auto d = test::decode_png(png);
      CHECK(d.width == w);
      CHECK(d.height == h);
      CHECK(d.pixels == img.rgb);
      // One IDAT per band plus the checksum's.
      CHECK(check_png_structure(png) == (h + std::min(band, h) - 1) / std::min(band, h) + 1);
    }
  }
}

TEST_CASE("Png.StreamJoinsManyBlocksAndChecksums") {
  // 600 one-row bands of 2000 px (6001 filtered bytes each, so the Adler-32 sums wrap modulo
  // 65521 inside every tenth band and the joined checksum must carry it).
  const Image img = render_view(2000, 600, 100);
  const auto png = encode_png_streamed(img.rgb, 2000, 600, 1);
  CHECK(check_png_structure(png) == 601);
  CHECK(test::decode_png(png).pixels == img.rgb);
}

TEST_CASE("Png.StreamBandsEncodeInParallelToTheSameBytes") {
  // Bands encoded concurrently on other threads, appended in order, give the bytes of a serial
  // stream: the blocks are independent.
  const int w = 301, h = 97, rows = 8;
  const Image img = render_view(w, h, 300);
  const std::size_t row = 3 * static_cast<std::size_t>(w);
  std::vector<std::future<PngBand>> bands;
  for (int r = 0; r < h; r += rows) {
    const int n = std::min(rows, h - r);
    bands.push_back(std::async(std::launch::async, [&img, r, n, row, w, h] {
      return encode_png_band(std::span(img.rgb).subspan(static_cast<std::size_t>(r) * row,
                                                        static_cast<std::size_t>(n) * row),
                             w, r + n == h);
    }));
  }
  std::vector<std::uint8_t> out;
  PngStream png(
      w, h, [&out](std::span<const std::uint8_t> b) { out.insert(out.end(), b.begin(), b.end()); });
  for (auto &b : bands)
    png.append(b.get());
  png.finish();
  CHECK(png.bytes_written() == out.size());
  CHECK(out == encode_png_streamed(img.rgb, w, h, rows));
}

TEST_CASE("Png.StreamEndsWithAnEmptyFinalBlockWhenNoBandWasFinal") {
  const int w = 64, h = 30;
  const Image img = render_view(w, h, 100);
  std::vector<std::uint8_t> out;
  PngStream png(
      w, h, [&out](std::span<const std::uint8_t> b) { out.insert(out.end(), b.begin(), b.end()); });
  const std::size_t row = 3 * static_cast<std::size_t>(w);
  for (int r = 0; r < h; r += 10)
    png.append(encode_png_band(
        std::span(img.rgb).subspan(static_cast<std::size_t>(r) * row, 10 * row), w, false));
  png.finish();
  check_png_structure(out);
  CHECK(test::decode_png(out).pixels == img.rgb);
}

TEST_CASE("Png.StreamRejectsMisuse") {
  const int w = 8, h = 4;
  const std::vector<std::uint8_t> rgb(static_cast<std::size_t>(w) * h * 3, 7);
  auto sink = [](std::span<const std::uint8_t>) {};
  CHECK_THROWS_AS(PngStream(0, 4, sink), std::invalid_argument);
  CHECK_THROWS_AS(encode_png_band(std::span(rgb).first(5), w, false), std::invalid_argument);
  CHECK_THROWS_AS(encode_png_streamed(rgb, w, h + 1, 2), std::invalid_argument);
  {
    PngStream png(w, h, sink);
    png.append_rows(std::span(rgb).first(2 * 3 * w));
    CHECK_THROWS_AS(png.finish(), std::logic_error); // two rows missing
    CHECK_THROWS_AS(png.append(encode_png_band(rgb, w, true)), std::logic_error); // 4 > 2 left
    CHECK_THROWS_AS(png.append(encode_png_band(std::span(rgb).first(3 * w), w, true)),
                    std::logic_error); // final, but not the last row
    CHECK_THROWS_AS(png.append(encode_png_band(std::span(rgb).first(2 * 3 * 2), 2, false)),
                    std::logic_error); // another width
    png.append_rows(std::span(rgb).first(2 * 3 * w));
    CHECK_THROWS_AS(png.append(encode_png_band(std::span(rgb).first(3 * w), w, false)),
                    std::logic_error); // beyond the height
    png.finish();
  }
}

TEST_CASE("Cli.PosterMatchesTheInMemoryRender" * doctest::timeout(120)) {
  // The streamed file decodes to render_image's pixels, and every executor (and tbb --split)
  // writes the same bytes.
  const Image img = render_view(333, 97, 200);
  std::vector<std::uint8_t> first;
  for (const char *ex : {"pool --workers 2", "inline", "tbb --workers 2 --split"}) {
    CAPTURE(ex);
    const auto out = temp_file("match.png");
    const Run r = run_overdrive(std::string("render --size 333x97 --iter 200 --executor ") + ex +
                                " --out " + out.string());
    CHECK(r.status == 0);
    const auto png = read_file(out);
    std::filesystem::remove(out);
    check_png_structure(png);
    CHECK(test::decode_png(png).pixels == img.rgb);
    if (first.empty()) first = png;
    CHECK(png == first);
  }
}

TEST_CASE("Cli.PosterSizeCapsAreClearErrors" * doctest::timeout(120)) {
  const auto out = temp_file("cap.png");
  std::filesystem::remove(out);
  // Beyond the pixel-count guard (each side within the side cap): one line, nothing written.
  Run r = run_overdrive("render --size 131072x65536 --out " + out.string());
  CHECK(r.status != 0);
  CHECK_FALSE(r.sanitizer_report());
  CHECK(r.output.find("--size 131072x65536 is 8589934592 pixels, more than the cap of "
                      "4294967296") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(out));
  r = run_overdrive("render --size 131073x1 --out " + out.string());
  CHECK(r.status != 0);
  CHECK(r.output.find("out of range (1 to 131072 pixels per side)") != std::string::npos);
  CHECK_FALSE(std::filesystem::exists(out));
  // The side cap itself renders: one row 131072 pixels wide.
  r = run_overdrive("render --size 131072x1 --iter 1 --out " + out.string());
  CHECK(r.status == 0);
  const auto d = test::decode_png(read_file(out));
  CHECK(d.width == 131072);
  CHECK(d.height == 1);
  std::filesystem::remove(out);
}

TEST_CASE("Cli.PosterMpiRanksWriteTheSameBytes" * doctest::timeout(300)) {
  // mpirun comes with Debian's openmpi-bin; a missing launcher fails (never skips) this test.
  const bool have_mpirun = std::system("command -v mpirun >/dev/null 2>&1") == 0;
  REQUIRE_MESSAGE(have_mpirun, "mpirun not found: apt-get install openmpi-bin libopenmpi-dev");
  const std::string args = "render --size 257x190 --iter 300 --workers 1 --out ";
  const auto one = temp_file("one.png");
  REQUIRE(run_overdrive(args + one.string()).status == 0);
  const auto expected = read_file(one);
  std::filesystem::remove(one);
  REQUIRE(!expected.empty());
  for (const int ranks : {2, 3}) {
    CAPTURE(ranks);
    const auto out = temp_file("ranks.png");
    // Open MPI refuses root without these; --oversubscribe: more ranks than this CI's cores.
    // timeout bounds the run; mpirun stops its ranks when it is terminated. Open MPI's own
    // allocations are not LeakSanitizer-clean: the ranks (which inherit mpirun's environment) run
    // without leak detection, ASan's other checks stay on.
    const std::string cmd =
        "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 ASAN_OPTIONS=detect_leaks=0 "
        "timeout -k 10 120 mpirun -n " +
        std::to_string(ranks) + " --oversubscribe " + test::shell_quote(OVERDRIVE_BIN_PATH) + " " +
        args + out.string() + " --stats 2>&1";
    std::string output;
    FILE *p = popen(cmd.c_str(), "r");
    REQUIRE(p != nullptr);
    char buf[4096];
    std::size_t n;
    while ((n = fread(buf, 1, sizeof buf, p)) > 0)
      output.append(buf, n);
    const int st = pclose(p);
    CAPTURE(output);
    CHECK((WIFEXITED(st) && WEXITSTATUS(st) == 0));
    CHECK(output.find("\"ranks\":" + std::to_string(ranks)) != std::string::npos);
    const auto got = read_file(out);
    CHECK(got.size() == expected.size());
    CHECK(got == expected);
    std::filesystem::remove(out);
  }
}
