// Number formats around the kernels of render/formats/: the names and their grammar, exact pixel
// centres (MPFR, rounded once into the format by the format's kernel), the dispatch of
// render_rows into those kernels, automatic and reference formats by depth, and disagreement.
//
// A pixel centre is re0 + k * step and im0 - r * step with re0 = centre_re - width/2 + step/2,
// im0 = centre_im + height * step/2 - step/2 and step = width / pixel_width (Viewport::re_at's
// formula), evaluated in MPFR with view_bits + format bits + 64 bits: exact for tiles whose size
// is a power of two (dyadic), and otherwise 64 bits below anything the format can hold, so the
// one rounding that matters is the kernel's rounding into the format.
#include "render/format_render.hpp"

#include "render/formats/format_kernel.hpp"

#include <algorithm>
#include <cassert>
#include <cmath>
#include <memory>

namespace overdrive {
namespace {

/// One MPFR value, cleared on scope exit.
class Mp {
public:
  explicit Mp(mpfr_prec_t bits) { mpfr_init2(v_, bits); }
  ~Mp() { mpfr_clear(v_); }
  Mp(const Mp &) = delete;
  Mp &operator=(const Mp &) = delete;
  mpfr_ptr get() noexcept { return v_; }
  mpfr_srcptr get() const noexcept { return v_; }

private:
  mpfr_t v_;
};

/// n MPFR values contiguous, as FormatKernel::set_columns takes them.
class MpArray {
public:
  MpArray(int n, mpfr_prec_t bits)
      : n_(static_cast<std::size_t>(n)), v_(new mpfr_t[static_cast<std::size_t>(n)]) {
    for (std::size_t i = 0; i < n_; ++i)
      mpfr_init2(v_[i], bits);
  }
  ~MpArray() {
    for (std::size_t i = 0; i < n_; ++i)
      mpfr_clear(v_[i]);
  }
  MpArray(const MpArray &) = delete;
  MpArray &operator=(const MpArray &) = delete;
  mpfr_t *data() noexcept { return v_.get(); }
  mpfr_ptr operator[](int i) noexcept { return v_[static_cast<std::size_t>(i)]; }

private:
  std::size_t n_;
  std::unique_ptr<mpfr_t[]> v_;
};

formats::Spec spec_of(Precision p) noexcept {
  switch (p.kind()) {
  case Precision::Kind::Masked:
    return {formats::Kind::Masked, p.a(), p.b()};
  case Precision::Kind::Fixed:
    return {formats::Kind::Fixed, p.a(), p.b()};
  case Precision::Kind::Posit:
    return {formats::Kind::Posit, p.a(), 0};
  case Precision::Kind::QD:
    return {formats::Kind::QD, 0, 0};
  case Precision::Kind::MP:
    return {formats::Kind::MP, p.a(), 0};
  case Precision::Kind::DD:
  case Precision::Kind::F64:
  case Precision::Kind::F32:
  case Precision::Kind::Auto:
    break;
  }
  return {formats::Kind::DD, 0, 0};
}

bool is_software(Precision p) noexcept {
  return !p.native() && p.kind() != Precision::Kind::Auto;
}

// ---- names ----------------------------------------------------------------------------------

constexpr int kMpMinBits = 8;
constexpr int kMpMaxBits = 4096;

/// Strict canonical decimal 0..99999 (no sign, no leading zero): one spelling per format.
std::optional<int> small_uint(std::string_view s) noexcept {
  if (s.empty() || s.size() > 5 || (s.size() > 1 && s[0] == '0')) return std::nullopt;
  int v = 0;
  for (char c : s) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + (c - '0');
  }
  return v;
}

std::optional<std::pair<int, int>> two_uints(std::string_view s) noexcept {
  const auto dot = s.find('.');
  if (dot == std::string_view::npos) return std::nullopt;
  const auto a = small_uint(s.substr(0, dot)), b = small_uint(s.substr(dot + 1));
  if (!a || !b) return std::nullopt;
  return std::pair{*a, *b};
}

std::string printable(std::string_view s) {
  std::string out = "'";
  for (char c : s.substr(0, 64))
    out += (c >= 0x20 && c < 0x7f) ? c : '?';
  if (s.size() > 64) out += "...";
  return out + "'";
}

/// The parse of name, or the reason it fails (without the list of forms).
std::optional<Precision> parse_or_reason(std::string_view name, std::string *why) {
  auto fail = [why](std::string reason) -> std::optional<Precision> {
    if (why) *why = std::move(reason);
    return std::nullopt;
  };
  std::optional<Precision> p;
  if (name == "f64") return Precision::F64;
  if (name == "f32") return Precision::F32;
  if (name == "auto") return Precision::Auto;
  if (name == "dd") {
    p = Precision::DD;
  } else if (name == "qd") {
    p = Precision::QD;
  } else if (name.starts_with("posit")) {
    const auto n = small_uint(name.substr(5));
    if (!n || (*n != 8 && *n != 16 && *n != 32)) return fail("positN needs N = 8, 16 or 32");
    p = Precision::posit(*n);
  } else if (name.starts_with("masked:")) {
    const auto v = two_uints(name.substr(7));
    if (!v) return fail("masked needs two integers, masked:E.M");
    if (v->first < 2 || v->first > 11 || v->second < 1 || v->second > 52)
      return fail("masked:E.M needs E from 2 to 11 and M from 1 to 52");
    p = Precision::masked(v->first, v->second);
  } else if (name.starts_with("fixed:")) {
    const auto v = two_uints(name.substr(6));
    if (!v) return fail("fixed needs two integers, fixed:I.F");
    const int sum = v->first + v->second;
    if (v->first < 1 || (sum != 16 && sum != 32 && sum != 64 && sum != 128))
      return fail("fixed:I.F needs I >= 1 and I+F = 16, 32, 64 or 128");
    p = Precision::fixed(v->first, v->second);
  } else if (name.starts_with("mp:")) {
    const auto v = small_uint(name.substr(3));
    if (!v || *v < kMpMinBits || *v > kMpMaxBits)
      return fail("mp:BITS needs BITS from " + std::to_string(kMpMinBits) + " to " +
                  std::to_string(kMpMaxBits));
    p = Precision::mp(*v);
  } else {
    return fail("unknown precision");
  }
  // The kernels' own limits (a width a kernel does not implement, say).
  if (std::string k = formats::validate(spec_of(*p)); !k.empty()) return fail(k);
  return p;
}

// ---- exact views ----------------------------------------------------------------------------

/// Parses an exact number (see exact_number_error) at bits; false if malformed.
bool set_exact(mpfr_ptr x, const std::string &s) {
  if (!exact_number_error(s).empty()) return false;
  return mpfr_set_str(x, s.c_str(), 0, MPFR_RNDN) == 0;
}

/// Centre and width of req at bits: exact strings, or the view's doubles.
bool view_values(const RenderRequest &req, mpfr_ptr re, mpfr_ptr im, mpfr_ptr width) {
  if (req.exact.empty()) {
    mpfr_set_d(re, req.view.center_re, MPFR_RNDN);
    mpfr_set_d(im, req.view.center_im, MPFR_RNDN);
    mpfr_set_d(width, req.view.width, MPFR_RNDN);
    return true;
  }
  return set_exact(re, req.exact.center_re) && set_exact(im, req.exact.center_im) &&
         set_exact(width, req.exact.width) && mpfr_sgn(width) > 0;
}

/// The largest bits view_bits reports (a width of 2^-16000 or so); deeper views are clamped.
constexpr int kMaxViewBits = 16384;

/// Pixel centres of a view in MPFR: column 0, row 0 and the step between pixels.
struct Grid {
  explicit Grid(mpfr_prec_t b) : bits(b), re0(b), im0(b), step(b) {}
  mpfr_prec_t bits;
  Mp re0, im0, step;
};

std::unique_ptr<Grid> make_grid(const RenderRequest &req, int format_bits) {
  const auto bits = static_cast<mpfr_prec_t>(view_bits(req) + std::max(format_bits, 53) + 64);
  auto g = std::make_unique<Grid>(bits);
  Mp re(bits), im(bits), width(bits), t(bits);
  if (!view_values(req, re.get(), im.get(), width.get()))
    mpfr_set_ui(width.get(), 1, MPFR_RNDN); // unreachable after validation at the edge
  const Viewport &v = req.view;
  mpfr_div_ui(g->step.get(), width.get(), static_cast<unsigned long>(v.pixel_width), MPFR_RNDN);
  // re0 = re - width/2 + step/2
  mpfr_sub(t.get(), width.get(), g->step.get(), MPFR_RNDN);
  mpfr_div_2ui(t.get(), t.get(), 1, MPFR_RNDN);
  mpfr_sub(g->re0.get(), re.get(), t.get(), MPFR_RNDN);
  // im0 = im + (height - 1) * step/2
  mpfr_mul_ui(t.get(), g->step.get(), static_cast<unsigned long>(v.pixel_height - 1), MPFR_RNDN);
  mpfr_div_2ui(t.get(), t.get(), 1, MPFR_RNDN);
  mpfr_add(g->im0.get(), im.get(), t.get(), MPFR_RNDN);
  return g;
}

/// Pixel centre re0 + k * step (sign -1: im0 - k * step) into out.
void centre_at(mpfr_ptr out, mpfr_srcptr origin, mpfr_srcptr step, int k, int sign,
               mpfr_prec_t bits) {
  Mp t(bits);
  mpfr_mul_ui(t.get(), step, static_cast<unsigned long>(k), MPFR_RNDN);
  if (sign > 0)
    mpfr_add(out, origin, t.get(), MPFR_RNDN);
  else
    mpfr_sub(out, origin, t.get(), MPFR_RNDN);
}

/// The native kernels' own double path: doubles hold every pixel centre of req's view.
bool doubles_suffice(const RenderRequest &req) {
  // Tiles to zoom 40 at size 1024 need 50 bits (2 integer bits, 48 for the step), their centres
  // one more: every one is a double. Beyond, centres are computed exactly and rounded once.
  return req.exact.empty() || view_bits(req) <= 50;
}

/// f64 and f32 where doubles do not suffice: each centre rounded once into the format, then the
/// native kernel one pixel at a time.
std::uint64_t native_exact_rows(const RenderRequest &req, Precision p, int row_begin, int row_end,
                                std::span<std::uint32_t> iters, std::span<float> mag2) {
  const int w = req.view.pixel_width;
  const auto g = make_grid(req, precision_bits(p));
  auto rounded = [f32 = p == Precision::F32](mpfr_srcptr x) {
    return f32 ? static_cast<double>(mpfr_get_flt(x, MPFR_RNDN)) : mpfr_get_d(x, MPFR_RNDN);
  };
  std::vector<double> re(static_cast<std::size_t>(w));
  Mp x(g->bits);
  for (int k = 0; k < w; ++k) {
    centre_at(x.get(), g->re0.get(), g->step.get(), k, +1, g->bits);
    re[static_cast<std::size_t>(k)] = rounded(x.get());
  }
  std::uint64_t total = 0;
  for (int r = row_begin; r < row_end; ++r) {
    centre_at(x.get(), g->im0.get(), g->step.get(), r, -1, g->bits);
    const double im = rounded(x.get());
    const auto off = static_cast<std::size_t>(r - row_begin) * static_cast<std::size_t>(w);
    for (int k = 0; k < w; ++k) {
      const std::size_t i = off + static_cast<std::size_t>(k);
      run_kernel({re[static_cast<std::size_t>(k)], 0.0, im, 1, req.max_iter, &iters[i], &mag2[i]},
                 p, req.isa);
      total += iters[i];
    }
  }
  return total;
}

std::uint64_t software_rows(const RenderRequest &req, Precision p, int row_begin, int row_end,
                            std::span<std::uint32_t> iters, std::span<float> mag2) {
  const int w = req.view.pixel_width;
  const auto g = make_grid(req, precision_bits(p));
  MpArray cols(w, g->bits);
  for (int k = 0; k < w; ++k)
    centre_at(cols[k], g->re0.get(), g->step.get(), k, +1, g->bits);
  const auto kernel = formats::make_format_kernel(spec_of(p));
  kernel->set_columns(cols.data(), w);
  Mp im(g->bits);
  std::uint64_t total = 0;
  for (int r = row_begin; r < row_end; ++r) {
    centre_at(im.get(), g->im0.get(), g->step.get(), r, -1, g->bits);
    const auto off = static_cast<std::size_t>(r - row_begin) * static_cast<std::size_t>(w);
    total += kernel->row(im.get(), req.max_iter, iters.data() + off, mag2.data() + off);
  }
  return total;
}

} // namespace

// ---- names ------------------------------------------------------------------------------------

std::string to_string(Precision p) {
  switch (p.kind()) {
  case Precision::Kind::F64:
    return "f64";
  case Precision::Kind::F32:
    return "f32";
  case Precision::Kind::Masked:
    return "masked:" + std::to_string(p.a()) + "." + std::to_string(p.b());
  case Precision::Kind::Fixed:
    return "fixed:" + std::to_string(p.a()) + "." + std::to_string(p.b());
  case Precision::Kind::Posit:
    return "posit" + std::to_string(p.a());
  case Precision::Kind::DD:
    return "dd";
  case Precision::Kind::QD:
    return "qd";
  case Precision::Kind::MP:
    return "mp:" + std::to_string(p.a());
  case Precision::Kind::Auto:
    break;
  }
  return "auto";
}

std::optional<Precision> parse_precision(std::string_view name) {
  return parse_or_reason(name, nullptr);
}

std::string precision_error(std::string_view name) {
  std::string why;
  if (parse_or_reason(name, &why)) return {};
  return why + ": " + printable(name) + " (valid: " + precision_names() + ")";
}

std::vector<std::string> all_precision_names() {
  std::vector<std::string> out;
  for (const char *n : {"f64", "f32", "dd", "qd", "mp:256", "posit8", "posit16", "posit32",
                        "masked:4.50", "masked:8.23", "masked:11.20", "fixed:11.5", "fixed:20.12",
                        "fixed:22.10", "fixed:4.60", "fixed:4.124", "auto"})
    if (parse_precision(n)) out.emplace_back(n);
  return out;
}

std::vector<std::string> precision_forms() {
  return {"f64",
          "f32",
          "masked:E.M (E 2..11, M 1..52)",
          "fixed:I.F (I >= 1, I+F 16, 32, 64 or 128)",
          "posit8",
          "posit16",
          "posit32",
          "dd",
          "qd",
          "mp:BITS (BITS " + std::to_string(kMpMinBits) + ".." + std::to_string(kMpMaxBits) + ")",
          "auto"};
}

// ---- exact views --------------------------------------------------------------------------

std::string exact_number_error(std::string_view s) {
  // [-+]? (digits [. digits?] | . digits) ([eE] [-+]? digits)?  or  [-+]? 0x hex [. hex] [pP] ...
  std::size_t i = 0;
  auto fail = [&s](std::string_view what) {
    return std::string(what) + ": " + printable(s) +
           " (expected a decimal number such as -0.7436438870371587 or 1.5e-30, any length)";
  };
  if (s.empty()) return fail("empty number");
  if (s.size() > 100000) return fail("number longer than 100000 characters");
  if (s[i] == '-' || s[i] == '+') ++i;
  const bool hex = s.substr(i, 2) == "0x" || s.substr(i, 2) == "0X";
  if (hex) i += 2;
  auto is_digit = [hex](char c) {
    return (c >= '0' && c <= '9') || (hex && ((c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F')));
  };
  std::size_t digits = 0;
  while (i < s.size() && is_digit(s[i]))
    ++i, ++digits;
  if (i < s.size() && s[i] == '.') {
    ++i;
    while (i < s.size() && is_digit(s[i]))
      ++i, ++digits;
  }
  if (digits == 0) return fail("no digits in number");
  if (i < s.size() && (hex ? (s[i] == 'p' || s[i] == 'P') : (s[i] == 'e' || s[i] == 'E'))) {
    ++i;
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
    std::size_t e = 0;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9')
      ++i, ++e;
    if (e == 0 || e > 9) return fail("bad exponent in number");
  }
  if (i != s.size()) return fail("not a number");
  return {};
}

// ---- depth, reference, cost --------------------------------------------------------------

int precision_bits(Precision p) noexcept {
  switch (p.kind()) {
  case Precision::Kind::F64:
    return 53;
  case Precision::Kind::F32:
    return 24;
  case Precision::Kind::Auto:
    return 0;
  default:
    return formats::precision_bits(spec_of(p));
  }
}

int view_bits(const RenderRequest &req) {
  Mp re(64), im(64), width(64), step(64);
  if (!view_values(req, re.get(), im.get(), width.get())) return kMaxViewBits;
  mpfr_div_ui(step.get(), width.get(), static_cast<unsigned long>(req.view.pixel_width), MPFR_RNDN);
  // MPFR exponents: x = 0.m * 2^exp. |coordinates| below 2 count as 2 (the set lies within it).
  long mag = 1;
  for (mpfr_srcptr x : {re.get(), im.get()})
    if (mpfr_sgn(x) != 0) mag = std::max<long>(mag, mpfr_get_exp(x));
  const long bits = mag - (mpfr_get_exp(step.get()) - 1);
  return static_cast<int>(std::clamp<long>(bits, 1, kMaxViewBits));
}

Precision auto_precision(const RenderRequest &req) {
  const int need = view_bits(req) + 4;
  if (need <= 53) return Precision::F64;
  if (need <= precision_bits(Precision::DD) && formats::validate(spec_of(Precision::DD)).empty())
    return Precision::DD;
  if (need <= precision_bits(Precision::QD) && formats::validate(spec_of(Precision::QD)).empty())
    return Precision::QD;
  return Precision::mp(std::min(kMpMaxBits, (need + 63) / 64 * 64));
}

Precision resolve_precision(const RenderRequest &req) {
  return req.precision == Precision::Auto ? auto_precision(req) : req.precision;
}

Precision reference_precision(const RenderRequest &req) {
  const int need = view_bits(req) + 32;
  if (need <= precision_bits(Precision::DD) && formats::validate(spec_of(Precision::DD)).empty())
    return Precision::DD;
  return Precision::mp(std::min(kMpMaxBits, (need + 32 + 63) / 64 * 64));
}

double disagreement(std::span<const std::uint32_t> a, std::span<const std::uint32_t> b) noexcept {
  assert(a.size() == b.size());
  const std::size_t n = std::min(a.size(), b.size());
  if (n == 0) return 0.0;
  std::size_t differ = 0;
  for (std::size_t k = 0; k < n; ++k)
    differ += a[k] != b[k];
  return static_cast<double>(differ) / static_cast<double>(n);
}

double iteration_cost_ns(Precision p) noexcept {
  // The native kernels' figures are this project's measured SIMD rates (FACTS.md, ~10 G it/s
  // f64 AVX-512) with a factor 2 for AVX2; the software formats' come from bench_formats.
  switch (p.kind()) {
  case Precision::Kind::F64:
    return 0.2;
  case Precision::Kind::F32:
    return 0.1;
  case Precision::Kind::Auto:
    return 0.2;
  default:
    return formats::iteration_cost_ns(spec_of(p));
  }
}

double estimated_seconds(const RenderRequest &req) {
  const Precision p = resolve_precision(req);
  double ns = iteration_cost_ns(p);
  // f64/f32 beyond doubles' depth run one pixel per kernel call (scalar-like).
  if (p.native() && !doubles_suffice(req)) ns = 3.0;
  return ns * 1e-9 * req.max_iter * static_cast<double>(req.view.pixel_width) *
         static_cast<double>(req.view.pixel_height);
}

// ---- rendering -----------------------------------------------------------------------------

std::uint64_t render_counts(const RenderRequest &req, int row_begin, int row_end,
                            std::span<std::uint32_t> iters, std::span<float> mag2) {
  const Viewport &v = req.view;
  assert(0 <= row_begin && row_begin <= row_end && row_end <= v.pixel_height);
  assert(iters.size() == static_cast<std::size_t>(row_end - row_begin) *
                             static_cast<std::size_t>(v.pixel_width) &&
         mag2.size() == iters.size());
  const Precision p = resolve_precision(req);
  if (is_software(p)) return software_rows(req, p, row_begin, row_end, iters, mag2);
  if (!doubles_suffice(req)) return native_exact_rows(req, p, row_begin, row_end, iters, mag2);
  // render_rows' native path: the same kernel call on the view's doubles.
  std::vector<double> im(static_cast<std::size_t>(row_end - row_begin));
  for (int r = row_begin; r < row_end; ++r)
    im[static_cast<std::size_t>(r - row_begin)] = v.im_at(r);
  run_kernel_rows({v.re_at(0), v.pixel_size(), im.data(), row_end - row_begin, v.pixel_width,
                   req.max_iter, iters.data(), mag2.data()},
                  p, req.isa);
  std::uint64_t total = 0;
  for (const std::uint32_t n : iters)
    total += n;
  return total;
}

namespace detail {

bool use_format_path(const RenderRequest &req) {
  const Precision p = resolve_precision(req);
  return is_software(p) || !doubles_suffice(req) || p != req.precision;
}

RenderStats render_rows_format(const RenderRequest &req, int row_begin, int row_end,
                               std::span<std::uint8_t> out) {
  const std::size_t n = static_cast<std::size_t>(row_end - row_begin) *
                        static_cast<std::size_t>(req.view.pixel_width);
  std::vector<std::uint32_t> iters(n);
  std::vector<float> mag2(n);
  RenderStats stats;
  stats.iterations = render_counts(req, row_begin, row_end, iters, mag2);
  colour_counts(req, iters, mag2, out);
  return stats;
}

} // namespace detail
} // namespace overdrive
