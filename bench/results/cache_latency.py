#!/usr/bin/env python3
"""Sequential request latency through a balancer (bench/README.md "Scaling out", table 4).

  cache_latency.py BASE_URL [N]

N (default 200) requests per case, one at a time on one keep-alive connection, timed from send to
the last body byte. Cases (tile 2/1/1, iter 2048, 256x256):
  miss     N distinct URLs (iter=2048+i): a miss in nginx's cache and in the replica's, rendered
  bypass   N URLs with a unique nonce: rendered, stored nowhere (Cache-Control: no-store)
  hit      one URL without nonce, requested once before (not timed), then N times
  replica  the same URL through /replica/r1/ (nginx proxies without its cache): the replica's
           own memory cache (primed once first)
Prints median, p99 and max in ms and the X-Cache-Status / X-Overdrive-Cache values seen.
"""
import http.client
import statistics
import sys
import time
import urllib.parse


def run(conn, paths):
    lat, seen = [], {}
    for p in paths:
        t0 = time.perf_counter()
        conn.request("GET", p)
        r = conn.getresponse()
        r.read()
        lat.append((time.perf_counter() - t0) * 1000)
        key = (r.status, r.getheader("X-Cache-Status"), r.getheader("X-Overdrive-Cache"))
        seen[key] = seen.get(key, 0) + 1
    return lat, seen


def main():
    base = urllib.parse.urlparse(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    conn = http.client.HTTPConnection(base.hostname, base.port)
    stamp = str(int(time.time()))
    tile = "/tile/2/1/1.png?iter=2048"
    cases = {
        "miss": [f"/tile/2/1/1.png?iter={2048 + i}&palette=ocean" for i in range(n)],
        "bypass": [f"{tile}&nonce={stamp}-{i}" for i in range(n)],
        "hit": [tile] * n,
        "replica": ["/replica/r1" + tile + "&palette=fire"] * n,
    }
    run(conn, [tile, "/replica/r1" + tile + "&palette=fire"])  # prime hit and replica
    for name, paths in cases.items():
        lat, seen = run(conn, paths)
        q = sorted(lat)
        p99 = q[min(len(q) - 1, int(0.99 * len(q)))]
        print(f"{name:8} n={n} median {statistics.median(lat):.2f} ms  p99 {p99:.2f} ms"
              f"  max {q[-1]:.2f} ms  (status, X-Cache-Status, X-Overdrive-Cache): {seen}")


if __name__ == "__main__":
    main()
