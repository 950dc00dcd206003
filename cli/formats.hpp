// `overdrive render --precision a,b,c`: the number-format study from the CLI (cli/formats.cpp).
#pragma once

#include "render/render.hpp"

#include <string>

namespace overdrive::cli {

/// CLI11 validator of --precision: empty when every comma-separated name parses, else the first
/// bad name's reason with the valid forms.
std::string precision_list_error(std::string &value);

struct CompareOptions {
  std::string executor = "pool";
  int workers = 0;
  bool stats = false; ///< one JSON line per format on stderr
  bool json = false;  ///< one JSON object on stdout
};

/// Renders base in each format of the comma-separated list and in the reference format for its
/// depth; writes OUT-<name>.png and OUT-<name>-diff.png per format (OUT is out without .png;
/// ':' and '.' in names become '_'). Returns the exit status.
int run_compare(const RenderRequest &base, const std::string &formats, const std::string &out,
                const CompareOptions &options);

} // namespace overdrive::cli
