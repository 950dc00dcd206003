// PNG encoding. The single translation unit that includes stb_image_write's implementation.
// stb writes the PNG; a fast deflate replaces stb's own zlib (STBIW_ZLIB_COMPRESS) and one row
// filter is forced instead of stb's try-all-five search. Library, level and filter were chosen by
// measurement (bench/bench_render.cpp, table in bench/README.md): ISA-L's igzip at level 1 with
// no row filter. libdeflate stays selectable for that comparison.
#include "render/render.hpp"

#include <array>
#include <cstdlib>
#include <cstring>
#include <isa-l/crc.h>
#include <isa-l/igzip_lib.h>
#include <libdeflate.h>
#include <limits>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>

namespace overdrive {
namespace {

using Deflate = detail::PngSettings::Deflate;
constexpr detail::PngSettings kProduction{}; // the defaults are the measured best

// The deflate of the calling thread's encode (only the benchmark changes it).
thread_local Deflate tl_deflate = kProduction.deflate;
thread_local int tl_level = kProduction.level;

// libdeflate compressors are not thread-safe but reusable: one per thread and level.
struct Compressors {
  std::array<libdeflate_compressor *, 13> by_level{};
  Compressors() = default;
  Compressors(const Compressors &) = delete;
  Compressors &operator=(const Compressors &) = delete;
  ~Compressors() {
    for (auto *c : by_level)
      if (c) libdeflate_free_compressor(c);
  }
};

std::size_t zlib_bound(int len) {
  // Stored blocks at worst: 5 bytes per 64 KiB block, plus zlib and block headers.
  const auto n = static_cast<std::size_t>(len);
  return n + 5 * (n / 65535 + 1) + ISAL_DEF_MAX_HDR_SIZE + 64;
}

std::size_t libdeflate_zlib(unsigned char *data, int len, unsigned char *out, std::size_t cap) {
  thread_local Compressors cs;
  auto *&c = cs.by_level[static_cast<std::size_t>(tl_level)];
  if (!c) c = libdeflate_alloc_compressor(tl_level);
  if (!c) return 0;
  return libdeflate_zlib_compress(c, data, static_cast<std::size_t>(len), out, cap);
}

std::size_t isal_zlib(unsigned char *data, int len, unsigned char *out, std::size_t cap) {
  // igzip's level buffer (hash tables, token buffer), per thread at the largest size used.
  static constexpr std::uint32_t buf_size[] = {ISAL_DEF_LVL0_DEFAULT, ISAL_DEF_LVL1_DEFAULT,
                                               ISAL_DEF_LVL2_DEFAULT, ISAL_DEF_LVL3_DEFAULT};
  thread_local std::vector<std::uint8_t> level_buf;
  const std::uint32_t need = buf_size[tl_level];
  if (level_buf.size() < need) level_buf.resize(need);
  isal_zstream z;
  isal_deflate_stateless_init(&z);
  z.level = static_cast<std::uint32_t>(tl_level);
  z.level_buf = need ? level_buf.data() : nullptr;
  z.level_buf_size = need;
  z.gzip_flag = IGZIP_ZLIB;
  z.next_in = data;
  z.avail_in = static_cast<std::uint32_t>(len);
  z.next_out = out;
  z.avail_out = static_cast<std::uint32_t>(cap);
  z.end_of_stream = 1;
  z.flush = NO_FLUSH;
  return isal_deflate_stateless(&z) == COMP_OK ? z.total_out : 0;
}

/// The calling thread's deflate of data into out (at most cap bytes): its length, 0 on failure.
std::size_t zlib_into(unsigned char *data, int len, unsigned char *out, std::size_t cap) {
  return tl_deflate == Deflate::Libdeflate ? libdeflate_zlib(data, len, out, cap)
                                           : isal_zlib(data, len, out, cap);
}

// stb's zlib hook: returns a malloc'ed zlib stream that stb frees with STBIW_FREE (free).
unsigned char *deflate_for_stb(unsigned char *data, int len, int *out_len, int /*quality*/) {
  const std::size_t cap = zlib_bound(len);
  auto *out = static_cast<unsigned char *>(std::malloc(cap));
  if (!out) return nullptr;
  const std::size_t n = zlib_into(data, len, out, cap);
  if (n == 0) {
    std::free(out);
    return nullptr;
  }
  *out_len = static_cast<int>(n);
  return out;
}

} // namespace
} // namespace overdrive

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wsign-conversion"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#pragma GCC diagnostic ignored "-Wunused-function"
#endif
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#define STBIW_ZLIB_COMPRESS overdrive::deflate_for_stb
// ISA-L's CRC-32 (PCLMUL; the reflected IEEE CRC that PNG uses) instead of stb's table loop,
// which took ~11% of an encode.
#define STBIW_CRC32(buffer, len)                                                                   \
  static_cast<unsigned int>(crc32_gzip_refl(0, buffer, static_cast<std::uint64_t>(len)))
#include <stb_image_write.h>
// stb's own encoder as shipped (its zlib at level 8, best of five filters per row), kept only as
// the benchmark's size and speed baseline. Its statics live in their own namespace.
#undef STBIW_ZLIB_COMPRESS
#undef STBIW_CRC32
namespace stb_default {
#include <stb_image_write.h>
}
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

namespace overdrive {
namespace {

// stbi_write_force_png_filter is a global that stb reads once per call. encode_png only reads it
// (shared lock); the benchmark's encode_png_with changes it for one call (exclusive lock).
std::shared_mutex filter_mutex;

void sink(void *ctx, void *data, int size) {
  auto *v = static_cast<std::vector<std::uint8_t> *>(ctx);
  const auto *p = static_cast<const std::uint8_t *>(data);
  v->insert(v->end(), p, p + size);
}

void check_size(std::span<const std::uint8_t> rgb, int width, int height) {
  if (width <= 0 || height <= 0 ||
      rgb.size() != static_cast<std::size_t>(width) * static_cast<std::size_t>(height) * 3)
    throw std::invalid_argument("encode_png: buffer does not match width x height x 3");
}

std::vector<std::uint8_t> encode_locked(std::span<const std::uint8_t> rgb, int width, int height) {
  std::vector<std::uint8_t> out;
  if (!stbi_write_png_to_func(sink, &out, width, height, 3, rgb.data(), width * 3))
    throw std::runtime_error("encode_png: stb_image_write failed");
  return out;
}

// Sets the production filter once, before the first encode of either kind.
void init_filter() {
  static std::once_flag once;
  std::call_once(once, [] {
    const std::unique_lock lock(filter_mutex);
    stbi_write_force_png_filter = kProduction.filter;
  });
}

void put32(std::uint8_t *p, std::uint32_t v) {
  p[0] = static_cast<std::uint8_t>(v >> 24);
  p[1] = static_cast<std::uint8_t>(v >> 16);
  p[2] = static_cast<std::uint8_t>(v >> 8);
  p[3] = static_cast<std::uint8_t>(v);
}

/// Writes the CRC of the chunk whose type starts at tag and whose data is len bytes long, right
/// after the data; returns the end of the chunk.
std::uint8_t *put_crc(std::uint8_t *tag, std::size_t len) {
  put32(tag + 4 + len, static_cast<std::uint32_t>(crc32_gzip_refl(0, tag, len + 4)));
  return tag + 4 + len + 4;
}

/// The production encode with filter 0 (none), byte for byte what stb writes with that filter
/// (signature, IHDR, one IDAT, IEND; the same deflate input), without stb's three heap buffers
/// per call (filtered rows, zlib stream, PNG) and its copies: the filtered rows and the zlib
/// stream go to per-thread buffers that are reused, and the PNG is built once at its final size.
std::vector<std::uint8_t> encode_unfiltered(std::span<const std::uint8_t> rgb, int width,
                                            int height) {
  const std::size_t row = static_cast<std::size_t>(width) * 3, frow = row + 1;
  const std::size_t flen = frow * static_cast<std::size_t>(height);
  if (flen > static_cast<std::size_t>(std::numeric_limits<int>::max()))
    throw std::invalid_argument("encode_png: image too large");
  thread_local std::vector<std::uint8_t> filt, zbuf;
  struct Trim { // keep at most a few MiB per thread between calls
    ~Trim() {
      constexpr std::size_t keep = 8u << 20;
      if (filt.capacity() > keep) std::vector<std::uint8_t>().swap(filt);
      if (zbuf.capacity() > keep) std::vector<std::uint8_t>().swap(zbuf);
    }
  } trim;
  if (filt.size() < flen) filt.resize(flen);
  for (std::size_t j = 0; j < static_cast<std::size_t>(height); ++j) {
    filt[j * frow] = 0;
    std::memcpy(filt.data() + j * frow + 1, rgb.data() + j * row, row);
  }
  const std::size_t cap = zlib_bound(static_cast<int>(flen));
  if (zbuf.size() < cap) zbuf.resize(cap);
  const std::size_t zlen = zlib_into(filt.data(), static_cast<int>(flen), zbuf.data(), cap);
  if (zlen == 0) throw std::runtime_error("encode_png: deflate failed");

  static constexpr std::uint8_t sig[8] = {137, 80, 78, 71, 13, 10, 26, 10};
  std::vector<std::uint8_t> out(8 + 12 + 13 + 12 + zlen + 12);
  std::uint8_t *o = out.data();
  std::memcpy(o, sig, 8);
  o += 8;
  put32(o, 13);
  std::memcpy(o + 4, "IHDR", 4);
  put32(o + 8, static_cast<std::uint32_t>(width));
  put32(o + 12, static_cast<std::uint32_t>(height));
  const std::uint8_t ihdr_tail[5] = {8, 2, 0, 0, 0}; // 8 bits, RGB, deflate, filter 0, no interlace
  std::memcpy(o + 16, ihdr_tail, 5);
  o = put_crc(o + 4, 13);
  put32(o, static_cast<std::uint32_t>(zlen));
  std::memcpy(o + 4, "IDAT", 4);
  std::memcpy(o + 8, zbuf.data(), zlen);
  o = put_crc(o + 4, zlen);
  put32(o, 0);
  std::memcpy(o + 4, "IEND", 4);
  put_crc(o + 4, 0);
  return out;
}

} // namespace

std::vector<std::uint8_t> encode_png(std::span<const std::uint8_t> rgb, int width, int height) {
  check_size(rgb, width, height);
  if constexpr (kProduction.filter == 0) {
    return encode_unfiltered(rgb, width, height);
  } else {
    init_filter();
    const std::shared_lock lock(filter_mutex);
    return encode_locked(rgb, width, height);
  }
}

std::vector<std::uint8_t> encode_png(const Image &image) {
  return encode_png(image.rgb, image.width, image.height);
}

namespace detail {
std::vector<std::uint8_t> encode_png_with(std::span<const std::uint8_t> rgb, int width, int height,
                                          const PngSettings &s) {
  check_size(rgb, width, height);
  if (s.deflate == Deflate::Stb) {
    std::vector<std::uint8_t> out;
    if (!stb_default::stbi_write_png_to_func(sink, &out, width, height, 3, rgb.data(), width * 3))
      throw std::runtime_error("encode_png_with: stb_image_write failed");
    return out;
  }
  const int max_level = s.deflate == Deflate::Isal ? ISAL_DEF_MAX_LEVEL : 12;
  if (s.level < 0 || s.level > max_level || s.filter < -1 || s.filter > 4)
    throw std::invalid_argument("encode_png_with: level 0..3 (isal) or 0..12 (libdeflate), "
                                "filter -1..4");
  init_filter();
  const std::unique_lock lock(filter_mutex);
  struct Restore {
    ~Restore() {
      stbi_write_force_png_filter = kProduction.filter;
      tl_deflate = kProduction.deflate;
      tl_level = kProduction.level;
    }
  } restore;
  stbi_write_force_png_filter = s.filter;
  tl_deflate = s.deflate;
  tl_level = s.level;
  return encode_locked(rgb, width, height);
}
} // namespace detail

} // namespace overdrive
