// libFuzzer target: parse_work_spec. Accepted specs are in range and round-trip through
// to_string; nothing crashes or reads out of bounds.
#include "web/server.hpp"

#include <cstdint>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size) {
  using namespace overdrive;
  const std::string_view in(reinterpret_cast<const char *>(data), size);
  const auto w = parse_work_spec(in);
  if (w) {
    if (w->ms < 0 || w->ms > 60000) __builtin_trap();
    if (w->kind == WorkSpec::Kind::None && w->ms != 0) __builtin_trap();
    const auto again = parse_work_spec(to_string(*w));
    if (!again || !(*again == *w)) __builtin_trap();
  }
  return 0;
}
