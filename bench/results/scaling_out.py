#!/usr/bin/env python3
"""Summaries of `overdrive bench --json` files for bench/README.md "Scaling out" (tables 3 and 5).

  scaling_out.py overload FILE...   open-loop runs: status counts, shed and accepted latencies
  scaling_out.py burst FILE...      burst runs through a balancer: makespan, per-replica busy time,
                                    and the cluster-wide idle-while-waiting rebuilt from arrivals

Times are the bench's, in ms from the run's release. For a request answered by a replica, its
busy interval on that replica is [done - render - encode, done] (Server-Timing; one worker per
replica, so the intervals of one replica do not overlap). A tile *waits* from sent until its
busy interval starts, wherever it waits (balancer queue, connection, replica queue). The
cluster's idle-while-waiting is the integral over the run of min(tiles waiting, workers idle),
with workers = 1 per replica: the core-seconds a worker of *some* replica idled while a tile
waited *somewhere*. The replicas' own counters (the bench's `idle core-s`) only see a tile that
waits in the same replica as the idle worker.
"""
import json
import statistics
import sys


def pct(xs, p):
    if not xs:
        return float("nan")
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, int(round(p / 100 * len(xs) + 0.5)) - 1))
    return xs[k]


def runs(path):
    j = json.load(open(path))
    for e in j["executors"]:
        for r in e["runs"]:
            yield e, r


def overload(files):
    print("file | sent | 200 | 429 | 503 | other 5xx | conn errors | shed sent->done p50/p99/max ms"
          " | shed sched->done p99 ms | accepted p50/p99 ms (sched->done) | send lag max ms")
    for f in files:
        for e, r in runs(f):
            q = r["requests"]
            by = {}
            for x in q:
                by[x["status"]] = by.get(x["status"], 0) + 1
            errs = [x for x in q if x["error"]]
            shed = [x for x in q if not x["error"] and x["status"] in (429, 503)]
            shed_sd = [x["done_ms"] - x["sent_ms"] for x in shed]
            shed_lat = [x["done_ms"] - x["scheduled_ms"] for x in shed]
            ok = [x["done_ms"] - x["scheduled_ms"] for x in q if x["status"] == 200]
            other5 = sum(v for k, v in by.items() if k >= 500 and k != 503)
            print(f"{f} | {len(q)} | {by.get(200, 0)} | {by.get(429, 0)} | {by.get(503, 0)} | {other5}"
                  f" | {len(errs)} | {pct(shed_sd, 50):.2f}/{pct(shed_sd, 99):.2f}/{max(shed_sd, default=float('nan')):.2f}"
                  f" | {pct(shed_lat, 99):.2f} | {pct(ok, 50):.0f}/{pct(ok, 99):.0f} | {r['max_send_lag_ms']:.1f}")
            if errs:
                kinds = {}
                for x in errs:
                    kinds[x["error"]] = kinds.get(x["error"], 0) + 1
                print("   errors:", kinds)
            print("   statuses:", dict(sorted(by.items())))


def busy_intervals(r):
    per = {}
    for x in r["requests"]:
        s = x["server"]
        if x["status"] != 200 or s.get("render_ms") is None:
            continue
        end = x["done_ms"]
        start = end - s["render_ms"] - (s.get("encode_ms") or 0)
        per.setdefault(x["replica"], []).append((start, end, x["sent_ms"]))
    return per


def cluster_idle_while_waiting(per, replicas):
    """Integral of min(waiting, idle workers) over time, 1 worker per replica (ms)."""
    events = []
    for rep, iv in per.items():
        for start, end, sent in iv:
            events.append((sent, "wait", +1))
            events.append((start, "wait", -1))
            events.append((start, "busy", +1))
            events.append((end, "busy", -1))
    events.sort()
    waiting = busy = 0
    t_prev = None
    total = 0.0
    for t, kind, d in events:
        if t_prev is not None and t > t_prev:
            total += (t - t_prev) * min(max(waiting, 0), max(replicas - busy, 0))
        t_prev = t
        if kind == "wait":
            waiting += d
        else:
            busy += d
    return total


def burst(files):
    rows = []
    for f in files:
        for e, r in runs(f):
            per = busy_intervals(r)
            reps = sorted(per)
            n = len(e.get("replicas") or []) or len(reps)
            ok = [x for x in r["requests"] if x["status"] == 200]
            makespan = max(x["done_ms"] for x in ok)
            busy = {k: sum(b - a for a, b, _ in v) for k, v in per.items()}
            last = {k: max(b for _, b, _ in v) for k, v in per.items()}
            idle = cluster_idle_while_waiting(per, n)
            bench_idle = (r["idle_executor_seconds"] or 0) + (r["idle_io_seconds"] or 0) \
                if r["idle_executor_seconds"] is not None else None
            rows.append(dict(file=f, run=r["run"], ok=len(ok), sent=r["sent"], makespan=makespan,
                             bound=r["makespan_bound_ms"], idle=idle, bench_idle=bench_idle,
                             busy=busy, last=last, tiles={k: len(v) for k, v in per.items()}))
    for x in rows:
        reps = " ".join(f"{k}: {x['tiles'][k]} tiles busy {x['busy'][k]:.0f} ms last {x['last'][k]:.0f}"
                        for k in sorted(x["busy"]))
        bi = "-" if x["bench_idle"] is None else f"{x['bench_idle'] * 1000:.0f}"
        print(f"{x['file']} run {x['run']}: ok {x['ok']}/{x['sent']} makespan {x['makespan']:.0f} ms"
              f" (bound {x['bound']:.0f}) cluster idle-while-waiting {x['idle']:.0f} ms,"
              f" replicas' counters {bi} ms | {reps}")
    if rows:
        ms = [x["makespan"] for x in rows]
        idle = [x["idle"] for x in rows]
        util = [min(x["busy"].values()) / x["makespan"] for x in rows if len(x["busy"]) > 1]
        bidle = [x["bench_idle"] * 1000 for x in rows if x["bench_idle"] is not None]
        print(f"MEDIAN over {len(rows)} runs: makespan {statistics.median(ms):.0f} ms"
              f" ({min(ms):.0f}-{max(ms):.0f}), cluster idle-while-waiting"
              f" {statistics.median(idle):.0f} ms ({min(idle):.0f}-{max(idle):.0f}),"
              f" replicas' counters {statistics.median(bidle) if bidle else float('nan'):.0f} ms,"
              f" less busy replica busy/makespan {statistics.median(util) if util else float('nan'):.2f}"
              f" ({min(util, default=float('nan')):.2f}-{max(util, default=float('nan')):.2f})")


if __name__ == "__main__":
    {"overload": overload, "burst": burst}[sys.argv[1]](sys.argv[2:])
