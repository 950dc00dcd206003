// Public interface of the renderer: Mandelbrot views and tiles as immutable values, the
// escape-time kernels behind one small boundary, smooth colouring and PNG encoding.
// Knows nothing of executors or HTTP; callers split work through render_rows().
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace overdrive {

/// Hard limits shared by every front end (CLI, HTTP); validate against them at the edge.
/// One definition of each cap: the HTTP parser, the CLI and the bench all read these.
struct Limits {
  static constexpr int max_image_side = 131072; ///< Pixels per side of one CLI image.
  /// Pixels of one CLI image (width x height), at most: a 65536 x 65536 poster. Streamed, such a
  /// poster never holds its 12.9 GB of RGB, but it takes hours and a PNG of gigabytes.
  static constexpr std::uint64_t max_image_pixels = std::uint64_t{1} << 32;
  static constexpr int max_iterations = 10000000; ///< Iteration cap for one pixel of a CLI image.
  static constexpr int min_tile_size = 16;        ///< Pixels per side of one tile, at least.
  static constexpr int max_tile_size = 1024;      ///< Pixels per side of one tile, at most.
  static constexpr int default_tile_size = 256;
  static constexpr int max_tile_zoom = 40; ///< Below this doubles still resolve pixels.
  /// Deepest tile zoom of all (the deep formats: dd, qd, mp); tile x and y need 121 bits there.
  static constexpr int max_deep_zoom = 120;
  /// Longest one tile may occupy a worker (estimated from the format's cost per iteration):
  /// iteration_cost_ns x iter x size^2 (x2 with its reference) stays below this.
  static constexpr double max_tile_seconds = 10.0;
  static constexpr int max_tile_iterations = 100000; ///< Iteration cap for one pixel of a tile.
  static constexpr int default_tile_iterations = 512;
  /// iter x size^2 budget of one tile: 65536 iterations of a 256x256 tile at most (seconds, not
  /// minutes, even for the scalar kernel on interior-heavy tiles).
  static constexpr std::uint64_t max_tile_work = std::uint64_t{1} << 32;
  static constexpr int max_aa = 4; ///< Anti-aliasing: at most max_aa x max_aa samples per pixel.
};

/// Colour maps for escaped points; points inside the set are always black.
enum class Palette { Classic, Fire, Ocean, Grey };

/// Number format of the escape-time loop: an immutable value, a kind and up to two parameters.
/// f64 and f32 run on the native SIMD kernels; the others (render/formats/) are software formats
/// whose pixel centres are computed exactly and rounded once into the format. Names (see
/// precision_forms()): f64, f32, masked:E.M, fixed:I.F, posit8/16/32, dd, qd, mp:BITS, auto.
class Precision {
public:
  enum class Kind : std::uint8_t { F64, F32, Masked, Fixed, Posit, DD, QD, MP, Auto };
  static const Precision F64, F32, DD, QD, Auto;
  constexpr Precision() noexcept = default; ///< f64
  /// Unchecked constructors; parse_precision() validates names.
  static constexpr Precision masked(int e, int m) noexcept { return {Kind::Masked, e, m}; }
  static constexpr Precision fixed(int i, int f) noexcept { return {Kind::Fixed, i, f}; }
  static constexpr Precision posit(int bits) noexcept { return {Kind::Posit, bits, 0}; }
  static constexpr Precision mp(int bits) noexcept { return {Kind::MP, bits, 0}; }
  constexpr Kind kind() const noexcept { return kind_; }
  /// masked: E; fixed: I; posit: N; mp: BITS; else 0.
  constexpr int a() const noexcept { return a_; }
  /// masked: M; fixed: F; else 0.
  constexpr int b() const noexcept { return b_; }
  /// True for f64 and f32 (the SIMD kernels).
  constexpr bool native() const noexcept { return kind_ == Kind::F64 || kind_ == Kind::F32; }
  friend constexpr bool operator==(const Precision &, const Precision &) = default;

private:
  constexpr Precision(Kind kind, int a, int b) noexcept : kind_(kind), a_(a), b_(b) {}
  Kind kind_ = Kind::F64;
  int a_ = 0;
  int b_ = 0;
};
inline constexpr Precision Precision::F64{};
inline constexpr Precision Precision::F32{Kind::F32, 0, 0};
inline constexpr Precision Precision::DD{Kind::DD, 0, 0};
inline constexpr Precision Precision::QD{Kind::QD, 0, 0};
inline constexpr Precision Precision::Auto{Kind::Auto, 0, 0};

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

/// A tile's column or row index: zooms up to Limits::max_deep_zoom need more than 64 bits.
/// Signed, so TileId{z, int64, int64} stays a widening initialisation.
__extension__ typedef __int128 TileIndex;
/// Decimal spelling of a tile index (std::to_string has no 128-bit overload).
std::string to_string(TileIndex v);
/// Strict canonical decimal (digits only, no leading zero) of a non-negative index < 2^126.
std::optional<TileIndex> parse_tile_index(std::string_view s) noexcept;

/// A slippy-map tile id z/x/y. Zoom 0 is one tile covering re [-2.5, 1.5] x im [-2, 2];
/// zoom z has 2^z x 2^z tiles, x grows rightwards and y downwards (imaginary part decreasing).
struct TileId {
  int z = 0;
  TileIndex x = 0;
  TileIndex y = 0;
  friend bool operator==(const TileId &, const TileId &) = default;
};

/// Edges of a tile in the complex plane.
struct TileBounds {
  double re_min, re_max, im_min, im_max;
};

/// True when 0 <= z <= Limits::max_deep_zoom and 0 <= x, y < 2^z.
bool tile_is_valid(const TileId &tile) noexcept;
/// Bounds of a valid tile; exact in binary floating point up to zoom max_tile_zoom, the nearest
/// doubles beyond (tile_exact_view() is exact at every zoom).
TileBounds tile_bounds(const TileId &tile) noexcept;
/// The viewport of a valid tile rendered at size x size pixels.
Viewport tile_viewport(const TileId &tile, int size) noexcept;

/// A view's position exactly, for depths where Viewport's doubles are not enough: centre and
/// width as decimal strings of any length ("-0.7436438870371587...", "1e-30") or exact
/// hexadecimal ones ("-0x5ffp-10"). Empty: Viewport's doubles are the exact position.
struct ExactView {
  std::string center_re, center_im, width;
  bool empty() const noexcept { return width.empty(); }
  friend bool operator==(const ExactView &, const ExactView &) = default;
};
/// The exact centre and width of a valid tile (hexadecimal, exact at every zoom).
ExactView tile_exact_view(const TileId &tile);
/// Empty when s is a number the exact view accepts (decimal of any length, optional exponent, or
/// hexadecimal 0x...p...), else a one-line reason.
std::string exact_number_error(std::string_view s);

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
  /// Exact position (overrides view's centre and width where doubles do not suffice); pixel
  /// dimensions always come from view.
  ExactView exact = {};
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

// ---- number formats: exact pixels, the reference, disagreement ----------------------------

/// Escape counts of rows [row_begin, row_end) of req, row-major, as render_rows colours them:
/// iters and mag2 hold (row_end - row_begin) * width entries. Auto resolves as resolve_precision.
/// Returns the iterations done. Thread-safe like render_rows.
std::uint64_t render_counts(const RenderRequest &req, int row_begin, int row_end,
                            std::span<std::uint32_t> iters, std::span<float> mag2);
/// Colours counts of whole rows (as render_rows does) into rgb (3 bytes per count).
void colour_counts(const RenderRequest &req, std::span<const std::uint32_t> iters,
                   std::span<const float> mag2, std::span<std::uint8_t> rgb);
/// Significand bits a format resolves: f64 53, f32 24, dd 106, qd 212, mp BITS, masked M+1,
/// fixed F, posit at |x| ~ 1; auto 0.
int precision_bits(Precision p) noexcept;
/// Bits a view needs: log2 of (largest |coordinate| / pixel size), rounded up.
int view_bits(const RenderRequest &req);
/// The cheapest format that resolves the view (what auto means): f64 while it has 6 bits to spare
/// over view_bits, then dd, then mp:BITS.
Precision auto_precision(const RenderRequest &req);
/// req.precision, with auto resolved.
Precision resolve_precision(const RenderRequest &req);
/// The format known exact enough at this view, chosen by depth: dd while it has 32 bits to
/// spare, else mp with 64 (rounded up to a multiple of 64).
Precision reference_precision(const RenderRequest &req);
/// Fraction of pixels whose escape counts differ (0 for empty spans; sizes must match).
double disagreement(std::span<const std::uint32_t> a, std::span<const std::uint32_t> b) noexcept;
/// Estimated cost of one iteration of a format in ns (for caps: Limits::max_tile_seconds).
double iteration_cost_ns(Precision p) noexcept;
/// Estimated seconds for one thread to render req (iteration_cost_ns x max_iter x pixels).
double estimated_seconds(const RenderRequest &req);

/// Encodes an RGB image as an 8-bit RGB PNG.
std::vector<std::uint8_t> encode_png(const Image &image);
/// Encodes rows of RGB pixels as an 8-bit RGB PNG (lets callers avoid copying into an Image).
std::vector<std::uint8_t> encode_png(std::span<const std::uint8_t> rgb, int width, int height);

// ---- streaming PNG: posters bigger than memory ---------------------------------------------

/// Rows of an 8-bit RGB PNG filtered (filter "none") and deflated on their own: a raw deflate
/// segment that ends on a byte boundary (a full flush; the final block if the band holds the
/// image's last row) and the Adler-32 of the bytes it compresses. Segments of consecutive bands
/// concatenate into one zlib stream and their checksums combine (as pigz joins its blocks), so
/// bands are encoded in parallel, on any thread or process, and written in order by PngStream.
struct PngBand {
  int rows = 0;                      ///< Image rows in the band.
  bool last = false;                 ///< The segment is the final deflate block.
  std::uint32_t adler = 1;           ///< Adler-32 of the filtered rows.
  std::uint64_t filtered_bytes = 0;  ///< rows x (1 + 3 x width): what adler covers.
  std::vector<std::uint8_t> deflate; ///< The raw deflate segment.
};

/// Filters and deflates whole rows of RGB (3 x width bytes each; at least one row); last marks
/// the image's last rows. Thread-safe; ISA-L igzip level 0 (identical bytes on every thread).
PngBand encode_png_band(std::span<const std::uint8_t> rgb, int width, bool last);

/// Rows per band for a streamed width x height image: about 256 KiB of filtered bytes, and at
/// least 64 bands when the image is tall enough. A function of the size only, so a streamed PNG's
/// bytes do not depend on how many workers or processes encoded it.
int png_band_rows(int width, int height) noexcept;

/// Writes an 8-bit RGB PNG to a sink as its bands arrive in row order: signature and IHDR at
/// construction, one IDAT chunk per band, the checksum and IEND at finish(). Holds no pixels.
class PngStream {
public:
  /// Receives the file's bytes in order.
  using Sink = std::function<void(std::span<const std::uint8_t>)>;
  /// Throws std::invalid_argument for a size PNG cannot hold.
  PngStream(int width, int height, Sink sink);
  /// Appends the next band (rows in order). Throws std::logic_error for rows beyond the height
  /// or after the final segment.
  void append(const PngBand &band);
  /// encode_png_band + append on the calling thread.
  void append_rows(std::span<const std::uint8_t> rgb);
  /// Ends the zlib stream and writes IEND. Throws std::logic_error unless every row arrived.
  void finish();
  int rows_written() const noexcept { return rows_; }
  std::uint64_t bytes_written() const noexcept { return bytes_; }

private:
  void chunk(const char type[4], std::span<const std::uint8_t> data,
             std::span<const std::uint8_t> prefix = {});
  int width_, height_;
  Sink sink_;
  int rows_ = 0;
  bool final_ = false, finished_ = false;
  std::uint32_t adler_ = 1;
  std::uint64_t bytes_ = 0;
};

/// The whole image through PngStream in bands of band_rows rows (tests and benchmarks): the
/// bytes a streamed render of the same size writes when band_rows = png_band_rows().
std::vector<std::uint8_t> encode_png_streamed(std::span<const std::uint8_t> rgb, int width,
                                              int height, int band_rows);

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
std::string to_string(Precision p);
std::string_view to_string(Isa isa) noexcept;
std::optional<Palette> parse_palette(std::string_view name) noexcept;
/// Parses every form of precision_forms(); nullopt when malformed or out of range.
std::optional<Precision> parse_precision(std::string_view name);
/// Empty when name parses, else a one-line reason that lists the valid forms.
std::string precision_error(std::string_view name);
std::optional<Isa> parse_isa(std::string_view name) noexcept;
/// Valid names in a fixed order (the one list each set of names comes from): CLI choices,
/// error messages, /api/stats and the page derive from these.
std::vector<std::string> all_palette_names();
/// Named formats to offer in menus (f64, f32, dd, ..., masked:4.50, fixed:11.5, auto).
std::vector<std::string> all_precision_names();
/// The grammar, one entry per form: "f64", "masked:E.M (E 2..11, M 1..52)", ...
std::vector<std::string> precision_forms();
std::vector<std::string> all_isa_names();
/// Comma-separated valid names, for error messages.
std::string palette_names();
/// The forms of precision_forms(), comma-separated.
std::string precision_names();

} // namespace overdrive
