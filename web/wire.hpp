// The server's wire format in one place: the Server-Timing metric names and response headers of
// a tile, and the keys of /api/stats. The server writes them and the bench reads them back, so
// neither can drift from the other.
#pragma once

#include <string_view>

namespace overdrive::wire {

/// Server-Timing metrics on a tile response (milliseconds, "name;dur=MS").
namespace timing {
inline constexpr std::string_view io = "io";         ///< waiting for an I/O thread (or seat)
inline constexpr std::string_view queue = "queue";   ///< waiting for a worker
inline constexpr std::string_view render = "render"; ///< rendering, synthetic work included
inline constexpr std::string_view encode = "encode"; ///< PNG encoding
inline constexpr std::string_view work = "work";     ///< the synthetic part of render, if any
/// CPU time during render, summed over the threads that rendered (with split it may exceed
/// render). render - cpu - runq is time spent neither running nor runnable (sleeping, blocked).
inline constexpr std::string_view cpu = "cpu";
/// Part of render spent runnable but not running: waiting for a core that was busy elsewhere.
/// Absent where the kernel does not report it (Linux /proc/thread-self/schedstat).
inline constexpr std::string_view runq = "runq";
/// A request that joined an identical tile's render instead of rendering (request coalescing):
/// "coalesced;dur=MS;desc=..." is its wait for that render; it has no queue, render or encode.
inline constexpr std::string_view coalesced = "coalesced";
/// A tile answered from the in-memory cache or by 304 Not Modified, no executor involved:
/// "cache;desc=\"hit\"" or "cache;desc=\"not modified\"" (no dur).
inline constexpr std::string_view cache = "cache";
} // namespace timing

/// Response headers of a tile.
namespace header {
inline constexpr std::string_view executor = "X-Overdrive-Executor";
inline constexpr std::string_view worker = "X-Overdrive-Worker";
/// On every response: the replica that answered (ServerOptions::replica_id).
inline constexpr std::string_view replica = "X-Overdrive-Replica";
/// How a tile was answered: "miss" (rendered, may be cached), "hit" (from the cache),
/// "coalesced" (shared an identical request's render), "not-modified" (304), "bypass" (nonce:
/// rendered, never cached, coalesced or revalidated).
inline constexpr std::string_view cache = "X-Overdrive-Cache";
/// On every tile response: the number format that rendered it (auto resolved), e.g. "dd".
inline constexpr std::string_view precision = "X-Overdrive-Precision";
/// With ref=1 (which bypasses the caches, as a nonce does): the reference format chosen by
/// depth ("dd" or "mp:BITS") and the fraction (0..1, "%.6f") of the tile's pixels whose escape
/// count differs from the reference's.
inline constexpr std::string_view reference = "X-Overdrive-Reference";
inline constexpr std::string_view disagreement = "X-Overdrive-Disagreement";
} // namespace header

/// Keys of GET /api/stats: {"now_ns", "options":{...}, "io":{...}, "cache":{...},
/// "names":{"executors":[...], "palettes":[...], "precisions":[...], "precision_forms":[...]},
/// "executors":[{...}]}. precisions: named formats for menus; precision_forms: the grammar.
namespace stats {
inline constexpr std::string_view now_ns = "now_ns";
inline constexpr std::string_view options = "options";
inline constexpr std::string_view io = "io";
inline constexpr std::string_view names = "names";
inline constexpr std::string_view executors = "executors";
inline constexpr std::string_view name = "name"; ///< first key of each executor object
inline constexpr std::string_view workers = "workers";
inline constexpr std::string_view queue_limit = "queue_limit";
inline constexpr std::string_view queued = "queued";
inline constexpr std::string_view busy = "busy";
inline constexpr std::string_view accepted = "accepted";
inline constexpr std::string_view refused = "refused";
inline constexpr std::string_view completed = "completed";
inline constexpr std::string_view failed = "failed";
inline constexpr std::string_view cancelled = "cancelled";
inline constexpr std::string_view busy_seconds = "busy_seconds";
inline constexpr std::string_view cpu_seconds = "cpu_seconds";   ///< per worker, finished jobs
inline constexpr std::string_view runq_seconds = "runq_seconds"; ///< per worker, or null: absent
inline constexpr std::string_view idle_while_waiting_seconds = "idle_while_waiting_seconds";
inline constexpr std::string_view last_seq = "last_seq";
/// The "cache" object: tile cache, coalescing and conditional requests.
inline constexpr std::string_view cache = "cache";
inline constexpr std::string_view capacity_bytes = "capacity_bytes"; ///< --cache-mb; 0 = off
inline constexpr std::string_view bytes = "bytes";
inline constexpr std::string_view entries = "entries";
inline constexpr std::string_view hits = "hits";
inline constexpr std::string_view misses = "misses";
inline constexpr std::string_view evictions = "evictions";
inline constexpr std::string_view coalesce = "coalesce"; ///< whether coalescing is on
/// Requests answered with an identical request's render (followers), no job of their own.
inline constexpr std::string_view coalesced = "coalesced";
inline constexpr std::string_view not_modified = "not_modified"; ///< 304 answers
} // namespace stats

/// Keys of each event in GET /api/trace (besides seq, label, worker, submit/start/end_ns, outcome).
namespace trace {
inline constexpr std::string_view cpu_ns = "cpu_ns";   ///< JobEvent::cpu_ns
inline constexpr std::string_view runq_ns = "runq_ns"; ///< JobEvent::runq_ns, or null: absent
} // namespace trace

} // namespace overdrive::wire
