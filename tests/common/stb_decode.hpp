// Decodes PNG bytes with stb_image (from libstb-dev), for tests that check what was encoded.
// Include from exactly one translation unit per test executable.
#pragma once

#include <cstdint>
#include <vector>

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wsign-conversion"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wduplicated-branches"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#endif
#define STB_IMAGE_STATIC
#define STB_IMAGE_IMPLEMENTATION
#include <stb_image.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

namespace overdrive::test {

struct Decoded {
  int width = 0, height = 0, channels = 0;
  std::vector<std::uint8_t> pixels; ///< RGB, as stored in the file
};

inline Decoded decode_png(const std::vector<std::uint8_t> &png) {
  Decoded d;
  unsigned char *p = stbi_load_from_memory(png.data(), static_cast<int>(png.size()), &d.width,
                                           &d.height, &d.channels, 3);
  if (!p) return {};
  d.pixels.assign(p,
                  p + static_cast<std::size_t>(d.width) * static_cast<std::size_t>(d.height) * 3);
  stbi_image_free(p);
  return d;
}

} // namespace overdrive::test
