// Small text helpers shared by the load generator's driver and its reports.
#pragma once

#include <cstdio>
#include <string>

namespace overdrive::loadgen::detail {

/// printf-style formatting of one number, e.g. fmt("%.1f", 2.345) == "2.3".
inline std::string fmt(const char *format, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, format, v);
  return buf;
}

} // namespace overdrive::loadgen::detail
