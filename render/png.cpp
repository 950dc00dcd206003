// PNG encoding. The single translation unit that includes stb_image_write's implementation.
// stb writes the PNG; libdeflate replaces stb's own zlib (STBIW_ZLIB_COMPRESS) and one row filter
// is forced instead of stb's try-all-five search. Level and filter were chosen by measurement
// (bench/bench_render.cpp, table in bench/README.md).
#include "render/render.hpp"

#include <array>
#include <cstdlib>
#include <libdeflate.h>
#include <mutex>
#include <shared_mutex>
#include <stdexcept>

namespace overdrive {
namespace {

constexpr int kLevel = 1;  // libdeflate level
constexpr int kFilter = 0; // PNG row filter: 0 none, 1 sub, 2 up, 3 average, 4 paeth

// The compression level of the calling thread's encode (only the benchmark changes it).
thread_local int tl_level = kLevel;

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

// stb's zlib hook: returns a malloc'ed zlib stream that stb frees with STBIW_FREE (free).
unsigned char *deflate_for_stb(unsigned char *data, int len, int *out_len, int /*quality*/) {
  thread_local Compressors cs;
  auto *&c = cs.by_level[static_cast<std::size_t>(tl_level)];
  if (!c) c = libdeflate_alloc_compressor(tl_level);
  if (!c) return nullptr;
  const std::size_t bound = libdeflate_zlib_compress_bound(c, static_cast<std::size_t>(len));
  auto *out = static_cast<unsigned char *>(std::malloc(bound));
  if (!out) return nullptr;
  const std::size_t n =
      libdeflate_zlib_compress(c, data, static_cast<std::size_t>(len), out, bound);
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
#include <stb_image_write.h>
// stb's own encoder as shipped (its zlib at level 8, best of five filters per row), kept only as
// the benchmark's size and speed baseline. Its statics live in their own namespace.
#undef STBIW_ZLIB_COMPRESS
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
    stbi_write_force_png_filter = kFilter;
  });
}

} // namespace

std::vector<std::uint8_t> encode_png(std::span<const std::uint8_t> rgb, int width, int height) {
  check_size(rgb, width, height);
  init_filter();
  const std::shared_lock lock(filter_mutex);
  return encode_locked(rgb, width, height);
}

std::vector<std::uint8_t> encode_png(const Image &image) {
  return encode_png(image.rgb, image.width, image.height);
}

namespace detail {
std::vector<std::uint8_t> encode_png_with(std::span<const std::uint8_t> rgb, int width, int height,
                                          const PngSettings &s) {
  check_size(rgb, width, height);
  if (s.stb_default) {
    std::vector<std::uint8_t> out;
    if (!stb_default::stbi_write_png_to_func(sink, &out, width, height, 3, rgb.data(), width * 3))
      throw std::runtime_error("encode_png_with: stb_image_write failed");
    return out;
  }
  if (s.level < 0 || s.level > 12 || s.filter < -1 || s.filter > 4)
    throw std::invalid_argument("encode_png_with: level 0..12, filter -1..4");
  init_filter();
  const std::unique_lock lock(filter_mutex);
  struct Restore {
    ~Restore() {
      stbi_write_force_png_filter = kFilter;
      tl_level = kLevel;
    }
  } restore;
  stbi_write_force_png_filter = s.filter;
  tl_level = s.level;
  return encode_locked(rgb, width, height);
}
} // namespace detail

} // namespace overdrive
