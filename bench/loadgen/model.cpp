// The pure part of the load generator: the ideal-arrival models (equal costs, measured costs),
// efficiency over all requests sent and lateness, percentiles, the Poisson schedule, and parsing
// of Server-Timing, URLs and path templates.
#include "bench/loadgen/loadgen.hpp"
#include "web/wire.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <functional>
#include <iterator>
#include <numeric>
#include <queue>
#include <random>
#include <stdexcept>

namespace overdrive::loadgen {

namespace {
// The one list of scenario names: --scenario, its help text and the reports derive from it.
constexpr std::array<std::pair<Scenario, std::string_view>, 5> scenario_names{{
    {Scenario::Seed, "seed"},
    {Scenario::Burst, "burst"},
    {Scenario::Preconnect, "preconnect"},
    {Scenario::Browser, "browser"},
    {Scenario::Open, "open"},
}};
} // namespace

std::string_view to_string(Scenario s) noexcept {
  for (const auto &[value, name] : scenario_names)
    if (value == s) return name;
  return "?";
}

std::optional<Scenario> parse_scenario(std::string_view name) noexcept {
  for (const auto &[value, n] : scenario_names)
    if (n == name) return value;
  return std::nullopt;
}

std::vector<std::string> all_scenario_names() {
  std::vector<std::string> out;
  for (const auto &[value, name] : scenario_names)
    out.emplace_back(name);
  return out;
}

std::string_view to_string(ConnKind k) noexcept {
  switch (k) {
  case ConnKind::Warm:
    return "warm";
  case ConnKind::New:
    return "new";
  case ConnKind::Preconnected:
    return "preconnected";
  case ConnKind::Reused:
    return "reused";
  }
  return "?";
}

std::vector<double> ideal_arrivals(int k, int workers, double t_ms, bool split) {
  if (k < 0 || workers < 1 || !(t_ms >= 0))
    throw std::invalid_argument("ideal_arrivals: need k >= 0, workers >= 1, T >= 0");
  std::vector<double> out;
  out.reserve(static_cast<std::size_t>(k));
  for (int i = 1; i <= k; ++i) {
    if (split)
      out.push_back(i * t_ms / workers);
    else
      out.push_back(((i + workers - 1) / workers) * t_ms);
  }
  return out;
}

double wave_ms(int workers, double t_ms, bool split) noexcept {
  return split ? t_ms / std::max(1, workers) : t_ms;
}

std::vector<double> ideal_arrivals_split(int k, int workers, double wall_ms, double serial_ms) {
  if (k < 0 || workers < 1 || !(wall_ms >= 0) || !(serial_ms >= 0))
    throw std::invalid_argument("ideal_arrivals_split: need k >= 0, workers >= 1, costs >= 0");
  std::vector<double> out;
  out.reserve(static_cast<std::size_t>(k));
  for (int i = 1; i <= k; ++i)
    out.push_back(std::min(i * wall_ms, ((i + workers - 1) / workers) * serial_ms));
  return out;
}

double efficiency(const std::vector<double> &ideal, const std::vector<double> &measured) {
  const double m = std::accumulate(measured.begin(), measured.end(), 0.0);
  if (m <= 0) return 0.0;
  return std::accumulate(ideal.begin(), ideal.end(), 0.0) / m;
}

double efficiency_over_sent(double answered_ratio, int answered, int sent) noexcept {
  if (sent <= 0 || answered <= 0) return 0.0;
  return answered_ratio * std::min(answered, sent) / sent;
}

std::vector<double> list_schedule(const std::vector<double> &costs, int workers) {
  if (workers < 1) throw std::invalid_argument("list_schedule: need workers >= 1");
  // Free times of the workers, earliest first.
  std::priority_queue<double, std::vector<double>, std::greater<>> free_at;
  for (int w = 0; w < workers; ++w)
    free_at.push(0.0);
  std::vector<double> done;
  done.reserve(costs.size());
  for (double c : costs) {
    const double start = free_at.top();
    free_at.pop();
    done.push_back(start + c);
    free_at.push(done.back());
  }
  return done;
}

double makespan_lower_bound(const std::vector<double> &costs, int workers) {
  if (workers < 1) throw std::invalid_argument("makespan_lower_bound: need workers >= 1");
  if (costs.empty()) return 0.0;
  return std::max(std::accumulate(costs.begin(), costs.end(), 0.0) / workers,
                  *std::max_element(costs.begin(), costs.end()));
}

bool is_model_error(double efficiency) noexcept {
  return efficiency > 1.0 + model_error_tolerance;
}

std::vector<bool> needlessly_late(const std::vector<double> &measured,
                                  const std::vector<double> &ideal, double wave, double tolerance) {
  if (measured.size() != ideal.size())
    throw std::invalid_argument("needlessly_late: one ideal arrival per measured latency");
  std::vector<std::size_t> order(measured.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return measured[a] < measured[b]; });
  std::vector<double> sorted_ideal = ideal;
  std::sort(sorted_ideal.begin(), sorted_ideal.end());
  std::vector<bool> late(measured.size(), false);
  for (std::size_t rank = 0; rank < order.size(); ++rank)
    late[order[rank]] = measured[order[rank]] - sorted_ideal[rank] >= wave - tolerance;
  return late;
}

std::optional<double> percentile(std::vector<double> values, double p) {
  if (values.empty()) return std::nullopt;
  std::sort(values.begin(), values.end());
  const double n = static_cast<double>(values.size());
  auto rank = static_cast<std::size_t>(std::ceil(std::clamp(p, 0.0, 100.0) / 100.0 * n));
  rank = std::clamp<std::size_t>(rank, 1, values.size());
  return values[rank - 1];
}

std::optional<double> median(std::vector<double> values) {
  if (values.empty()) return std::nullopt;
  std::sort(values.begin(), values.end());
  const std::size_t n = values.size();
  return n % 2 ? values[n / 2] : (values[n / 2 - 1] + values[n / 2]) / 2.0;
}

std::vector<double> poisson_arrivals(double rate, double duration_s, std::uint64_t seed) {
  if (!(rate > 0) || !(duration_s >= 0))
    throw std::invalid_argument("poisson_arrivals: need rate > 0 and duration >= 0");
  std::mt19937_64 gen(seed);
  std::vector<double> out;
  double t = 0;
  for (;;) {
    // u in (0, 1]: 53 random bits, never 0, so the logarithm is finite.
    const double u = (static_cast<double>(gen() >> 11) + 1.0) * 0x1.0p-53;
    t += -std::log(u) / rate;
    if (t >= duration_s) break;
    out.push_back(t);
  }
  return out;
}

namespace {

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
    s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
    s.remove_suffix(1);
  return s;
}

std::optional<double> parse_double(std::string_view s) {
  double v = 0;
  const auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
  if (ec != std::errc{} || ptr != s.data() + s.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

} // namespace

ServerTiming parse_server_timing(std::string_view header) {
  ServerTiming t;
  // Entries are separated by commas, but a quoted desc may contain one: split outside quotes.
  std::size_t start = 0;
  bool quoted = false;
  for (std::size_t i = 0; i <= header.size(); ++i) {
    if (i < header.size() && header[i] == '"') quoted = !quoted;
    if (i < header.size() && (quoted || header[i] != ',')) continue;
    const std::string_view entry = trim(header.substr(start, i - start));
    start = i + 1;
    const auto semi = entry.find(';');
    const std::string_view name = trim(entry.substr(0, semi));
    std::optional<double> dur;
    for (std::size_t p = semi; p != std::string_view::npos;) {
      const auto next = entry.find(';', p + 1);
      const std::string_view param = trim(entry.substr(
          p + 1, next == std::string_view::npos ? std::string_view::npos : next - p - 1));
      if (param.substr(0, 4) == "dur=") dur = parse_double(param.substr(4));
      p = next;
    }
    if (!dur) continue;
    namespace m = wire::timing;
    if (name == m::io)
      t.io = dur;
    else if (name == m::queue)
      t.queue = dur;
    else if (name == m::render)
      t.render = dur;
    else if (name == m::encode)
      t.encode = dur;
    else if (name == m::work)
      t.work = dur;
    else if (name == m::cpu)
      t.cpu = dur;
    else if (name == m::runq)
      t.runq = dur;
  }
  return t;
}

std::optional<Endpoint> parse_loopback_url(std::string_view url, std::string &error) {
  constexpr std::string_view scheme = "http://";
  if (url.substr(0, scheme.size()) != scheme) {
    error = "--url must start with http:// (plain HTTP/1.1 on loopback)";
    return std::nullopt;
  }
  std::string_view rest = url.substr(scheme.size());
  const auto slash = rest.find('/');
  if (slash != std::string_view::npos) {
    if (rest.substr(slash) != "/") {
      error = "--url takes no path (use --path-template for the tile route)";
      return std::nullopt;
    }
    rest = rest.substr(0, slash);
  }
  const auto colon = rest.rfind(':');
  if (colon == std::string_view::npos || rest.find(']') != std::string_view::npos) {
    error = rest.find('[') != std::string_view::npos
                ? "--url: IPv6 hosts are not supported (use 127.0.0.1)"
                : "--url needs an explicit port: http://127.0.0.1:PORT";
    return std::nullopt;
  }
  const std::string_view host = rest.substr(0, colon), port_text = rest.substr(colon + 1);
  int port = 0;
  const auto [ptr, ec] =
      std::from_chars(port_text.data(), port_text.data() + port_text.size(), port);
  if (ec != std::errc{} || ptr != port_text.data() + port_text.size() || port < 1 || port > 65535) {
    error = "--url: port '" + std::string(port_text) + "' is not in 1..65535";
    return std::nullopt;
  }
  Endpoint e;
  e.port = port;
  if (host == "localhost") return e;
  // 127.a.b.c, each part a decimal 0..255.
  int parts = 0;
  bool valid = true;
  std::string_view h = host;
  int first = -1;
  while (valid) {
    const auto dot = h.find('.');
    const std::string_view part = h.substr(0, dot);
    int v = -1;
    const auto [p2, e2] = std::from_chars(part.data(), part.data() + part.size(), v);
    valid = !part.empty() && part.size() <= 3 && e2 == std::errc{} &&
            p2 == part.data() + part.size() && v >= 0 && v <= 255;
    if (parts == 0) first = v;
    ++parts;
    if (dot == std::string_view::npos) break;
    h.remove_prefix(dot + 1);
  }
  if (!valid || parts != 4 || first != 127) {
    error = "--url: host '" + std::string(host) +
            "' is not a loopback address; overdrive bench only drives servers on this machine "
            "(localhost or 127.x.y.z)";
    return std::nullopt;
  }
  e.host = std::string(host);
  return e;
}

std::optional<StatsUrl> parse_stats_url(std::string_view url, std::string &error) {
  constexpr std::string_view scheme = "http://";
  std::string_view base = url, prefix;
  if (url.substr(0, scheme.size()) == scheme)
    if (const auto slash = url.find('/', scheme.size()); slash != std::string_view::npos) {
      base = url.substr(0, slash);
      prefix = url.substr(slash);
      while (!prefix.empty() && prefix.back() == '/')
        prefix.remove_suffix(1);
    }
  for (const char c : prefix)
    if (static_cast<unsigned char>(c) <= ' ' || c == '?' || c == '#' || c == '%') {
      error = "--stats-url: the path prefix '" + std::string(prefix) +
              "' may not contain spaces, control characters, '?', '#' or '%'";
      return std::nullopt;
    }
  auto ep = parse_loopback_url(base, error);
  if (!ep) {
    // The reasons name --url; here the flag is --stats-url.
    if (error.rfind("--url", 0) == 0) error = "--stats-url" + error.substr(5);
    return std::nullopt;
  }
  return StatsUrl{*ep, std::string(prefix), std::string(url)};
}

std::string check_path_template(std::string_view tmpl) {
  if (tmpl.empty() || tmpl.front() != '/') return "--path-template must start with '/'";
  for (std::size_t i = 0; i < tmpl.size(); ++i) {
    const auto c = static_cast<unsigned char>(tmpl[i]);
    if (c <= 0x20 || c >= 0x7f)
      return "--path-template must not contain spaces or control characters";
    if (c == '}') return "--path-template has an unmatched '}'";
    if (c != '{') continue;
    const auto close = tmpl.find('}', i);
    if (close == std::string_view::npos) return "--path-template has an unmatched '{'";
    const std::string_view name = tmpl.substr(i + 1, close - i - 1);
    if (name != "i" && name != "x" && name != "y" && name != "z")
      return "--path-template: unknown placeholder {" + std::string(name) +
             "} (valid: {i} {x} {y} {z})";
    i = close;
  }
  return {};
}

std::string expand_path(std::string_view tmpl, int i, int zoom) {
  const std::uint64_t side = std::uint64_t{1} << std::clamp(zoom, 0, 31);
  const std::uint64_t cell = static_cast<std::uint64_t>(std::max(0, i)) % (side * side);
  std::string out;
  for (std::size_t p = 0; p < tmpl.size(); ++p) {
    if (tmpl[p] == '{') {
      const auto close = tmpl.find('}', p);
      if (close != std::string_view::npos) {
        const std::string_view name = tmpl.substr(p + 1, close - p - 1);
        if (name == "i")
          out += std::to_string(i);
        else if (name == "x")
          out += std::to_string(cell % side);
        else if (name == "y")
          out += std::to_string(cell / side);
        else if (name == "z")
          out += std::to_string(zoom);
        else
          out += tmpl.substr(p, close - p + 1);
        p = close;
        continue;
      }
    }
    out += tmpl[p];
  }
  return out;
}

std::optional<double> RequestRecord::latency_ms() const {
  if (!ok() || !done_ms) return std::nullopt;
  return *done_ms - scheduled_ms;
}

std::optional<IdleSample> parse_idle_sample(std::string_view json, std::string_view executor) {
  namespace k = wire::stats;
  // Built with append: GCC 12's -Wrestrict misfires on "literal" + std::string + "literal".
  auto quoted_key = [](std::string_view name, std::string_view after) {
    std::string s(1, '"');
    s.append(name).append("\"").append(after);
    return s;
  };
  const std::string key = quoted_key(k::idle_while_waiting_seconds, ":");
  auto number_after = [&](std::size_t from) -> std::optional<double> {
    const auto k = json.find(key, from);
    if (k == std::string_view::npos) return std::nullopt;
    std::size_t b = k + key.size(), e = b;
    while (e < json.size() &&
           (std::isdigit(static_cast<unsigned char>(json[e])) || json[e] == '.' || json[e] == '-' ||
            json[e] == 'e' || json[e] == 'E' || json[e] == '+'))
      ++e;
    return parse_double(json.substr(b, e - b));
  };
  const auto io = json.find(quoted_key(k::io, ":{"));
  std::string ex_key(1, '{');
  ex_key.append(quoted_key(k::name, ":")).append(quoted_key(executor, ""));
  const auto ex = json.find(ex_key);
  if (io == std::string_view::npos || ex == std::string_view::npos) return std::nullopt;
  const auto io_v = number_after(io), ex_v = number_after(ex);
  if (!io_v || !ex_v) return std::nullopt;
  return IdleSample{*ex_v, *io_v};
}

std::optional<int> parse_stats_workers(std::string_view json) {
  namespace k = wire::stats;
  std::string options(1, '"');
  options.append(k::options).append("\":{");
  std::string workers(1, '"');
  workers.append(k::workers).append("\":");
  const auto o = json.find(options);
  if (o == std::string_view::npos) return std::nullopt;
  const auto end = json.find('}', o);
  const auto w = json.find(workers, o);
  if (w == std::string_view::npos || w > end) return std::nullopt;
  const auto b = w + workers.size();
  int v = 0;
  const auto [p, ec] = std::from_chars(json.data() + b, json.data() + json.size(), v);
  if (ec != std::errc{} || p == json.data() + b || v < 0) return std::nullopt;
  return v;
}

int cluster_workers(const std::vector<ReplicaInfo> &replicas) noexcept {
  int n = 0;
  for (const ReplicaInfo &r : replicas)
    n += r.workers;
  return n;
}

void attribute_replicas(RunResult &run, const std::vector<ReplicaInfo> &replicas,
                        const std::vector<std::optional<std::string>> &before,
                        const std::vector<std::optional<std::string>> &after) {
  if (before.size() != replicas.size() || after.size() != replicas.size())
    throw std::invalid_argument("attribute_replicas: one stats sample per replica");
  run.replicas.clear();
  for (const ReplicaInfo &r : replicas)
    run.replicas.push_back(ReplicaRun{r.id, 0, 0, std::nullopt, std::nullopt});
  // The executor that served each replica's tiles, and the run's most common one.
  std::vector<std::pair<std::string, int>> run_executors;
  std::vector<std::string> executor_of(replicas.size());
  for (const RequestRecord &q : run.requests) {
    if (q.status == 0) continue; // no answer, nobody to attribute it to
    auto it = std::find_if(run.replicas.begin(), run.replicas.end(),
                           [&](const ReplicaRun &r) { return r.id == q.replica; });
    if (it == run.replicas.end()) {
      run.replicas.push_back(ReplicaRun{q.replica, 0, 0, std::nullopt, std::nullopt});
      it = std::prev(run.replicas.end());
    }
    ++it->tiles;
    it->ok += q.ok() ? 1 : 0;
    if (q.executor.empty()) continue;
    const auto i = static_cast<std::size_t>(it - run.replicas.begin());
    if (i < executor_of.size() && executor_of[i].empty()) executor_of[i] = q.executor;
    auto e = std::find_if(run_executors.begin(), run_executors.end(),
                          [&](const auto &p) { return p.first == q.executor; });
    if (e == run_executors.end())
      run_executors.emplace_back(q.executor, 1);
    else
      ++e->second;
  }
  std::string common;
  int most = 0;
  for (const auto &[name, n] : run_executors)
    if (n > most) {
      common = name;
      most = n;
    }
  double exec_total = 0, io_total = 0;
  bool complete = !replicas.empty();
  for (std::size_t i = 0; i < replicas.size(); ++i) {
    const std::string &name = executor_of[i].empty() ? common : executor_of[i];
    std::optional<IdleSample> b, a;
    if (!name.empty() && before[i] && after[i]) {
      b = parse_idle_sample(*before[i], name);
      a = parse_idle_sample(*after[i], name);
    }
    if (!b || !a) {
      complete = false;
      continue;
    }
    ReplicaRun &r = run.replicas[i];
    r.idle_executor_s = a->executor_seconds - b->executor_seconds;
    r.idle_io_s = a->io_seconds - b->io_seconds;
    exec_total += *r.idle_executor_s;
    io_total += *r.idle_io_s;
  }
  run.idle_executor_s.reset();
  run.idle_io_s.reset();
  if (complete) {
    run.idle_executor_s = exec_total;
    run.idle_io_s = io_total;
  }
}

const TileCost *Calibration::find(std::string_view path) const {
  for (const TileCost &t : tiles)
    if (t.path == path) return &t;
  return nullptr;
}

bool Calibration::equal_costs() const {
  if (tiles.empty()) return true;
  std::vector<double> own, serial;
  for (const TileCost &t : tiles) {
    own.push_back(t.serial_ms - t.work_ms);
    serial.push_back(t.serial_ms);
  }
  const auto [lo, hi] = std::minmax_element(own.begin(), own.end());
  return *hi - *lo <= equal_cost_spread * *median(serial);
}

namespace {

// Pairs the answered latencies (any order) by rank with the ascending `ideal` (at least as many),
// marks the records and counts the late ones.
void mark_ranks(RunResult &run, const std::vector<std::size_t> &ok_index,
                const std::vector<double> &lat, std::vector<double> ideal, double wave) {
  std::sort(ideal.begin(), ideal.end());
  ideal.resize(lat.size());
  const auto late = needlessly_late(lat, ideal, wave, late_tolerance_fraction * wave);
  std::vector<std::size_t> order(lat.size());
  std::iota(order.begin(), order.end(), std::size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](std::size_t a, std::size_t b) { return lat[a] < lat[b]; });
  for (std::size_t rank = 0; rank < order.size(); ++rank) {
    RequestRecord &r = run.requests[ok_index[order[rank]]];
    r.ideal_ms = ideal[rank] + r.scheduled_ms;
    r.late = late[order[rank]];
    run.late += r.late ? 1 : 0;
  }
}

} // namespace

void analyze_run(RunResult &run, Scenario scenario, const ModelSpec &model, double duration_s) {
  run.succeeded = run.rejected = run.failed = run.late = 0;
  run.sent = static_cast<int>(run.requests.size());
  run.model.clear();
  run.cost_ms.reset();
  run.cost_source.clear();
  run.wave_ms.reset();
  run.efficiency.reset();
  run.raw_efficiency.reset();
  run.model_error = false;
  std::vector<double> lat;
  std::vector<std::size_t> ok_index;
  for (std::size_t j = 0; j < run.requests.size(); ++j) {
    RequestRecord &r = run.requests[j];
    r.ideal_ms.reset();
    r.cost_ms.reset();
    r.late = false;
    if (r.ok()) {
      ++run.succeeded;
      lat.push_back(*r.latency_ms());
      ok_index.push_back(j);
    } else if (r.shed()) {
      ++run.rejected;
    } else {
      ++run.failed;
    }
    if (r.sent_ms) run.max_send_lag_ms = std::max(run.max_send_lag_ms, *r.sent_ms - r.scheduled_ms);
  }
  if (!lat.empty()) {
    run.first_ms = *std::min_element(lat.begin(), lat.end());
    run.last_ms = *std::max_element(lat.begin(), lat.end());
    run.mean_ms = std::accumulate(lat.begin(), lat.end(), 0.0) / static_cast<double>(lat.size());
  }
  if (scenario == Scenario::Open) {
    run.p50_ms = percentile(lat, 50);
    run.p90_ms = percentile(lat, 90);
    run.p99_ms = percentile(lat, 99);
    double end_ms = duration_s * 1000.0;
    for (const auto &r : run.requests)
      if (r.ok() && r.done_ms) end_ms = std::max(end_ms, *r.done_ms);
    if (end_ms > 0) run.throughput_rps = run.succeeded / (end_ms / 1000.0);
    if (duration_s > 0) run.offered_rps = static_cast<double>(run.requests.size()) / duration_s;
    return;
  }
  // T comes from --cost-ms or the serial calibration on the idle server, never from this run:
  // under load a tile takes longer (more workers than cores, shared caches), which would raise
  // the ideal with the measurement and hide exactly what the bench is for.
  const Calibration *cal = model.calibration ? &*model.calibration : nullptr;
  if (!model.cost_ms && !cal) return;
  const int n = model.workers;
  double answered_ratio = 0;
  if (model.cost_ms || cal->equal_costs()) {
    // Equal-cost model: K equal jobs; the answered ones take the first ranks of the K.
    run.model = "equal-cost";
    std::vector<double> ideal;
    if (model.cost_ms) {
      run.cost_source = "cost-ms";
      run.cost_ms = model.cost_ms;
      ideal = ideal_arrivals(run.sent, n, *model.cost_ms, model.split);
      run.wave_ms = wave_ms(n, *model.cost_ms, model.split);
    } else {
      run.cost_source = "calibration";
      run.cost_ms = cal->wall_ms;
      ideal = model.split ? ideal_arrivals_split(run.sent, n, cal->wall_ms, cal->serial_ms)
                          : ideal_arrivals(run.sent, n, cal->wall_ms, false);
      run.wave_ms = cal->wall_ms;
    }
    run.ideal_total_ms = std::accumulate(ideal.begin(), ideal.begin() + run.succeeded, 0.0);
    if (lat.empty()) {
      run.raw_efficiency = run.efficiency = 0.0;
      return;
    }
    run.measured_total_ms = std::accumulate(lat.begin(), lat.end(), 0.0);
    answered_ratio = *run.ideal_total_ms / *run.measured_total_ms;
    mark_ranks(run, ok_index, lat, ideal, *run.wave_ms);
  } else {
    // Measured-costs model: each tile its own calibrated cost (its fastest serial sample). The
    // answered tiles' makespan against its lower bound; lateness by rank against the
    // arrival-order list schedule. A path not sampled costs the cheapest sampled tile.
    run.model = "measured-costs";
    run.cost_source = "calibration";
    double cheapest_wall = cal->wall_ms, cheapest_serial = cal->serial_ms;
    for (const TileCost &t : cal->tiles) {
      cheapest_wall = std::min(cheapest_wall, t.best_wall_ms);
      cheapest_serial = std::min(cheapest_serial, t.best_serial_ms);
    }
    std::vector<double> all_serial, ok_serial;
    double all_wall = 0, ok_wall = 0;
    for (RequestRecord &r : run.requests) {
      const TileCost *t = cal->find(r.path);
      const double wall = t ? t->best_wall_ms : cheapest_wall;
      const double serial = t ? t->best_serial_ms : cheapest_serial;
      r.cost_ms = serial;
      all_serial.push_back(serial);
      all_wall = std::max(all_wall, wall);
      if (r.ok()) {
        ok_serial.push_back(serial);
        ok_wall = std::max(ok_wall, wall);
      }
    }
    // With split a tile can finish in its wall time, less than its serial cost: the largest
    // single tile bounds the makespan by its wall time, the total work by serial / N.
    auto bound = [&](const std::vector<double> &serial, double wall) {
      if (serial.empty()) return 0.0;
      return model.split ? std::max(std::accumulate(serial.begin(), serial.end(), 0.0) / n, wall)
                         : makespan_lower_bound(serial, n);
    };
    run.makespan_bound_all_ms = bound(all_serial, all_wall);
    const auto all_list = list_schedule(all_serial, n);
    run.list_makespan_ms = *std::max_element(all_list.begin(), all_list.end());
    if (lat.empty()) {
      run.raw_efficiency = run.efficiency = 0.0;
      return;
    }
    run.makespan_bound_ms = bound(ok_serial, ok_wall);
    run.wave_ms = *std::max_element(ok_serial.begin(), ok_serial.end());
    const auto ok_list = list_schedule(ok_serial, n);
    run.ideal_total_ms = std::accumulate(ok_list.begin(), ok_list.end(), 0.0);
    run.measured_total_ms = std::accumulate(lat.begin(), lat.end(), 0.0);
    answered_ratio = *run.last_ms > 0 ? *run.makespan_bound_ms / *run.last_ms : 0.0;
    mark_ranks(run, ok_index, lat, ok_list, *run.wave_ms);
  }
  run.raw_efficiency = efficiency_over_sent(answered_ratio, run.succeeded, run.sent);
  // The model's claim is about the answered tiles: beating their ideal is a model error, also
  // when shedding scales the efficiency over all requests back under 1.
  run.model_error = is_model_error(answered_ratio);
  if (!run.model_error) run.efficiency = run.raw_efficiency;
}

} // namespace overdrive::loadgen
