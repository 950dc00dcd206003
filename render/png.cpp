// PNG encoding. The single translation unit that includes stb_image_write's implementation.
#include "render/render.hpp"

#include <stdexcept>

#if defined(__GNUC__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wconversion"
#pragma GCC diagnostic ignored "-Wsign-conversion"
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"
#endif
#define STB_IMAGE_WRITE_STATIC
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb_image_write.h>
#if defined(__GNUC__)
#pragma GCC diagnostic pop
#endif

namespace overdrive {

std::vector<std::uint8_t> encode_png(std::span<const std::uint8_t> rgb, int width, int height) {
  if (width <= 0 || height <= 0 ||
      rgb.size() != static_cast<std::size_t>(width) * static_cast<std::size_t>(height) * 3)
    throw std::invalid_argument("encode_png: buffer does not match width x height x 3");
  std::vector<std::uint8_t> out;
  auto sink = [](void *ctx, void *data, int size) {
    auto *v = static_cast<std::vector<std::uint8_t> *>(ctx);
    const auto *p = static_cast<const std::uint8_t *>(data);
    v->insert(v->end(), p, p + size);
  };
  if (!stbi_write_png_to_func(sink, &out, width, height, 3, rgb.data(), width * 3))
    throw std::runtime_error("encode_png: stb_image_write failed");
  return out;
}

std::vector<std::uint8_t> encode_png(const Image &image) {
  return encode_png(image.rgb, image.width, image.height);
}

} // namespace overdrive
