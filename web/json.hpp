// The one small JSON writer of the project: the server's /api/stats and /api/trace and the
// bench's report use it, so escaping and number formats are written once. Header-only.
#pragma once

#include <array>
#include <charconv>
#include <cmath>
#include <concepts>
#include <cstdio>
#include <optional>
#include <string>
#include <string_view>

namespace overdrive {

/// Appends JSON text to a string: open/close containers, key, value, field (key + value).
/// Commas are placed automatically. Not thread-safe; one writer per document.
class JsonWriter {
public:
  /// decimals < 0: doubles in their shortest round-trip form; otherwise with that many decimals.
  explicit JsonWriter(int decimals = -1) : decimals_(decimals) {}

  /// The document so far.
  const std::string &str() const noexcept { return out_; }
  std::string take() &&noexcept { return std::move(out_); }

  /// Opens '{' or '['.
  JsonWriter &open(char bracket) {
    comma();
    out_ += bracket;
    fresh_ = true;
    return *this;
  }
  /// Closes '}' or ']'.
  JsonWriter &close(char bracket) {
    out_ += bracket;
    fresh_ = false;
    return *this;
  }
  JsonWriter &key(std::string_view k) {
    comma();
    string(k);
    out_ += ':';
    fresh_ = true;
    return *this;
  }
  JsonWriter &value(std::string_view s) {
    comma();
    string(s);
    return *this;
  }
  JsonWriter &value(const char *s) { return value(std::string_view(s)); }
  JsonWriter &value(const std::string &s) { return value(std::string_view(s)); }
  JsonWriter &value(bool v) { return raw_value(v ? "true" : "false"); }
  template <std::integral T>
  requires(!std::same_as<T, bool>) JsonWriter &value(T v) {
    std::array<char, 24> buf{};
    const auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), v);
    return raw_value(std::string_view(buf.data(), static_cast<std::size_t>(end - buf.data())));
  }
  /// As the constructor chose; JSON has no inf/nan, so those become null.
  JsonWriter &value(double v) {
    if (!std::isfinite(v)) return raw_value("null");
    if (decimals_ >= 0) return fixed(v, decimals_);
    std::array<char, 32> buf{};
    const auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), v);
    return raw_value(std::string_view(buf.data(), static_cast<std::size_t>(end - buf.data())));
  }
  /// v with a fixed number of decimals (e.g. milliseconds to the microsecond); null if not finite.
  JsonWriter &fixed(double v, int decimals) {
    if (!std::isfinite(v)) return raw_value("null");
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    return raw_value(buf);
  }
  template <typename T> JsonWriter &value(const std::optional<T> &v) {
    return v ? value(*v) : raw_value("null");
  }
  template <typename T> JsonWriter &field(std::string_view k, const T &v) {
    key(k);
    return value(v);
  }
  /// Inserts already-serialised JSON as one value.
  JsonWriter &raw_value(std::string_view json) {
    comma();
    out_ += json;
    return *this;
  }

private:
  void comma() {
    if (!fresh_ && !out_.empty()) out_ += ',';
    fresh_ = false;
  }
  void string(std::string_view s) {
    static constexpr char hex[] = "0123456789abcdef";
    out_ += '"';
    for (const char c : s) {
      const auto u = static_cast<unsigned char>(c);
      if (c == '"' || c == '\\') {
        out_ += '\\';
        out_ += c;
      } else if (c == '\n') {
        out_ += "\\n";
      } else if (c == '\t') {
        out_ += "\\t";
      } else if (u < 0x20) {
        out_ += "\\u00";
        out_ += hex[u >> 4];
        out_ += hex[u & 0xf];
      } else {
        out_ += c; // UTF-8 bytes pass through unchanged
      }
    }
    out_ += '"';
  }

  std::string out_;
  bool fresh_ = true;
  int decimals_;
};

} // namespace overdrive
