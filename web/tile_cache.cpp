// The tile's identity, the LRU tile cache, request coalescing and latency histograms
// (tile_cache.hpp).
#include "web/tile_cache.hpp"

#include <algorithm>

namespace overdrive::detail {

std::string tile_key(const TileQuery &q) {
  // "r1:Z/X/Y:SIZE:ITER:PALETTE:PRECISION[:ref]". One spelling per tile: params.cpp accepts only
  // canonical numbers and the names are the parsed enums'.
  std::string k(kRendererVersion);
  k += ':';
  k += std::to_string(q.tile.z);
  k += '/';
  k += to_string(q.tile.x);
  k += '/';
  k += to_string(q.tile.y);
  k += ':';
  k += std::to_string(q.request.view.pixel_width);
  k += ':';
  k += std::to_string(q.request.max_iter);
  k += ':';
  k += to_string(q.request.palette);
  k += ':';
  k += to_string(q.request.precision);
  if (q.ref) k += ":ref"; // its response carries the disagreement headers
  return k;
}

std::string tile_etag(std::string_view key) {
  std::string e;
  e.reserve(key.size() + 2);
  e += '"';
  e += key;
  e += '"';
  return e;
}

bool etag_matches(std::string_view field, std::string_view etag) {
  auto trim = [](std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
      s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
      s.remove_suffix(1);
    return s;
  };
  if (trim(field) == "*") return true;
  while (!field.empty()) {
    const auto comma = field.find(',');
    std::string_view tag = trim(field.substr(0, comma));
    field = comma == std::string_view::npos ? std::string_view{} : field.substr(comma + 1);
    if (tag.substr(0, 2) == "W/") tag.remove_prefix(2);
    if (tag == etag) return true;
  }
  return false;
}

TileCache::Body TileCache::find(std::string_view key) {
  if (!enabled()) return nullptr;
  std::lock_guard lock(mu_);
  const auto it = index_.find(key);
  if (it == index_.end()) {
    ++misses_;
    return nullptr;
  }
  ++hits_;
  lru_.splice(lru_.begin(), lru_, it->second); // iterators (and the key views) stay valid
  return it->second->body;
}

void TileCache::insert(std::string_view key, Body body) {
  if (!enabled() || !body) return;
  Entry entry{std::string(key), std::move(body)};
  const std::size_t cost = entry.cost();
  if (cost > capacity_) return;
  std::lock_guard lock(mu_);
  if (const auto it = index_.find(key); it != index_.end()) erase_locked(it->second);
  while (bytes_ + cost > capacity_ && !lru_.empty()) {
    erase_locked(std::prev(lru_.end()));
    ++evictions_;
  }
  lru_.push_front(std::move(entry));
  index_.emplace(lru_.front().key, lru_.begin());
  bytes_ += cost;
}

void TileCache::erase_locked(std::list<Entry>::iterator it) {
  bytes_ -= it->cost();
  index_.erase(it->key);
  lru_.erase(it);
}

TileCache::Snapshot TileCache::snapshot() const {
  std::lock_guard lock(mu_);
  return {capacity_, bytes_, lru_.size(), hits_, misses_, evictions_};
}

Flights::Ticket Flights::join(std::string_view key) {
  std::lock_guard lock(mu_);
  const std::string k(key);
  if (const auto it = flights_.find(k); it != flights_.end()) {
    it->second->followers.fetch_add(1, std::memory_order_relaxed);
    return {it->second, false};
  }
  auto flight = std::make_shared<Flight>();
  flights_.emplace(k, flight);
  return {std::move(flight), true};
}

void Flights::land(std::string_view key, const Ticket &ticket, Result result) {
  {
    std::lock_guard lock(mu_);
    const auto it = flights_.find(std::string(key));
    if (it != flights_.end() && it->second == ticket.flight) flights_.erase(it);
  }
  Flight &f = *ticket.flight;
  {
    std::lock_guard lock(f.mu);
    f.result = std::move(result);
    f.landed = true;
  }
  f.cv.notify_all();
}

std::optional<Flights::Result> Flights::wait(Flight &flight, Clock::time_point deadline) {
  std::unique_lock lock(flight.mu);
  if (!flight.cv.wait_until(lock, deadline, [&flight] { return flight.landed; }))
    return std::nullopt;
  return flight.result;
}

std::size_t Flights::in_air() const {
  std::lock_guard lock(mu_);
  return flights_.size();
}

void LatencyHistogram::observe(double seconds) {
  const auto at = static_cast<std::size_t>(
      std::lower_bound(kBounds.begin(), kBounds.end(), seconds) - kBounds.begin());
  std::lock_guard lock(mu_);
  ++buckets_[at];
  sum_ += seconds;
}

LatencyHistogram::Snapshot LatencyHistogram::snapshot() const {
  Snapshot s;
  std::lock_guard lock(mu_);
  std::uint64_t running = 0;
  for (std::size_t i = 0; i < kBounds.size(); ++i) {
    running += buckets_[i];
    s.cumulative[i] = running;
  }
  s.count = running + buckets_[kBounds.size()];
  s.sum = sum_;
  return s;
}

} // namespace overdrive::detail
