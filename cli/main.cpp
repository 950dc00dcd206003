// overdrive: render the Mandelbrot set from the command line, serve it as tiles, and benchmark
// executor designs against each other.
#include "cli/commands.hpp"

#include <CLI/CLI.hpp>
#include <iostream>
#include <string>
#include <string_view>

namespace {

// CLI11 only says "a subcommand is required" for `overdrive frobnicate`; name the culprit.
bool is_known_command(const CLI::App &app, const std::string &word, std::string &names) {
  bool known = false;
  for (const auto *sub : app.get_subcommands({})) {
    names += (names.empty() ? "" : ", ") + sub->get_name();
    known = known || sub->get_name() == word;
  }
  return known;
}

} // namespace

int main(int argc, char **argv) {
  // Before anything else: a SIGTERM in the first instants of `serve` must still stop it
  // gracefully (exit 0), not kill it (143).
  if (argc > 1 && std::string_view(argv[1]) == "serve") overdrive::cli::block_stop_signals();
  CLI::App app{"Fractal Overdrive: where does a CPU-heavy server's time go?\n"
               "Renders the Mandelbrot set through interchangeable executors.",
               "overdrive"};
  app.require_subcommand(1);
  overdrive::cli::add_render_command(app);
  overdrive::cli::add_serve_command(app);
  overdrive::cli::add_bench_command(app);
  overdrive::cli::add_pyramid_command(app);
  std::string names;
  if (argc > 1 && argv[1][0] != '-' && !is_known_command(app, argv[1], names)) {
    std::cerr << "overdrive: unknown command '" << argv[1] << "' (valid: " << names << ")\n";
    return overdrive::cli::usage_error;
  }
  CLI11_PARSE(app, argc, argv);
  return 0;
}
