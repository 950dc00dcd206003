// `overdrive serve`: the tile server, until SIGINT/SIGTERM, then a graceful stop.
#include "cli/commands.hpp"
#include "web/server.hpp"

#include <CLI/CLI.hpp>
#include <csignal>
#include <iostream>
#include <pthread.h>

namespace overdrive::cli {
namespace {

struct ServeArgs {
  ServerOptions opt;
  std::string executor = "pool";
  std::string work = "none";
  bool quiet = false;
  int cache_mb = 64;
  bool no_coalesce = false;
};

sigset_t stop_signal_set() noexcept {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  return set;
}

int run_serve(ServeArgs &a) {
  if (auto k = parse_executor_kind(a.executor)) a.opt.executor = *k;
  const auto work = parse_work_spec(a.work);
  if (!work) {
    std::cerr << "overdrive serve: error: --work '" << a.work
              << "' is malformed (expected none, sleep:MS or spin:MS with MS <= 60000)\n";
    return usage_error;
  }
  a.opt.work = *work;
  a.opt.access_log = !a.quiet;
  a.opt.cache_bytes = static_cast<std::size_t>(a.cache_mb) << 20;
  a.opt.coalesce = !a.no_coalesce;

  // main() blocked the stop signals before anything started (threads inherit the mask); one
  // thread waits for them.
  block_stop_signals();
  const sigset_t stop_signals = stop_signal_set();
  std::signal(SIGPIPE, SIG_IGN);

  TileServer server(a.opt);
  try {
    server.start();
  } catch (const std::exception &e) {
    std::cerr << "overdrive serve: error: " << e.what() << "\n";
    return 1;
  }
  std::cout << "Fractal Overdrive serving on " << server.url() << "  (executor "
            << to_string(a.opt.executor) << ", " << server.executor(a.opt.executor).workers()
            << " workers, " << a.opt.io_threads << " I/O threads, work " << to_string(a.opt.work)
            << ", cache " << a.cache_mb << " MiB; Ctrl-C stops)" << std::endl;
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&stop_signals, &sig);
    std::cerr << "received " << (sig == SIGINT ? "SIGINT" : "SIGTERM")
              << ": finishing in-flight tiles\n";
    server.stop();
  });
  server.wait();
  // If the server stopped for another reason, wake the waiter.
  pthread_kill(waiter.native_handle(), SIGTERM);
  waiter.join();
  std::cerr << "stopped\n";
  return 0;
}

} // namespace

void block_stop_signals() noexcept {
  const sigset_t set = stop_signal_set();
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
}

void add_serve_command(CLI::App &app) {
  auto args = std::make_shared<ServeArgs>();
  ServerOptions &o = args->opt;
  auto *cmd =
      app.add_subcommand("serve", "Serve the Mandelbrot set as tiles, with the timing page");
  cmd->add_option("--host", o.host, "Address to listen on (default 127.0.0.1)");
  cmd->add_option("--port", o.port, "Port (default 8080; 0 = any free port)")
      ->check(CLI::Range(0, 65535));
  cmd->add_option("--executor", args->executor,
                  "Default executor: " + executor_kind_names() +
                      " (default pool; a request may pick another with ?executor=)")
      ->check(CLI::IsMember(all_executor_names()));
  cmd->add_option("--workers", o.workers,
                  "Workers per executor (default: number of cores); for inline also its I/O "
                  "threads: a connection holds one of these N seats until it closes")
      ->check(CLI::Range(1, 256));
  cmd->add_option("--io-threads", o.io_threads,
                  "Connection threads, started on demand; each open connection holds one "
                  "(default 1024)")
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--io-queue-limit", o.io_queue_limit,
                  "Connections that may wait for a free connection thread; beyond it new ones "
                  "get 503 at once (default 1024, 0 = unlimited)")
      ->check(CLI::Range(0, 1000000));
  cmd->add_option("--queue-limit", o.queue_limit,
                  "Tiles that may wait per executor before 429 Too Many Requests (0 = unlimited, "
                  "the default)")
      ->check(CLI::Range(0, 1000000));
  cmd->add_option("--replica-id", o.replica_id,
                  "Name of this replica in the X-Overdrive-Replica header and /api/stats "
                  "(default host:port)");
  cmd->add_option("--work", args->work,
                  "Synthetic cost added to every tile: none, sleep:MS or spin:MS (CPU time)");
  cmd->add_flag("--split", o.split, "tbb: split each tile across all its workers");
  cmd->add_option("--keep-alive-timeout", o.keep_alive_timeout_s,
                  "Seconds an idle keep-alive connection holds its I/O thread (default 5)")
      ->check(CLI::Range(0, 300));
  cmd->add_option("--read-timeout", o.read_timeout_s,
                  "Seconds to wait for a request's bytes, and for a new connection's first "
                  "byte (default 5)")
      ->check(CLI::Range(1, 300));
  cmd->add_option("--request-timeout", o.request_timeout_s,
                  "Seconds from a request's first byte until its headers are complete; 408 "
                  "after (default 10; stops slowloris clients)")
      ->check(CLI::Range(1, 300));
  cmd->add_option("--pyramid", o.pyramid_dir,
                  "Serve tiles from this `overdrive pyramid` DIR when present there with the "
                  "request's parameters; render the others live")
      ->check(CLI::ExistingDirectory);
  cmd->add_option("--cache-mb", args->cache_mb,
                  "MiB of encoded tiles kept in memory, least recently used evicted first "
                  "(default 64, 0 = no cache); a request with ?nonce= bypasses it")
      ->check(CLI::Range(0, 65536));
  cmd->add_flag("--no-coalesce", args->no_coalesce,
                "Render every request, even while an identical tile is being rendered (by "
                "default concurrent requests for one tile, any executor, render once)");
  cmd->add_flag("--quiet", args->quiet, "No access log on stderr");
  cmd->callback([args] { std::exit(run_serve(*args)); });
}

} // namespace overdrive::cli
