// libFuzzer target: parse_tile_query on arbitrary path parts and parameters. Input: lines
// "Z\nX\nY\nkey=value\n...". Checks that every accepted query satisfies the documented caps and
// round-trips through its canonical spelling, and that every refusal is one printable line.
#include "web/server.hpp"

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace {

#define OVERDRIVE_FUZZ_CHECK(cond) ((cond) ? void() : __builtin_trap())

std::vector<std::string_view> split_lines(std::string_view s) {
  std::vector<std::string_view> out;
  while (true) {
    const auto nl = s.find('\n');
    out.push_back(s.substr(0, nl));
    if (nl == std::string_view::npos) break;
    s.remove_prefix(nl + 1);
  }
  return out;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
  using namespace overdrive;
  const std::string_view in(reinterpret_cast<const char *>(data), size);
  const auto lines = split_lines(in);
  const std::string_view z = lines.size() > 0 ? lines[0] : "";
  const std::string_view x = lines.size() > 1 ? lines[1] : "";
  const std::string_view y = lines.size() > 2 ? lines[2] : "";
  std::multimap<std::string, std::string> params;
  for (std::size_t i = 3; i < lines.size(); ++i) {
    const auto eq = lines[i].find('=');
    params.emplace(std::string(lines[i].substr(0, eq)), eq == std::string_view::npos
                                                            ? std::string()
                                                            : std::string(lines[i].substr(eq + 1)));
  }
  const TileParse p = parse_tile_query(z, x, y, params);
  if (!p.query) {
    OVERDRIVE_FUZZ_CHECK(!p.error.empty());
    OVERDRIVE_FUZZ_CHECK(p.error.size() < 400);
    for (char c : p.error)
      OVERDRIVE_FUZZ_CHECK(c >= 0x20 && c < 0x7f); // one printable line
  } else {
    const TileQuery &q = *p.query;
    OVERDRIVE_FUZZ_CHECK(p.error.empty());
    OVERDRIVE_FUZZ_CHECK(tile_is_valid(q.tile));
    const int s = q.request.view.pixel_width;
    OVERDRIVE_FUZZ_CHECK(s == q.request.view.pixel_height);
    OVERDRIVE_FUZZ_CHECK(s >= Limits::min_tile_size && s <= Limits::max_tile_size);
    OVERDRIVE_FUZZ_CHECK(q.request.max_iter >= 1 &&
                         q.request.max_iter <= Limits::max_tile_iterations);
    OVERDRIVE_FUZZ_CHECK(static_cast<std::uint64_t>(s) * static_cast<std::uint64_t>(s) *
                             static_cast<std::uint64_t>(q.request.max_iter) <=
                         Limits::max_tile_work);
    OVERDRIVE_FUZZ_CHECK(q.request.view == tile_viewport(q.tile, s));
    // The canonical spelling parses to the same query.
    std::multimap<std::string, std::string> canon = {{"iter", std::to_string(q.request.max_iter)},
                                                     {"size", std::to_string(s)}};
    if (q.executor) canon.emplace("executor", std::string(to_string(*q.executor)));
    for (const auto &[k, v] : params)
      if (k == "palette" || k == "precision" || k == "ref" || k == "nonce") canon.emplace(k, v);
    const TileParse again =
        parse_tile_query(std::to_string(q.tile.z), overdrive::to_string(q.tile.x),
                         overdrive::to_string(q.tile.y), canon);
    OVERDRIVE_FUZZ_CHECK(again.query && *again.query == q);
    // Canonical numbers only: the accepted text is exactly the decimal spelling.
    OVERDRIVE_FUZZ_CHECK(z == std::to_string(q.tile.z) && x == overdrive::to_string(q.tile.x) &&
                         y == overdrive::to_string(q.tile.y));
  }
  return 0;
}
