// Kind names, the factory and the JSON forms of traces and stats.
#include "executors/executor.hpp"

#include "executors/recorder.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cmath>
#include <thread>

namespace overdrive {

namespace {

constexpr std::array<ExecutorKind, 3> kKinds = {ExecutorKind::Inline, ExecutorKind::Tbb,
                                                ExecutorKind::Pool};

void append_json_string(std::string &out, std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  out += '"';
  for (const char c : s) {
    switch (c) {
    case '"':
      out += "\\\"";
      break;
    case '\\':
      out += "\\\\";
      break;
    case '\n':
      out += "\\n";
      break;
    case '\r':
      out += "\\r";
      break;
    case '\t':
      out += "\\t";
      break;
    case '\b':
      out += "\\b";
      break;
    case '\f':
      out += "\\f";
      break;
    default:
      if (static_cast<unsigned char>(c) < 0x20) {
        const auto u = static_cast<unsigned char>(c);
        out += "\\u00";
        out += hex[u >> 4];
        out += hex[u & 0xf];
      } else {
        out += c; // UTF-8 bytes pass through unchanged
      }
    }
  }
  out += '"';
}

template <typename T> void append_number(std::string &out, T value) {
  std::array<char, 32> buf{};
  const auto [end, ec] = std::to_chars(buf.data(), buf.data() + buf.size(), value);
  out.append(buf.data(), ec == std::errc{} ? end : buf.data());
}

void append_double(std::string &out, double value) {
  append_number(out, std::isfinite(value) ? value : 0.0); // JSON has no inf/nan
}

template <typename T> void append_field(std::string &out, std::string_view key, T value) {
  out += '"';
  out += key;
  out += "\":";
  append_number(out, value);
  out += ',';
}

} // namespace

std::string_view to_string(ExecutorKind kind) noexcept {
  switch (kind) {
  case ExecutorKind::Inline:
    return "inline";
  case ExecutorKind::Tbb:
    return "tbb";
  case ExecutorKind::Pool:
    return "pool";
  }
  return "unknown";
}

std::optional<ExecutorKind> parse_executor_kind(std::string_view name) noexcept {
  for (const auto kind : kKinds)
    if (to_string(kind) == name) return kind;
  return std::nullopt;
}

std::string executor_kind_names() {
  std::string names;
  for (const auto kind : kKinds) {
    if (!names.empty()) names += ", ";
    names += to_string(kind);
  }
  return names;
}

std::vector<ExecutorKind> all_executor_kinds() {
  return {kKinds.begin(), kKinds.end()};
}

std::string_view to_string(JobOutcome outcome) noexcept {
  switch (outcome) {
  case JobOutcome::Done:
    return "done";
  case JobOutcome::Refused:
    return "refused";
  case JobOutcome::Failed:
    return "failed";
  case JobOutcome::Cancelled:
    return "cancelled";
  }
  return "unknown";
}

std::unique_ptr<Executor> make_executor(ExecutorKind kind, const ExecutorOptions &options) {
  if (options.workers < 0)
    throw ExecutorError("executor workers must be >= 0 (0 = number of cores), got " +
                        std::to_string(options.workers));
  ExecutorOptions resolved = options;
  if (resolved.workers == 0)
    resolved.workers = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  switch (kind) {
  case ExecutorKind::Inline:
    return detail::make_inline_executor(resolved);
  case ExecutorKind::Tbb:
    return detail::make_tbb_arena_executor(resolved);
  case ExecutorKind::Pool:
    return detail::make_thread_pool_executor(resolved);
  }
  throw ExecutorError("invalid ExecutorKind value");
}

std::unique_ptr<Executor> make_executor(std::string_view kind, const ExecutorOptions &options) {
  const auto parsed = parse_executor_kind(kind);
  if (!parsed)
    throw ExecutorError("unknown executor '" + std::string(kind) +
                        "' (valid: " + executor_kind_names() + ")");
  return make_executor(*parsed, options);
}

std::string to_json(const std::vector<JobEvent> &events) {
  std::string out;
  out.reserve(16 + events.size() * 128);
  out += '[';
  for (std::size_t i = 0; i < events.size(); ++i) {
    const auto &e = events[i];
    if (i != 0) out += ',';
    out += '{';
    append_field(out, "seq", e.seq);
    out += "\"label\":";
    append_json_string(out, e.label);
    out += ',';
    append_field(out, "worker", e.worker);
    append_field(out, "submit_ns", e.submit_ns);
    append_field(out, "start_ns", e.start_ns);
    append_field(out, "end_ns", e.end_ns);
    out += "\"outcome\":";
    append_json_string(out, to_string(e.outcome));
    out += '}';
  }
  out += ']';
  return out;
}

std::string to_json(const ExecutorStats &stats) {
  std::string out;
  out.reserve(256 + stats.busy_seconds.size() * 24);
  out += "{\"name\":";
  append_json_string(out, stats.name);
  out += ',';
  append_field(out, "workers", stats.workers);
  append_field(out, "queue_limit", stats.queue_limit);
  append_field(out, "queued", stats.queued);
  append_field(out, "busy", stats.busy);
  append_field(out, "submitted", stats.submitted);
  append_field(out, "refused", stats.refused);
  append_field(out, "completed", stats.completed);
  append_field(out, "failed", stats.failed);
  append_field(out, "cancelled", stats.cancelled);
  out += "\"busy_seconds\":[";
  for (std::size_t i = 0; i < stats.busy_seconds.size(); ++i) {
    if (i != 0) out += ',';
    append_double(out, stats.busy_seconds[i]);
  }
  out += "],\"idle_while_waiting_seconds\":";
  append_double(out, stats.idle_while_waiting_seconds);
  out += ",\"last_seq\":";
  append_number(out, stats.last_seq);
  out += '}';
  return out;
}

} // namespace overdrive
