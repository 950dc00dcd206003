// `overdrive bench`: drives in-process servers (one per executor) or an external loopback server
// with an arrival pattern over real HTTP/1.1 connections and reports how far each run was from
// the ideal schedule (table on stdout, optional JSON and SVG timeline).
#include "bench/loadgen/loadgen.hpp"
#include "cli/commands.hpp"
#include "web/server.hpp"

#include <CLI/CLI.hpp>
#include <charconv>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <thread>

namespace overdrive::cli {
namespace {

struct BenchArgs {
  std::string scenario = "seed";
  std::string executors = [] {
    std::string all;
    for (const auto &n : all_executor_names())
      all += (all.empty() ? "" : ",") + n;
    return all;
  }();
  std::string url, path_template;
  std::vector<std::string> stats_urls;
  int requests = 0, runs = 0, workers = 0, io_threads = 0;
  std::size_t queue_limit = 0;
  std::string work;
  bool split = false;
  int keep_alive_timeout = 5, iter = 2048, zoom = 2, size = 256;
  std::string rate = "90%";
  double duration = 10, timeout = 30, cost_ms = 0;
  std::uint64_t seed = 1;
  std::string connection = "keep-alive";
  std::string json, svg;
  bool quiet = false;
  // Which options the user gave (CLI11 fills these after parsing).
  std::vector<CLI::Option *> server_only;
  CLI::Option *o_requests, *o_runs, *o_workers, *o_io, *o_work, *o_rate, *o_duration, *o_seed,
      *o_cost, *o_executors, *o_url, *o_template, *o_stats;
  CLI::App *cmd = nullptr;
};

int fail(const std::string &msg) {
  std::cerr << "overdrive bench: error: " << msg << "\n";
  return usage_error;
}

bool writable_target(const std::string &path, std::string &why) {
  const auto parent = std::filesystem::path(path).parent_path();
  if (!parent.empty() && !std::filesystem::is_directory(parent)) {
    why = "directory '" + parent.string() + "' does not exist";
    return false;
  }
  return true;
}

int run_bench_cmd(BenchArgs &a) {
  using namespace overdrive::loadgen;
  std::size_t given = 0;
  for (const CLI::Option *opt : a.cmd->get_options())
    given += opt->count();
  const bool no_arguments = given == 0;

  BenchOptions o;
  const auto scenario = parse_scenario(a.scenario);
  if (!scenario) {
    std::string valid;
    for (const auto &n : all_scenario_names())
      valid += (valid.empty() ? "" : ", ") + n;
    return fail("unknown --scenario '" + a.scenario + "' (valid: " + valid + ")");
  }
  const bool seed = *scenario == Scenario::Seed;
  o.load.scenario = *scenario;
  o.load.requests = a.o_requests->count() ? a.requests : (seed ? 5 : 16);
  // Five runs for seed/burst, as the runs differ; no arguments at all is the one-minute demo.
  o.load.runs = a.o_runs->count()                        ? a.runs
                : no_arguments                           ? 3
                : (seed || *scenario == Scenario::Burst) ? 5
                                                         : 1;
  const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  o.server.workers = a.o_workers->count() ? a.workers : (seed ? 4 : cores);
  if (a.o_io->count()) o.server.io_threads = a.io_threads;
  o.server.queue_limit = a.queue_limit;
  o.server.work = a.o_work->count() ? a.work : (seed ? "sleep:2000" : "none");
  if (!parse_work_spec(o.server.work))
    return fail("--work '" + o.server.work +
                "' is malformed (expected none, sleep:MS or spin:MS, MS <= 60000)");
  o.server.split = a.split;
  o.server.keep_alive_timeout_s = a.keep_alive_timeout;
  o.server.iter = a.iter;
  o.server.size = a.size;
  if (static_cast<std::uint64_t>(a.iter) * static_cast<std::uint64_t>(a.size) *
          static_cast<std::uint64_t>(a.size) >
      Limits::max_tile_work)
    return fail("--iter x --size^2 exceeds the server's work budget (" +
                std::to_string(Limits::max_tile_work) + ")");
  o.load.zoom = a.zoom;
  o.load.duration_s = a.duration;
  o.load.seed = a.seed;
  o.load.timeout_s = a.timeout;
  o.load.close_after = a.connection == "close";
  if (a.o_cost->count()) o.cost_ms = a.cost_ms;

  if (!a.rate.empty() && a.rate.back() == '%') {
    double pct = 0;
    const auto [p, ec] = std::from_chars(a.rate.data(), a.rate.data() + a.rate.size() - 1, pct);
    if (ec != std::errc{} || p != a.rate.data() + a.rate.size() - 1 || !(pct > 0) || pct > 1000)
      return fail("--rate '" + a.rate + "': a percentage of capacity must be in (0, 1000]%");
    o.rate_fraction = pct / 100.0;
  } else {
    double r = 0;
    const auto [p, ec] = std::from_chars(a.rate.data(), a.rate.data() + a.rate.size(), r);
    if (ec != std::errc{} || p != a.rate.data() + a.rate.size() || !(r > 0) || r > 10000)
      return fail("--rate '" + a.rate +
                  "' must be requests per second in (0, 10000] or a percentage like 90%");
    o.load.rate = r;
  }
  if (*scenario != Scenario::Open)
    for (CLI::Option *opt : {a.o_rate, a.o_duration, a.o_seed})
      if (opt->count()) return fail(opt->get_name() + " applies to --scenario open only");
  if (*scenario == Scenario::Open && a.o_requests->count())
    return fail("--requests applies to closed scenarios; open loop uses --rate and --duration");
  if (*scenario == Scenario::Open && o.rate_fraction == std::nullopt &&
      o.load.rate * o.load.duration_s > 100000)
    return fail("--rate x --duration asks for more than 100000 requests");

  if (!a.url.empty()) {
    std::string why;
    const auto ep = parse_loopback_url(a.url, why);
    if (!ep) return fail(why);
    o.url = *ep;
    for (CLI::Option *opt : a.server_only)
      if (opt->count())
        return fail(opt->get_name() +
                    " configures the in-process servers; with --url the server is already running");
    if (a.path_template.empty())
      return fail("--url needs --path-template, e.g. '/tile/2/{x}/{y}.png' or '/anything/{i}.png'");
    for (const std::string &u : a.stats_urls) {
      const auto su = parse_stats_url(u, why);
      if (!su) return fail(why);
      o.stats_urls.push_back(*su);
    }
    // A cluster: N is the sum of the replicas' workers, unless --workers says otherwise.
    if (!o.stats_urls.empty() && a.o_workers->count()) o.model_workers = a.workers;
  } else {
    if (a.o_stats->count())
      return fail("--stats-url reads the replicas behind a balancer: it needs --url");
    o.executors.clear();
    std::string list = a.executors;
    for (std::size_t start = 0; start <= list.size();) {
      const auto comma = list.find(',', start);
      const std::string name =
          list.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
      if (!parse_executor_kind(name))
        return fail("--executors: unknown executor '" + name +
                    "' (valid: " + executor_kind_names() + ")");
      if (std::find(o.executors.begin(), o.executors.end(), name) != o.executors.end())
        return fail("--executors: '" + name + "' given twice");
      o.executors.push_back(name);
      if (comma == std::string::npos) break;
      start = comma + 1;
    }
  }
  if (!a.path_template.empty()) {
    if (std::string why = check_path_template(a.path_template); !why.empty()) return fail(why);
    o.load.path_template = a.path_template;
  }
  for (const std::string *f : {&a.json, &a.svg}) {
    std::string why;
    if (!f->empty() && !writable_target(*f, why)) return fail("cannot write '" + *f + "': " + why);
  }
  if (!a.quiet) o.progress = [](const std::string &line) { std::cerr << line << std::endl; };
  if (no_arguments)
    std::cerr << "overdrive bench: seed scenario (K=5, 4 workers, sleep:2000) on " << a.executors
              << ", 3 runs each (about a minute); see `overdrive bench --help`\n";

  std::signal(SIGPIPE, SIG_IGN);
  BenchReport report;
  try {
    report = run_bench(o);
  } catch (const std::exception &e) {
    std::cerr << "overdrive bench: error: " << e.what() << "\n";
    return 1;
  }
  std::cout << to_table(report);
  if (*scenario != Scenario::Open)
    std::cout
        << "model: T and the tile costs are calibrated serially on the idle server before the "
           "runs (--cost-ms fixes T).\n"
           "  equal-cost (tiles equal within "
        << static_cast<int>(equal_cost_spread * 100)
        << "% apart from the synthetic work): K jobs of cost T on N workers, the i-th at "
           "ceil(i/N)*T"
        << (o.server.split ? " (split, tbb: min(i*T, ceil(i/N)*T unsplit))" : "")
        << "; eff = ideal total latency / measured; ideal = ideal mean latency.\n"
           "  measured-costs: eff = makespan bound max(sum/N, largest cost) / last arrival "
           "(ideal = that bound); ranks compared with the arrival-order list schedule.\n"
           "  eff is over all requests sent: x ok/sent (shed, failed and timed-out requests "
           "never arrived). late = a wave (T, or the largest cost) or more behind its ideal "
           "rank (tolerance "
        << static_cast<int>(late_tolerance_fraction * 100)
        << "%). ERR = model error: eff above 1 + " << model_error_tolerance
        << ", the ideal was no bound; not a result.\n";
  auto write = [](const std::string &path, const std::string &text) {
    std::ofstream f(path, std::ios::binary);
    f << text;
    f.close();
    if (!f) {
      std::cerr << "overdrive bench: error: cannot write " << path << "\n";
      return false;
    }
    return true;
  };
  bool ok = true;
  if (!a.json.empty()) ok = write(a.json, to_json(report)) && ok;
  if (!a.svg.empty()) ok = write(a.svg, to_svg(report)) && ok;
  return ok ? 0 : 1;
}

} // namespace

void add_bench_command(CLI::App &app) {
  auto a = std::make_shared<BenchArgs>();
  auto *cmd = app.add_subcommand(
      "bench", "Arrival-pattern HTTP benchmark: in-process servers per executor (or --url), "
               "runs vs the ideal schedule");
  a->cmd = cmd;
  cmd->add_option("--scenario", a->scenario,
                  "seed (warm keep-alive + K-1 new connections), burst, preconnect, browser (6 "
                  "keep-alive connections), open (Poisson arrivals); default seed")
      ->check(CLI::IsMember(loadgen::all_scenario_names()));
  a->o_executors =
      cmd->add_option("--executors", a->executors,
                      "Comma-separated in-process executors (default " + a->executors + ")");
  a->o_url = cmd->add_option("--url", a->url,
                             "Drive a running loopback server instead, e.g. http://127.0.0.1:8080");
  a->o_stats =
      cmd->add_option("--stats-url", a->stats_urls,
                      "With --url (a balancer): one replica's http://127.0.0.1:PORT[/PREFIX] "
                      "(its PREFIX/api/stats); repeat per replica. Reports per replica and in "
                      "total; N = the sum of their workers")
          ->take_all();
  a->o_template = cmd->add_option("--path-template", a->path_template,
                                  "Request path with {i} {x} {y} {z}, e.g. '/tile/2/{x}/{y}.png'");
  a->o_requests = cmd->add_option("-K,--requests", a->requests,
                                  "Requests per run (default 5 for seed, else 16)")
                      ->check(CLI::Range(1, 1000));
  a->o_runs = cmd->add_option("--runs", a->runs, "Runs (default 5 for seed/burst, else 1)")
                  ->check(CLI::Range(1, 100));
  a->o_workers = cmd->add_option("--workers", a->workers,
                                 "Workers per executor, also N of the model (default 4 for seed, "
                                 "else the number of cores; with --stats-url the replicas' sum)")
                     ->check(CLI::Range(1, 256));
  a->o_io = cmd->add_option("--io-threads", a->io_threads,
                            "Connection threads (default: = workers for inline, 128 for pool/tbb)")
                ->check(CLI::Range(1, 4096));
  auto *ql = cmd->add_option("--queue-limit", a->queue_limit,
                             "Tiles waiting per executor before 429 (default 0 = unlimited)")
                 ->check(CLI::Range(0, 1000000));
  a->o_work = cmd->add_option("--work", a->work,
                              "Synthetic cost per tile: none, sleep:MS, spin:MS (default "
                              "sleep:2000 for seed, else none)");
  auto *split =
      cmd->add_flag("--split", a->split, "tbb splits each tile over all workers (model: i*T/N)");
  auto *ka = cmd->add_option("--keep-alive-timeout", a->keep_alive_timeout,
                             "Server keep-alive timeout in s (default 5)")
                 ->check(CLI::Range(0, 300));
  auto *iter = cmd->add_option("--iter", a->iter, "Iterations per pixel (default 2048)")
                   ->check(CLI::Range(1, Limits::max_tile_iterations));
  cmd->add_option("--zoom", a->zoom, "Zoom of the tiles requested (default 2: 16 tiles)")
      ->check(CLI::Range(0, 40));
  auto *size = cmd->add_option("--size", a->size, "Tile size in pixels (default 256)")
                   ->check(CLI::Range(Limits::min_tile_size, Limits::max_tile_size));
  a->o_rate = cmd->add_option("--rate", a->rate,
                              "Open loop: requests/s, or a share of capacity (workers/T) like 90% "
                              "(default 90%)");
  a->o_duration = cmd->add_option("--duration", a->duration, "Open loop: seconds (default 10)")
                      ->check(CLI::Range(0.1, 600.0));
  a->o_seed =
      cmd->add_option("--seed", a->seed, "Open loop: seed of the arrival times (default 1)");
  cmd->add_option("--timeout", a->timeout, "Bound on each request in s (default 30)")
      ->check(CLI::Range(0.1, 600.0));
  cmd->add_option("--connection", a->connection,
                  "keep-alive (default: connections stay open until the run ends) or close "
                  "(close after each response)")
      ->check(CLI::IsMember({"keep-alive", "close"}));
  a->o_cost =
      cmd->add_option("--cost-ms", a->cost_ms,
                      "Fix T of the model (serial cost of one tile) instead of calibrating it")
          ->check(CLI::Range(0.001, 600000.0));
  cmd->add_option("--json", a->json, "Write everything as JSON to this file");
  cmd->add_option("--svg", a->svg, "Write a timeline picture to this file");
  cmd->add_flag("--quiet", a->quiet, "No progress lines on stderr");
  a->server_only = {a->o_executors, a->o_io, ql, a->o_work, ka, iter, size};
  (void)split;
  cmd->callback([a] { std::exit(run_bench_cmd(*a)); });
}

} // namespace overdrive::cli
