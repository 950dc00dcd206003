// Streaming PNG: bands of rows filtered and deflated independently (any thread, any process),
// then written in row order as IDAT chunks. The layout is pigz's: every band but the last is a
// raw deflate segment that ends with a full flush (byte-aligned, no back-references across it),
// so the segments concatenate into one zlib stream; the zlib checksum is the Adler-32s of the
// bands joined with adler32_combine's arithmetic. ISA-L igzip deflates (level 0, filter "none";
// see kLevel for why not encode_png's level 1) and computes the Adler-32 and the chunk CRC-32s.
#include "render/render.hpp"

#include <algorithm>
#include <array>
#include <cassert>
#include <isa-l/crc.h>
#include <isa-l/igzip_lib.h>
#include <limits>
#include <memory>
#include <stdexcept>

namespace overdrive {
namespace {

// igzip level 0, not encode_png's level 1: at level 1 the same band, encoded by two workers of one
// process at once, now and then came out a byte or two different (valid, same pixels; cause not
// found: not the buffers' contents or alignment, not the history of the thread), which breaks
// "identical bytes whatever the workers or ranks". Level 0 never did in the same stress runs
// (bench/README.md, "Posters"); it is also faster, for ~20% more bytes.
constexpr int kLevel = 0;
constexpr std::size_t kBandTarget = 256 * 1024;         // filtered bytes per band, about
constexpr std::size_t kMaxChunk = std::size_t{1} << 30; // PNG allows 2^31 - 1 per chunk
constexpr std::uint32_t kAdlerBase = 65521;

std::size_t filtered_row_bytes(int width) {
  return 1 + 3 * static_cast<std::size_t>(width);
}

// zlib's adler32_combine: the Adler-32 of A followed by B from those of A and B and B's length.
std::uint32_t adler32_combine(std::uint32_t a, std::uint32_t b, std::uint64_t len_b) {
  const auto rem = static_cast<std::uint32_t>(len_b % kAdlerBase);
  std::uint64_t sum1 = a & 0xffff;
  std::uint64_t sum2 = (rem * sum1) % kAdlerBase;
  sum1 += (b & 0xffff) + kAdlerBase - 1;
  sum2 += (a >> 16) + (b >> 16) + kAdlerBase - rem;
  if (sum1 >= kAdlerBase) sum1 -= kAdlerBase;
  if (sum1 >= kAdlerBase) sum1 -= kAdlerBase;
  if (sum2 >= std::uint64_t{2} * kAdlerBase) sum2 -= std::uint64_t{2} * kAdlerBase;
  if (sum2 >= kAdlerBase) sum2 -= kAdlerBase;
  return static_cast<std::uint32_t>(sum1 | (sum2 << 16));
}

void put_be32(std::uint8_t *p, std::uint32_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 24);
  p[1] = static_cast<std::uint8_t>(v >> 16);
  p[2] = static_cast<std::uint8_t>(v >> 8);
  p[3] = static_cast<std::uint8_t>(v);
}

std::uint32_t crc(std::uint32_t c, std::span<const std::uint8_t> d) {
  return d.empty() ? c : crc32_gzip_refl(c, d.data(), d.size());
}

} // namespace

int png_band_rows(int width, int height) noexcept {
  const auto by_bytes = std::max<std::size_t>(1, kBandTarget / filtered_row_bytes(width));
  const auto by_count = static_cast<std::size_t>(std::max(1, height / 64));
  return static_cast<int>(std::min(by_bytes, by_count));
}

PngBand encode_png_band(std::span<const std::uint8_t> rgb, int width, bool last) {
  const std::size_t row = 3 * static_cast<std::size_t>(width);
  if (width <= 0 || rgb.empty() || rgb.size() % row != 0)
    throw std::invalid_argument("encode_png_band: not whole rows of 3 x width bytes");
  const std::size_t rows = rgb.size() / row;
  if (rows > static_cast<std::size_t>(std::numeric_limits<int>::max()) ||
      rows * filtered_row_bytes(width) > std::numeric_limits<std::uint32_t>::max() / 2)
    throw std::invalid_argument("encode_png_band: band too large");

  // Per-thread buffers, reused band after band.
  thread_local std::vector<std::uint8_t> filtered;
  const std::size_t n = rows * filtered_row_bytes(width);
  filtered.resize(n);
  for (std::size_t r = 0; r < rows; ++r) {
    std::uint8_t *dst = filtered.data() + r * (row + 1);
    dst[0] = 0; // filter type none
    std::copy_n(rgb.data() + r * row, row, dst + 1);
  }

  PngBand band;
  band.rows = static_cast<int>(rows);
  band.last = last;
  band.filtered_bytes = n;
  band.adler = isal_adler32(1, filtered.data(), n);
  // Worst case: stored blocks, 5 bytes per 64 KiB, plus block headers and the flush marker. The
  // segment is compressed into a per-thread buffer and copied out at its (much smaller) size.
  thread_local std::vector<std::uint8_t> compressed;
  compressed.resize(n + 5 * (n / 65535 + 1) + ISAL_DEF_MAX_HDR_SIZE + 64);
  // The stream (82 KB) per thread rather than on a worker's stack.
  thread_local std::unique_ptr<isal_zstream> stream = std::make_unique<isal_zstream>();
  isal_zstream &z = *stream;
  isal_deflate_stateless_init(&z);
  z.level = kLevel;
  z.level_buf = nullptr; // level 0 needs none
  z.level_buf_size = 0;
  z.gzip_flag = IGZIP_DEFLATE;
  z.next_in = filtered.data();
  z.avail_in = static_cast<std::uint32_t>(n);
  z.next_out = compressed.data();
  z.avail_out = static_cast<std::uint32_t>(compressed.size());
  z.end_of_stream = last ? 1 : 0;
  z.flush = last ? NO_FLUSH : FULL_FLUSH; // byte-aligned, no history across bands
  if (isal_deflate_stateless(&z) != COMP_OK)
    throw std::runtime_error("encode_png_band: igzip failed");
  band.deflate.assign(compressed.begin(), compressed.begin() + z.total_out);
  return band;
}

PngStream::PngStream(int width, int height, Sink sink)
    : width_(width), height_(height), sink_(std::move(sink)) {
  if (width <= 0 || height <= 0) throw std::invalid_argument("PngStream: empty image");
  static constexpr std::uint8_t signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
  sink_(signature);
  bytes_ += sizeof signature;
  std::array<std::uint8_t, 13> ihdr{};
  put_be32(ihdr.data(), static_cast<std::uint32_t>(width));
  put_be32(ihdr.data() + 4, static_cast<std::uint32_t>(height));
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type RGB; compression, filter method, interlace: 0
  chunk("IHDR", ihdr);
}

void PngStream::chunk(const char type[4], std::span<const std::uint8_t> data,
                      std::span<const std::uint8_t> prefix) {
  // A chunk of at most kMaxChunk bytes; a longer band continues in further IDAT chunks.
  do {
    const std::size_t take = std::min(data.size(), kMaxChunk - prefix.size());
    const auto part = data.first(take);
    std::uint8_t head[8];
    put_be32(head, static_cast<std::uint32_t>(prefix.size() + take));
    std::copy_n(type, 4, head + 4);
    std::uint32_t c = crc(0, std::span<const std::uint8_t>(head + 4, 4));
    c = crc(c, prefix);
    c = crc(c, part);
    std::uint8_t tail[4];
    put_be32(tail, c);
    sink_(head);
    if (!prefix.empty()) sink_(prefix);
    if (!part.empty()) sink_(part);
    sink_(tail);
    bytes_ += 12 + prefix.size() + take;
    data = data.subspan(take);
    prefix = {};
  } while (!data.empty());
}

void PngStream::append(const PngBand &band) {
  if (finished_ || final_) throw std::logic_error("PngStream: band after the final one");
  if (band.rows <= 0 || band.rows > height_ - rows_)
    throw std::logic_error("PngStream: band rows beyond the image height");
  // The band with the last row may be final or not (finish() then ends the stream); no other.
  if (band.last && rows_ + band.rows != height_)
    throw std::logic_error("PngStream: only the band holding the last row may be final");
  if (band.filtered_bytes != static_cast<std::uint64_t>(band.rows) * filtered_row_bytes(width_))
    throw std::logic_error("PngStream: band of another width");
  // zlib header: deflate, 32 KiB window, "fastest" level hint; 0x7801 is a multiple of 31.
  static constexpr std::uint8_t zlib_header[2] = {0x78, 0x01};
  chunk("IDAT", band.deflate,
        rows_ == 0 ? std::span<const std::uint8_t>(zlib_header) : std::span<const std::uint8_t>{});
  adler_ = adler32_combine(adler_, band.adler, band.filtered_bytes);
  rows_ += band.rows;
  final_ = band.last;
}

void PngStream::append_rows(std::span<const std::uint8_t> rgb) {
  const std::size_t row = 3 * static_cast<std::size_t>(width_);
  append(
      encode_png_band(rgb, width_, rgb.size() / row == static_cast<std::size_t>(height_ - rows_)));
}

void PngStream::finish() {
  if (finished_) return;
  if (rows_ != height_) throw std::logic_error("PngStream: finish before the last row");
  // An empty final block (fixed Huffman, end of block only) if no band was final, then the
  // Adler-32, big-endian.
  std::uint8_t trailer[6] = {0x03, 0x00};
  const std::size_t at = final_ ? 0 : 2;
  put_be32(trailer + at, adler_);
  chunk("IDAT", std::span<const std::uint8_t>(trailer, at + 4));
  chunk("IEND", {});
  finished_ = true;
}

std::vector<std::uint8_t> encode_png_streamed(std::span<const std::uint8_t> rgb, int width,
                                              int height, int band_rows) {
  if (width <= 0 || height <= 0 || band_rows <= 0 ||
      rgb.size() != static_cast<std::size_t>(width) * static_cast<std::size_t>(height) * 3)
    throw std::invalid_argument("encode_png_streamed: buffer does not match width x height x 3");
  std::vector<std::uint8_t> out;
  PngStream png(width, height, [&out](std::span<const std::uint8_t> b) {
    out.insert(out.end(), b.begin(), b.end());
  });
  const std::size_t row = 3 * static_cast<std::size_t>(width);
  for (int r = 0; r < height; r += band_rows) {
    const int rows = std::min(band_rows, height - r);
    png.append_rows(
        rgb.subspan(static_cast<std::size_t>(r) * row, static_cast<std::size_t>(rows) * row));
  }
  png.finish();
  return out;
}

} // namespace overdrive
