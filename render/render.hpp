// Public interface of the renderer: Mandelbrot views and tiles as immutable values, the
// escape-time kernels behind one small boundary, smooth colouring and PNG encoding.
// Knows nothing of executors or HTTP; callers split work through render_rows().
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace overdrive {

/// Hard limits shared by every front end (CLI, HTTP); validate against them at the edge.
/// One definition of each cap: the HTTP parser, the CLI and the bench all read these.
struct Limits {
  static constexpr int max_image_side = 32768;    ///< Pixels per side of one CLI image.
  static constexpr int max_iterations = 10000000; ///< Iteration cap for one pixel of a CLI image.
  static constexpr int min_tile_size = 16;        ///< Pixels per side of one tile, at least.
  static constexpr int max_tile_size = 1024;      ///< Pixels per side of one tile, at most.
  static constexpr int default_tile_size = 256;
  static constexpr int max_tile_zoom = 40;           ///< Below this doubles still resolve pixels.
  static constexpr int max_tile_iterations = 100000; ///< Iteration cap for one pixel of a tile.
  static constexpr int default_tile_iterations = 512;
  /// iter x size^2 budget of one tile: 65536 iterations of a 256x256 tile at most (seconds, not
  /// minutes, even for the scalar kernel on interior-heavy tiles).
  static constexpr std::uint64_t max_tile_work = std::uint64_t{1} << 32;
  static constexpr int max_aa = 4; ///< Anti-aliasing: at most max_aa x max_aa samples per pixel.
};

/// Colour maps for escaped points; points inside the set are always black.
enum class Palette { Classic, Fire, Ocean, Grey };

/// Number format of the escape-time loop.
enum class Precision { F64, F32 };

/// Instruction sets a kernel may use; Auto picks the best the CPU offers.
enum class Isa { Auto, Scalar, Avx2, Avx512 };

/// A rectangle of the complex plane sampled on a pixel grid. Square pixels.
struct Viewport {
  double center_re = -0.5;
  double center_im = 0.0;
  double width = 3.0; ///< Width of the image in the complex plane.
  int pixel_width = 1024;
  int pixel_height = 1024;

  /// Size of one pixel in the complex plane.
  double pixel_size() const noexcept { return width / pixel_width; }
  /// Real part of the centre of pixel column px.
  double re_at(int px) const noexcept;
  /// Imaginary part of the centre of pixel row py (row 0 is the top).
  double im_at(int py) const noexcept;
  friend bool operator==(const Viewport &, const Viewport &) = default;
};

/// A slippy-map tile id z/x/y. Zoom 0 is one tile covering re [-2.5, 1.5] x im [-2, 2];
/// zoom z has 2^z x 2^z tiles, x grows rightwards and y downwards (imaginary part decreasing).
struct TileId {
  int z = 0;
  std::int64_t x = 0;
  std::int64_t y = 0;
  friend bool operator==(const TileId &, const TileId &) = default;
};

/// Edges of a tile in the complex plane.
struct TileBounds {
  double re_min, re_max, im_min, im_max;
};

/// True when 0 <= z <= Limits::max_tile_zoom and 0 <= x, y < 2^z.
bool tile_is_valid(const TileId &tile) noexcept;
/// Bounds of a valid tile; exact in binary floating point.
TileBounds tile_bounds(const TileId &tile) noexcept;
/// The viewport of a valid tile rendered at size x size pixels.
Viewport tile_viewport(const TileId &tile, int size) noexcept;

/// Everything that determines the pixels of one image. An immutable value: copy it freely.
struct RenderRequest {
  Viewport view;
  int max_iter = 1000;
  Palette palette = Palette::Classic;
  Precision precision = Precision::F64;
  Isa isa = Isa::Auto;
  /// Adaptive anti-aliasing: pixels whose colour differs from a neighbour's beyond a threshold
  /// are replaced by the mean of aa x aa samples (1 = off, at most Limits::max_aa).
  int aa = 1;
  /// Rectangle filling of interior regions (fill.cpp): the same pixels, less work. Off only to
  /// compare against the plain render.
  bool fill = true;
  friend bool operator==(const RenderRequest &, const RenderRequest &) = default;
};

/// An 8-bit RGB image, rows top to bottom, 3 bytes per pixel.
struct Image {
  int width = 0;
  int height = 0;
  std::vector<std::uint8_t> rgb;
};

/// What a render did. iterations is the sum of the pixels' escape counts (max_iter for interior
/// points), the same with or without filling and AA; computed is the sum of the escape counts of
/// the points actually handed to a kernel (filled pixels excluded, AA samples and context rows
/// included), i.e. the work done.
struct RenderStats {
  std::uint64_t iterations = 0;
  std::uint64_t computed = 0;
  std::uint64_t filled = 0;       ///< Pixels set to interior by rectangle filling.
  std::uint64_t supersampled = 0; ///< Pixels replaced by the mean of aa x aa samples.
  RenderStats &operator+=(const RenderStats &o) noexcept {
    iterations += o.iterations;
    computed += o.computed;
    filled += o.filled;
    supersampled += o.supersampled;
    return *this;
  }
};

/// Renders rows [row_begin, row_end) of req into out, which holds exactly
/// (row_end - row_begin) * width * 3 bytes. Thread-safe: distinct row ranges may be rendered
/// concurrently into distinct buffers. Preconditions (validated at the edge) are asserted.
RenderStats render_rows(const RenderRequest &req, int row_begin, int row_end,
                        std::span<std::uint8_t> out);

/// Renders the whole image on the calling thread.
Image render_image(const RenderRequest &req, RenderStats *stats = nullptr);

/// Encodes an RGB image as an 8-bit RGB PNG.
std::vector<std::uint8_t> encode_png(const Image &image);
/// Encodes rows of RGB pixels as an 8-bit RGB PNG (lets callers avoid copying into an Image).
std::vector<std::uint8_t> encode_png(std::span<const std::uint8_t> rgb, int width, int height);

// ---- the kernel boundary -------------------------------------------------------------------

/// Escape counts of one row: count points c = re0 + (k0 + k*kstep)*dre + im*i, k in [0, n), the
/// column k0 + k*kstep computed in int and converted to double (so a job over some columns of a
/// row, e.g. a segment or every 64th pixel, gets bit for bit the c of the whole row's job).
/// iters[k] receives the escape iteration (max_iter if the point never escaped) and mag2[k]
/// |z|^2 at escape (used for smooth colouring; unspecified for interior points).
struct RowJob {
  double re0, dre, im;
  int n;
  int max_iter;
  std::uint32_t *iters;
  float *mag2;
  /// Column of point 0 and the column step (see above); 0 and 1 for a whole row.
  int k0 = 0;
  int kstep = 1;
};

/// Switches that change a kernel's speed. skip_interior never changes a count (skipped points
/// never escape); periodicity may, on a bounded fraction of pixels next to the boundary.
struct KernelOptions {
  /// Answer points in the main cardioid and the period-2 bulb with max_iter without iterating.
  bool skip_interior = true;
  /// Periodicity detection: a point whose orbit returns to a saved orbit point z_s, i.e.
  /// |z_n - z_s|^2 <= (dre * 2^-periodicity_shift)^2 (dre = RowJob::dre, the pixel size; an
  /// exact return always counts, so dre = 0 means exact returns only), is answered max_iter
  /// like a cardioid point. The saved point follows a Brent-style schedule of growing windows, per
  /// pixel, so a pixel's count does not depend on the batch it ran in (kernel_simd.cpp and
  /// kernel.cpp state the schedules). Counts differ from those with it off only for pixels that
  /// escape after coming back within that tolerance: under 1e-4 of the pixels on the full
  /// view, the seahorse valley and a deep view next to a mini-set (tests/test_kernels.cpp).
  bool periodicity = true;
  /// The tolerance is the pixel size divided by 2^periodicity_shift.
  static constexpr int periodicity_shift = 10;
};

/// The scalar double-precision reference kernel every faster kernel is tested against.
void kernel_reference(const RowJob &job) noexcept;
/// Runs the kernel selected by precision and isa (Auto = best available, overridable by the
/// OVERDRIVE_ISA environment variable: scalar, avx2, avx512).
void run_kernel(const RowJob &job, Precision precision, Isa isa) noexcept;
/// run_kernel with explicit options; the three-argument form uses KernelOptions{}. An explicit
/// isa the CPU lacks falls back to the best supported one below it.
void run_kernel(const RowJob &job, Precision precision, Isa isa,
                const KernelOptions &options) noexcept;
/// Several rows sharing re0, dre, n and max_iter: row r has imaginary part im[r] and its counts
/// go to iters[r * n + k] and mag2[r * n + k]. One call lets a SIMD kernel keep its vectors full
/// across row ends; the counts are exactly those of run_kernel row by row.
struct RowsJob {
  double re0, dre;
  const double *im;
  int rows;
  int n;
  int max_iter;
  std::uint32_t *iters;
  float *mag2;
  /// As in RowJob: point k of every row is column k0 + k * kstep.
  int k0 = 0;
  int kstep = 1;
};
/// run_kernel over the rows of job (same precision, isa and options semantics).
void run_kernel_rows(const RowsJob &job, Precision precision, Isa isa,
                     const KernelOptions &options = {}) noexcept;
/// The instruction set Auto resolves to on this CPU (after the OVERDRIVE_ISA override).
Isa best_isa() noexcept;
/// True when this CPU and build can run kernels for isa.
bool isa_supported(Isa isa) noexcept;

namespace detail {
/// Smooth colouring: palette entries (index palette_size is black, for interior points),
/// iterations per trip around the palette, and the coefficients of the log2 polynomial below.
inline constexpr int palette_size = 1024;
inline constexpr float palette_period = 64.0f;
inline constexpr float log2_poly[6] = {0.58495076f, 0.96180343f,  -0.31975771f,
                                       0.14200548f, -0.07997621f, 0.04300496f};
/// Palette index of one pixel from its escape count and |z|^2 at escape.
std::uint16_t colour_index_scalar(std::uint32_t n, float mag2, int max_iter) noexcept;
/// The same for n pixels, with the instruction set isa resolves to (as run_kernel does); every
/// ISA gives identical indices.
void colour_indices(const std::uint32_t *iters, const float *mag2, std::size_t n, int max_iter,
                    Isa isa, std::uint16_t *idx) noexcept;

/// PNG encoder settings, for the encoder benchmark; encode_png uses the defaults, the measured
/// best.
struct PngSettings {
  enum class Deflate {
    Isal,       ///< ISA-L igzip, level 0..3
    Libdeflate, ///< libdeflate, level 0..12
    Stb,        ///< stb as shipped (its zlib, level 8, best of five filters per row)
  };
  Deflate deflate = Deflate::Isal;
  int level = 1;  ///< Compression level of deflate.
  int filter = 0; ///< Row filter 0 none, 1 sub, 2 up, 3 average, 4 paeth; -1 best per row.
};
/// encode_png with explicit settings. Thread-safe, but serialises with encode_png while it runs.
std::vector<std::uint8_t> encode_png_with(std::span<const std::uint8_t> rgb, int width, int height,
                                          const PngSettings &settings);
} // namespace detail

// ---- names ---------------------------------------------------------------------------------

std::string_view to_string(Palette p) noexcept;
std::string_view to_string(Precision p) noexcept;
std::string_view to_string(Isa isa) noexcept;
std::optional<Palette> parse_palette(std::string_view name) noexcept;
std::optional<Precision> parse_precision(std::string_view name) noexcept;
std::optional<Isa> parse_isa(std::string_view name) noexcept;
/// Valid names in a fixed order (the one list each set of names comes from): CLI choices,
/// error messages, /api/stats and the page derive from these.
std::vector<std::string> all_palette_names();
std::vector<std::string> all_precision_names();
std::vector<std::string> all_isa_names();
/// Comma-separated valid names, for error messages.
std::string palette_names();
std::string precision_names();

} // namespace overdrive
