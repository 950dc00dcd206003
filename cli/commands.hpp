// Subcommands of the overdrive executable; each registers its options and callback on the app.
#pragma once

namespace CLI {
class App;
}

namespace overdrive::cli {

/// `overdrive render`: writes a PNG of a view or a tile.
void add_render_command(CLI::App &app);
/// `overdrive serve`: the HTTP tile server.
void add_serve_command(CLI::App &app);
/// Blocks SIGINT and SIGTERM in the calling thread and every thread it starts later, so that
/// `serve` receives them through sigwait (a graceful stop) however early they arrive. main()
/// calls it first thing for `serve`.
void block_stop_signals() noexcept;
/// `overdrive pyramid`: every tile of zoom levels A..B to DIR/z/x/y.png, across MPI ranks.
void add_pyramid_command(CLI::App &app);
/// `overdrive bench`: arrival-pattern HTTP benchmark of the executors.
void add_bench_command(CLI::App &app);

/// Exit status for a usage error detected after parsing (CLI11 uses its own codes for parse
/// errors).
inline constexpr int usage_error = 2;

} // namespace overdrive::cli
