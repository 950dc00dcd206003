// Public interface of the HTTP arrival-pattern load generator behind `overdrive bench`: scenario
// drivers over real HTTP/1.1 connections, the ideal-arrival model, and the table/JSON/SVG reports.
// No third-party headers here: the HTTP client and the in-process servers stay in the .cpp files.
#pragma once

#include "executors/executor.hpp"

#include <chrono>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace overdrive::loadgen {

/// The one clock of every timestamp here (CLOCK_MONOTONIC on Linux, shared with the server).
using Clock = std::chrono::steady_clock;

/// Version of the JSON written by to_json(const BenchReport&); bump on incompatible changes.
/// Version 2: counts sent/answered/shed/failed, efficiency over all requests sent, the serial
/// calibration, the model used and the model-error flag. Fields added since, without a bump:
/// server.cpu_ms and server.runq_ms per request; with --stats-url, "replica" per request and
/// "replicas" per executor and per run.
inline constexpr int json_schema_version = 2;

/// Fraction of a wave subtracted from it when deciding whether a request was needlessly late.
inline constexpr double late_tolerance_fraction = 0.25;
/// An efficiency above 1 + this is not a result but a model error: the ideal was not a bound.
/// Covers calibration noise on a shared machine (a serial tile measured a few % dearer than the
/// same tile during the run).
inline constexpr double model_error_tolerance = 0.10;
/// Calibrated tiles count as equal when the part of their cost that depends on the tile (cost
/// minus the synthetic work, which is the same for every tile) spreads by at most this fraction
/// of the median cost: the equal-cost model applies; beyond it the measured-costs model does.
inline constexpr double equal_cost_spread = 0.25;

/// How requests arrive (see bench/README.md for the exact choreography of each).
enum class Scenario { Seed, Burst, Preconnect, Browser, Open };
/// "seed", "burst", "preconnect", "browser", "open".
std::string_view to_string(Scenario s) noexcept;
/// nullopt for an unknown name.
std::optional<Scenario> parse_scenario(std::string_view name) noexcept;
/// Every scenario name, in a fixed order (CLI choices).
std::vector<std::string> all_scenario_names();

/// Which connection carried a request.
enum class ConnKind { Warm, New, Preconnected, Reused };
/// "warm", "new", "preconnected", "reused".
std::string_view to_string(ConnKind k) noexcept;

// ---------------------------------------------------------------------------------------------
// Pure helpers (no I/O): the model, statistics, parsing.

/// Ideal arrival times (ms after release), ascending, of k equal jobs of serial cost t_ms on
/// `workers` workers: the i-th (1-based) at ceil(i/N)*T; with split (one tile spread over all N
/// workers, one tile at a time) at i*T/N.
std::vector<double> ideal_arrivals(int k, int workers, double t_ms, bool split);
/// The length of one wave of the model: T, or T/N with split.
double wave_ms(int workers, double t_ms, bool split) noexcept;
/// Ideal arrivals with --split given the calibrated costs of one tile: `wall_ms` alone on the idle
/// server (split over the workers) and `serial_ms` unsplit on one worker. The better of the two
/// ways to use the workers, rank by rank: one tile at a time (i*wall) or N tiles at a time
/// (ceil(i/N)*serial). The synthetic work and the encode are not split, so wall is not serial/N.
std::vector<double> ideal_arrivals_split(int k, int workers, double wall_ms, double serial_ms);
/// sum(ideal) / sum(measured): 1.0 = ideal, lower = worse. 0 when measured sums to 0.
double efficiency(const std::vector<double> &ideal, const std::vector<double> &measured);
/// Efficiency over all `sent` requests: the answered ones' ratio (ideal of their ranks, or their
/// own makespan bound, over what they took) times answered / sent. A shed, failed or timed-out
/// request never arrived: it takes no work and no rank from the answered ones, and counts as
/// efficiency 0 in the average. 0 when nothing was sent or answered.
double efficiency_over_sent(double answered_ratio, int answered, int sent) noexcept;
/// Greedy list scheduling in arrival order: job j (in the given order) starts on the worker that
/// frees first, as a FIFO executor with `workers` workers runs it. Returns each job's completion.
std::vector<double> list_schedule(const std::vector<double> &costs, int workers);
/// Lower bound on the makespan of these jobs on `workers` workers: max(sum / N, largest).
double makespan_lower_bound(const std::vector<double> &costs, int workers);
/// Whether an efficiency is beyond what the model allows (> 1 + model_error_tolerance).
bool is_model_error(double efficiency) noexcept;
/// For the measured latencies (any order), whether each was needlessly late: with the latencies
/// sorted ascending and paired by rank with the ascending ideal arrivals, the i-th is late when
/// latency_i - ideal_i >= wave - tolerance. Returned in the order of `measured`. Sizes must match.
std::vector<bool> needlessly_late(const std::vector<double> &measured,
                                  const std::vector<double> &ideal, double wave, double tolerance);
/// Nearest-rank percentile (p in [0, 100]) of unsorted values; nullopt when empty.
std::optional<double> percentile(std::vector<double> values, double p);
/// Median (mean of the two middle values for an even count); nullopt when empty.
std::optional<double> median(std::vector<double> values);
/// Poisson arrival times in seconds in [0, duration) at `rate` per second, from a fixed-seed
/// mt19937_64 with a hand-written inverse CDF (so the same seed gives the same schedule
/// everywhere).
std::vector<double> poisson_arrivals(double rate, double duration_s, std::uint64_t seed);

/// Durations (ms) from a Server-Timing header; a metric missing from the header stays nullopt.
struct ServerTiming {
  std::optional<double> io, queue, render, encode, work;
  /// Of render: CPU time (over every thread that rendered) and run-queue wait (runnable, no
  /// core free; absent where the server's kernel does not report it).
  std::optional<double> cpu, runq;
};
/// Parses "io;dur=1.0;desc=\"..\", queue;dur=2, render;dur=3, encode;dur=4[, work;dur=5],
/// cpu;dur=6[, runq;dur=7]" (names from web/wire.hpp).
/// Unknown metrics and malformed entries are ignored.
ServerTiming parse_server_timing(std::string_view header);

/// A loopback HTTP endpoint.
struct Endpoint {
  std::string host = "127.0.0.1"; ///< A dotted IPv4 address in 127.0.0.0/8
  int port = 0;
};
/// Parses http://HOST:PORT[/] where HOST is localhost or 127.x.y.z. On failure returns nullopt
/// and sets error to a one-line reason (non-loopback hosts are refused by design).
std::optional<Endpoint> parse_loopback_url(std::string_view url, std::string &error);

/// Where one replica's /api/stats is read: an endpoint and a path prefix ("" or "/r/a": the
/// counters at PREFIX/api/stats, e.g. through a balancer that routes a per-replica prefix).
struct StatsUrl {
  Endpoint endpoint;
  std::string prefix; ///< Empty, or starts with '/' and does not end with one
  std::string url;    ///< As given (for reports)
};
/// Parses http://HOST:PORT[/PREFIX] (loopback as parse_loopback_url). nullopt + error on failure.
std::optional<StatsUrl> parse_stats_url(std::string_view url, std::string &error);
/// Checks a path template: starts with '/', no spaces or control characters, and placeholders
/// only among {i} {x} {y} {z}. Returns an empty string if fine, else the reason.
std::string check_path_template(std::string_view tmpl);
/// Expands {i} (request index), and {z} {x} {y}: the i-th tile of zoom z in row-major order,
/// wrapping around the 4^z tiles.
std::string expand_path(std::string_view tmpl, int i, int zoom);

// ---------------------------------------------------------------------------------------------
// Measurements.

/// One request. All times are ms after the run's release instant, on Clock; nullopt when the
/// step did not happen (e.g. no connect on a reused connection, no first byte after a failure).
struct RequestRecord {
  int index = 0; ///< Order of the request in the scenario (path index)
  std::string path;
  ConnKind connection = ConnKind::New;
  double scheduled_ms = 0; ///< When the scenario wanted it sent (0, or the open-loop arrival)
  std::optional<double> connect_start_ms, connected_ms; ///< Only for connections opened for it
  std::optional<double> sent_ms, first_byte_ms, done_ms;
  int status = 0;    ///< 0 = no response
  std::string error; ///< Transport error or timeout, empty if none
  ServerTiming server;
  std::string executor;  ///< X-Overdrive-Executor, if sent
  std::string replica;   ///< X-Overdrive-Replica, if sent: the replica that answered
  int worker = -1;       ///< X-Overdrive-Worker, if sent
  std::size_t bytes = 0; ///< Body bytes
  // Filled by analyze_run:
  std::optional<double> cost_ms;  ///< Calibrated serial cost of this path (measured-costs model)
  std::optional<double> ideal_ms; ///< Ideal arrival of the same rank (successful requests)
  bool late = false;              ///< Needlessly late (see needlessly_late)

  bool ok() const noexcept { return error.empty() && status >= 200 && status < 300; }
  /// Shed by the server: 429 or 503 (and no transport error).
  bool shed() const noexcept { return error.empty() && (status == 429 || status == 503); }
  /// done - scheduled, for a successful request.
  std::optional<double> latency_ms() const;
};

/// Counters sampled from a server's /api/stats (core-seconds, cumulative).
struct IdleSample {
  double executor_seconds = 0; ///< idle_while_waiting_seconds of the executor under test
  double io_seconds = 0;       ///< io.idle_while_waiting_seconds
};

/// One replica of a cluster behind a balancer (--stats-url), as read before the runs.
struct ReplicaInfo {
  std::string id;        ///< X-Overdrive-Replica of its /api/stats answer (else the URL)
  std::string stats_url; ///< As given
  int workers = 0;       ///< options.workers of its /api/stats
};

/// One replica's share of one run.
struct ReplicaRun {
  std::string id;
  int tiles = 0; ///< Requests answered by it (any status), by X-Overdrive-Replica
  int ok = 0;    ///< Of which 2xx
  /// Delta of its /api/stats over the run (the executor that served the run's tiles); nullopt
  /// when a sample is missing.
  std::optional<double> idle_executor_s, idle_io_s;
};

/// The calibrated cost of one tile path (ms): median of serial requests on the idle server.
struct TileCost {
  std::string path;
  double wall_ms = 0;   ///< Alone on the idle server, as configured (split over N with --split)
  double serial_ms = 0; ///< On one worker: = wall without split; with split work + encode +
                        ///< N x (render - work), the split render counted on every worker
  double work_ms = 0;   ///< Of which synthetic work (Server-Timing "work"), the same for every tile
  /// The fastest whole request (client latency on the warm connection: render + encode + one
  /// HTTP exchange; serial: with the split render counted on every worker), the per-tile cost of
  /// the measured-costs model. The fastest, because noise on a shared machine only adds time and
  /// a sub-ms tile's median of a few samples was up to 10x its undisturbed cost; the whole
  /// request, because for sub-ms tiles the HTTP exchange costs as much as the tile.
  double best_wall_ms = 0, best_serial_ms = 0;
  int samples = 0;
};

/// T, measured before the runs on the idle server, one request at a time on one keep-alive
/// connection, from the same path template (same tile parameters) the runs use.
struct Calibration {
  std::vector<TileCost> tiles; ///< One per distinct path sampled, in path order
  int paths = 0;               ///< Distinct paths of the run (tiles.size() may be fewer)
  int samples = 0;
  double wall_ms = 0, serial_ms = 0; ///< Medians over all samples: T of the equal-cost model
  std::string source;                ///< "server-timing" (render + encode) or "latency"
  double elapsed_ms = 0;
  bool split = false; ///< Calibrated on a server that splits tiles
  /// The cost of a path: its own, or the median for a path not sampled.
  const TileCost *find(std::string_view path) const;
  /// Whether the sampled tiles are equal: max - min of (serial - work) <= equal_cost_spread x
  /// the median serial cost (load on the machine stretches the synthetic work, not the tile).
  bool equal_costs() const;
};

/// One run of a scenario, measured and analysed.
struct RunResult {
  int run = 1;                 ///< 1-based
  std::int64_t release_ns = 0; ///< The release instant, ns since Clock's epoch
  std::vector<RequestRecord> requests;
  // Closed scenarios (all but open):
  std::string model;             ///< "equal-cost" or "measured-costs"; empty = no model
  std::optional<double> cost_ms; ///< Equal-cost: T (the wall time of one tile alone)
  std::string cost_source;       ///< "cost-ms", "calibration" (serial, idle server)
  std::optional<double> wave_ms; ///< T (equal-cost) or the largest tile cost (measured-costs)
  std::optional<double> first_ms, last_ms, mean_ms;
  std::optional<double> ideal_total_ms, measured_total_ms;
  /// Measured-costs: bound on the makespan of the answered tiles, max(sum / N, largest); the
  /// same over all tiles sent; the arrival-order list schedule of all tiles sent.
  std::optional<double> makespan_bound_ms, makespan_bound_all_ms, list_makespan_ms;
  /// Efficiency over all requests sent (efficiency_over_sent); nullopt on a model error.
  std::optional<double> efficiency;
  std::optional<double> raw_efficiency;        ///< The same number, also when it is a model error
  bool model_error = false;                    ///< raw_efficiency > 1 + model_error_tolerance
  int late = 0;                                ///< Needlessly late requests
  int sent = 0;                                ///< Requests in the run
  int succeeded = 0, rejected = 0, failed = 0; ///< 2xx; shed (429/503); everything else
  // Open loop:
  std::optional<double> p50_ms, p90_ms, p99_ms, throughput_rps, offered_rps;
  double max_send_lag_ms = 0; ///< Worst (sent - scheduled) of the generator itself
  // Our server only:
  /// Delta of /api/stats over the run; with --stats-url the sum over every replica (nullopt if
  /// any replica's sample is missing: a partial sum would pass for the cluster's).
  std::optional<double> idle_executor_s, idle_io_s;
  /// With --stats-url: one per replica (in --stats-url order), then any replica that answered
  /// tiles but was not given (its idle counters unknown), then "" for answers without the header.
  std::vector<ReplicaRun> replicas;
};

/// Parameters of the load (the client side).
struct LoadSpec {
  Scenario scenario = Scenario::Seed;
  int requests = 5; ///< K (closed scenarios)
  int runs = 5;
  double rate = 10;         ///< Open loop: arrivals per second
  double duration_s = 10;   ///< Open loop
  std::uint64_t seed = 1;   ///< Open loop
  double timeout_s = 30;    ///< Bound on each request, from its scheduled time
  bool close_after = false; ///< Close each released request's connection after its response
  int browser_connections = 6;
  std::string warmup_path;   ///< Seed: the warm-up request; empty = the first tile path
  std::string path_template; ///< With {i} {x} {y} {z}
  int zoom = 2;              ///< For {x} {y} {z}
};

/// How the model is applied to a run.
struct ModelSpec {
  int workers = 4;
  bool split = false;
  std::optional<double> cost_ms;          ///< Fixes T (serial cost, equal-cost model)
  std::optional<Calibration> calibration; ///< Else T / the tile costs from here
};

/// Runs one run of spec against endpoint and returns the raw records (no analysis). Every
/// connection and the run are bounded by spec.timeout_s. Throws std::runtime_error if the
/// scenario cannot start (e.g. the seed warm-up request fails).
RunResult run_scenario_once(const Endpoint &endpoint, const LoadSpec &spec, int run);
/// Measures tile costs serially on the idle server: every distinct path of indices 0..count-1
/// once, in order, then more rounds: 5 in all, or 3 when they took a second or more. It stops
/// early once 3 s have passed and at least 3 samples are in, if every path has one or the samples
/// so far agree within 5% (then the unsampled paths are taken to cost the median). Throws
/// std::runtime_error when a request fails.
Calibration calibrate(const Endpoint &endpoint, const LoadSpec &spec, int count, int workers,
                      bool split);
/// Fills the counts, then the model fields (closed scenarios, needs model.cost_ms or
/// model.calibration) or the percentiles (open) of a run.
void analyze_run(RunResult &run, Scenario scenario, const ModelSpec &model, double duration_s);

/// Extracts the idle-while-waiting counters of `executor` (and io) from /api/stats JSON.
std::optional<IdleSample> parse_idle_sample(std::string_view stats_json, std::string_view executor);
/// options.workers of /api/stats JSON (the workers of the server's default executor).
std::optional<int> parse_stats_workers(std::string_view stats_json);
/// The workers of a cluster: the sum of its replicas' workers.
int cluster_workers(const std::vector<ReplicaInfo> &replicas) noexcept;
/// Fills run.replicas and the run's idle totals from the records' X-Overdrive-Replica and each
/// replica's /api/stats JSON before and after the run (same order as `replicas`; nullopt = not
/// read). A replica's idle is read for the executor that served its tiles, or, for a replica
/// that served none, the executor that served most of the run's tiles. The totals are the sums
/// of the executor and of the io idle over all replicas.
void attribute_replicas(RunResult &run, const std::vector<ReplicaInfo> &replicas,
                        const std::vector<std::optional<std::string>> &before,
                        const std::vector<std::optional<std::string>> &after);

// ---------------------------------------------------------------------------------------------
// The whole benchmark.

/// Options of the in-process servers (ignored for an external --url).
struct ServerSpec {
  int workers = 4;
  std::optional<int> io_threads; ///< nullopt = workers for inline, 128 for pool/tbb
  std::size_t queue_limit = 0;
  std::string work = "sleep:2000"; ///< none, sleep:MS or spin:MS
  bool split = false;
  int keep_alive_timeout_s = 5;
  int iter = 2048;
  int size = 256;
};

struct BenchOptions {
  LoadSpec load;
  ServerSpec server;
  std::vector<std::string> executors = all_executor_names();
  std::optional<Endpoint> url; ///< Drive this server instead of in-process ones
  /// With url: each replica's /api/stats (a cluster behind the balancer at url).
  std::vector<StatsUrl> stats_urls;
  /// With stats_urls: N of the model instead of the sum of the replicas' workers.
  std::optional<int> model_workers;
  std::optional<double> cost_ms;
  std::optional<double> rate_fraction; ///< Open loop: rate as a fraction of capacity (workers/T)
  std::function<void(const std::string &)> progress; ///< One line per run, e.g. to stderr
};

/// Everything a bench produced, per executor (or one entry for an external server).
struct ExecutorResult {
  std::string executor; ///< "inline", "tbb", "pool" or "external"
  int workers = 0;
  std::optional<int> io_threads;
  std::string path_template;
  /// Open loop: workers / T, calibrated once on the first target (every executor then gets the
  /// same rate, hence the same arrival schedule).
  std::optional<double> capacity_rps;
  std::optional<double> rate; ///< Open loop: the rate used
  bool split = false;         ///< The model's split (only tbb splits, or an external server)
  std::optional<Calibration> calibration;
  std::vector<ReplicaInfo> replicas; ///< With --stats-url, in that order
  std::vector<RunResult> runs;
};

struct BenchReport {
  BenchOptions options;
  std::string target; ///< "in-process" or the URL
  std::vector<ExecutorResult> executors;
};

/// Runs the whole benchmark. Throws std::runtime_error with a one-line reason on failure.
BenchReport run_bench(const BenchOptions &options);

/// One line on a calibration: samples, T, the spread of tile costs and the model it selects.
std::string calibration_line(const Calibration &calibration);
/// Where the answered tiles' render time went, over all runs of one executor: "render R ms =
/// cpu C ms (P%) + runq Q ms (P%) + other". "-" for runq when the server did not report it;
/// empty when no request carried render and cpu.
std::string render_split_line(const ExecutorResult &result);
/// The readable table printed on stdout.
std::string to_table(const BenchReport &report);
/// Everything, as JSON (schema in bench/README.md; field "schema_version").
std::string to_json(const BenchReport &report);
/// A timeline: one panel per executor (its median-efficiency run), one row per request,
/// coloured by phase, with ideal arrival marks.
std::string to_svg(const BenchReport &report);

} // namespace overdrive::loadgen
