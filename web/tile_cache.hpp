// What a tile service needs beside rendering, private to web/: the tile's identity (cache key and
// strong ETag), a bounded LRU cache of encoded tiles, in-process request coalescing ("flights"),
// and the latency histograms /metrics exposes.
#pragma once

#include "executors/executor.hpp" // Clock
#include "web/server.hpp"         // TileQuery

#include <array>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <list>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace overdrive::detail {

/// Version of the renderer's output. It is part of every tile's ETag, so it MUST change whenever
/// the bytes of a tile change for the same URL (kernel, colouring, palette stops, PNG encoding or
/// its settings): clients and caches holding the old ETag then revalidate and get the new bytes.
inline constexpr std::string_view kRendererVersion = "r1";

/// Everything that determines a tile's bytes, as one printable string: renderer version, z/x/y,
/// size, iter, palette, precision. The executor is not part of it (every executor renders the
/// same bytes; test Web.EveryExecutorServesTheSameBytes), nor is a nonce (nonce requests bypass
/// the cache altogether). The cache and the flights are keyed by it; the ETag is it, quoted.
std::string tile_key(const TileQuery &q);
/// The part of tile_key every tile of a pyramid shares: "r1:SIZE:ITER:PALETTE:PRECISION".
/// `overdrive pyramid` writes it to DIR/pyramid.json ("tile_params"); `serve --pyramid DIR`
/// serves DIR/z/x/y.png only for a request whose tile_params_key equals it.
std::string tile_params_key(const TileQuery &q);
/// The strong ETag of a tile: its key in double quotes.
std::string tile_etag(std::string_view key);
/// Whether an If-None-Match field value matches etag: "*", or a comma-separated list of entity
/// tags compared weakly (a "W/" prefix is ignored), as RFC 9110 13.1.2 says for If-None-Match.
bool etag_matches(std::string_view if_none_match, std::string_view etag);

/// A bounded in-memory cache of encoded tiles, least recently used evicted first. Its size counts
/// each entry as key + body + kEntryOverhead bytes; an entry larger than the capacity is not kept.
/// Capacity 0 disables it (find and insert do nothing, nothing is counted). Thread-safe.
class TileCache {
public:
  static constexpr std::size_t kEntryOverhead = 128; ///< list node, map slot, shared_ptr block
  using Body = std::shared_ptr<const std::string>;
  struct Snapshot {
    std::size_t capacity_bytes = 0, bytes = 0, entries = 0;
    std::uint64_t hits = 0, misses = 0, evictions = 0;
  };

  explicit TileCache(std::size_t capacity_bytes) : capacity_(capacity_bytes) {}
  bool enabled() const noexcept { return capacity_ > 0; }
  /// The cached body for key (now the most recently used), or null; counts a hit or a miss.
  Body find(std::string_view key);
  /// Keeps body under key (replacing an entry of the same key), evicting as needed.
  void insert(std::string_view key, Body body);
  Snapshot snapshot() const;

private:
  struct Entry {
    std::string key;
    Body body;
    std::size_t cost() const noexcept { return key.size() + body->size() + kEntryOverhead; }
  };
  void erase_locked(std::list<Entry>::iterator it);

  const std::size_t capacity_;
  mutable std::mutex mu_;
  std::list<Entry> lru_; ///< front: most recently used
  std::unordered_map<std::string_view, std::list<Entry>::iterator> index_; ///< views into lru_
  std::size_t bytes_ = 0;
  std::uint64_t hits_ = 0, misses_ = 0, evictions_ = 0;
};

/// In-process request coalescing. The first request for a key starts a flight and renders (the
/// leader); requests for the same key that arrive while it is in the air join it and wait for its
/// tile instead of rendering (followers). The leader always lands its flight, with or without a
/// tile, so no follower waits for a leader that has gone. Thread-safe.
class Flights {
public:
  /// What the leader hands its followers.
  struct Result {
    std::shared_ptr<const std::string> png; ///< null: the leader got no tile (refused, failed...)
    std::string executor;                   ///< the executor that rendered it
    int worker = -1;
  };
  struct Flight {
    std::mutex mu;
    std::condition_variable cv;
    bool landed = false;
    Result result;
    /// Followers that joined; the leader's job renders even if its own client left while any
    /// follower waits.
    std::atomic<int> followers{0};
  };
  struct Ticket {
    std::shared_ptr<Flight> flight;
    bool leader = false;
  };

  /// Joins the flight for key, or starts it (then the caller is the leader and must land it).
  Ticket join(std::string_view key);
  /// The leader ends its flight: removes it, so later requests start a new one, and wakes the
  /// followers with result.
  void land(std::string_view key, const Ticket &ticket, Result result);
  /// A follower waits until the flight lands or deadline passes (nullopt).
  static std::optional<Result> wait(Flight &flight, Clock::time_point deadline);
  /// Flights in the air now.
  std::size_t in_air() const;

private:
  mutable std::mutex mu_;
  std::unordered_map<std::string, std::shared_ptr<Flight>> flights_;
};

/// A Prometheus histogram of durations in seconds with fixed buckets (0.5 ms to 30 s).
/// Thread-safe; a snapshot is consistent (count == the +Inf bucket).
class LatencyHistogram {
public:
  static constexpr std::array<double, 15> kBounds = {
      0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
  struct Snapshot {
    std::array<std::uint64_t, kBounds.size()> cumulative{}; ///< observations <= kBounds[i]
    std::uint64_t count = 0;
    double sum = 0;
  };
  void observe(double seconds);
  Snapshot snapshot() const;

private:
  mutable std::mutex mu_;
  std::array<std::uint64_t, kBounds.size() + 1> buckets_{}; ///< per bucket; the last is +Inf
  double sum_ = 0;
};

/// The phases of a rendered tile that /metrics keeps a histogram of, per executor.
struct TileHistograms {
  static constexpr std::array<std::string_view, 5> kPhases = {"io", "queue", "render", "encode",
                                                              "total"};
  std::array<LatencyHistogram, kPhases.size()> phase;
};

} // namespace overdrive::detail
