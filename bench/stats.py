"""GET /v1/stats at audience scale against nginx serving the same bytes
from a file, in one run (bench/stats.sh; issue 15's table).

A snapshot of a 42-question event with answers from 32 countries (every
question with its age buckets, options and the 32 countries, as the
aggregator writes them) is published by hand into a memcached, and
livetally-dashboard serves it; nginx (2 workers) serves the same bytes from
a file, and its gzip_static the file gzip'd by Python at level 6 (the
dashboard's level). wrk -t1 -cCONNECTIONS -dDURATION, keep-alive, one row at
a time, rows interleaved round by round: as is, gzip (Accept-Encoding:
gzip), and a revalidation (If-None-Match with the current ETag: 304).
Per row: requests/s, p99, the body bytes, the ratio to nginx's matching
row. Every process is stopped by PID at the end, also on failure."""

import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "integration"))
import ltutil  # noqa: E402

sys.path.insert(0, here)
import livenight  # noqa: E402

COUNTRIES = ["us", "gb", "ie", "fr", "de", "br", "jp", "in", "es", "it", "nl", "se", "no", "dk",
             "fi", "pl", "pt", "at", "ch", "be", "cz", "hu", "ro", "gr", "tr", "mx", "ar", "cl",
             "co", "au", "nz", "ca"]


def snapshot(event, n_questions=42):
    qs = []
    for i in range(n_questions):
        rows = [{"country": c, "answers": 40000 + 977 * k + i, "right": 25000 + 311 * k,
                 "wrong": 15000 + 666 * k + i,
                 "right_ratio": round((25000 + 311 * k) / (40000 + 977 * k + i), 4)}
                for k, c in enumerate(COUNTRIES)]
        ans = sum(r["answers"] for r in rows)
        right = sum(r["right"] for r in rows)
        qs.append({"id": i + 1, "text": "Question %d of the show, as the producer wrote it" % (i + 1),
                   "state": "closed", "correct": i % 4,
                   "options": ["option %d of question %d" % (k, i + 1) for k in range(4)],
                   "answers": ans, "right": right, "wrong": ans - right,
                   "right_ratio": round(right / ans, 4),
                   "by_answer": [ans // 4 + k for k in range(4)],
                   "by_age": [{"bucket": b, "label": l, "answers": ans // 3 + b, "right": right // 3,
                               "wrong": ans // 3 + b - right // 3}
                              for b, l in ((1, "under 18"), (2, "18-24"), (3, "25+"))],
                   "by_country": rows,
                   "best_country": {"country": "ie", "answers": rows[2]["answers"],
                                    "right_ratio": rows[2]["right_ratio"]}})
    return {"event": event, "generation": 7, "generated_at": "2026-12-07T20:00:00.000Z",
            "totals": {"answers": sum(q["answers"] for q in qs),
                       "right": sum(q["right"] for q in qs),
                       "wrong": sum(q["wrong"] for q in qs)},
            "questions": qs, "countries": qs[0]["by_country"],
            "ultimate_fans": [{"rank": r, "user": "fan-%d" % (r * 7919), "right": 42,
                               "total_ms": 100000 + r} for r in range(1, 11)],
            "warnings": [], "checks": {"ok": True, "mismatch_count": 0, "mismatches": []}}


def wrk(port, path, conns, duration, headers):
    args = [x for h in headers for x in ("-H", h)]
    return livenight.wrk(args + ["http://127.0.0.1:%d%s" % (port, path)], conns, duration)


def nginx(tmp, docroot):
    return livenight.nginx(
        tmp, server="root %s; gzip_static on; gzip_vary on; location = /v1/stats { "
                    "default_type application/json; try_files /stats.json =404; }" % docroot,
        http_extra="sendfile on; tcp_nopush on;")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=int, default=6)
    ap.add_argument("--connections", type=int, default=64)
    a = ap.parse_args()
    ltutil.BIN = a.build
    tmp = tempfile.mkdtemp(prefix="lt-bench-stats-")
    procs = []
    try:
        ev = ltutil.load_event()
        snap = snapshot(ev["event"])
        body = json.dumps(snap, separators=(",", ":")).encode()
        docroot = os.path.join(tmp, "www")
        os.makedirs(docroot)
        with open(os.path.join(docroot, "stats.json"), "wb") as f:
            f.write(body)
        with open(os.path.join(docroot, "stats.json.gz"), "wb") as f:
            f.write(gzip.compress(body, compresslevel=6))
        mc = ltutil.memcached()
        procs.append(mc)
        ltutil.publish_snapshot(mc.port, ev["event"], 7, body)
        dport = ltutil.free_port()
        dash = ltutil.Proc([os.path.join(a.build, "dashboard", "livetally-dashboard"), "--event",
                            ltutil.EVENT, "--backend", "memcached://127.0.0.1:%d" % mc.port,
                            "--listen", "127.0.0.1:%d" % dport, "--interval", "2000",
                            "--log-level", "warn"], port=dport, log_name="dashboard")
        procs.append(dash)
        ng, nport = nginx(tmp, docroot)
        procs.append(ng)
        c = ltutil.Client(dport)
        deadline = time.monotonic() + 15
        while True:
            status, h, got = c.request("GET", "/v1/stats")
            if status == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        if status != 200 or got != body:
            raise SystemExit("the dashboard does not serve the published snapshot (%d)" % status)
        etag = h["etag"]
        _, hg, gz = c.request("GET", "/v1/stats", headers={"Accept-Encoding": "gzip"})
        etag_gz = hg["etag"]
        c.close()
        nc = ltutil.Client(nport)
        _, hn, _ = nc.request("GET", "/v1/stats")
        nginx_etag = hn.get("etag", "")
        _, hng, ngz = nc.request("GET", "/v1/stats", headers={"Accept-Encoding": "gzip"})
        status, _, nbody = nc.request("GET", "/v1/stats")
        nc.close()
        if status != 200 or nbody != body or hng.get("content-encoding") != "gzip":
            raise SystemExit("nginx does not serve the snapshot (status %d, gzip %s)" %
                             (status, hng.get("content-encoding")))
        print("snapshot: 42 questions x 32 countries, %d bytes; gzip'd by the dashboard %d (%.1f%%),"
              " by Python for nginx gzip_static %d (nginx sends %s)"
              % (len(body), len(gz), 100.0 * len(gz) / len(body), len(ngz),
                 hng.get("content-encoding", "identity")))
        rows = [
            ("nginx file", nport, []),
            ("dashboard", dport, []),
            ("nginx gzip_static", nport, ["Accept-Encoding: gzip"]),
            ("dashboard gzip", dport, ["Accept-Encoding: gzip"]),
            ("nginx 304", nport, ["If-None-Match: " + nginx_etag]),
            ("dashboard 304", dport, ["If-None-Match: " + etag]),
            ("dashboard gzip 304", dport, ["Accept-Encoding: gzip", "If-None-Match: " + etag_gz]),
        ]
        res = {r[0]: [] for r in rows}
        print("wrk -t1 -c%d -d%ds, %d rounds, 2 CPUs, build %s" % (a.connections, a.duration,
                                                                 a.rounds, a.build))
        print("%-5s %-20s %10s %8s %8s" % ("round", "row", "req/s", "p99 ms", "non2xx"))
        for rnd in range(1, a.rounds + 1):
            for name, port, hdrs in rows:
                rps, p99, bad = wrk(port, "/v1/stats", a.connections, a.duration, hdrs)
                res[name].append((rps, p99))
                print("%-5d %-20s %10.0f %8.2f %8d" % (rnd, name, rps, p99, bad), flush=True)
        print("means over the rounds, and the ratio to nginx's matching row:")
        mean = {k: sum(x[0] for x in v) / len(v) for k, v in res.items()}
        for name, ref in (("dashboard", "nginx file"), ("dashboard gzip", "nginx gzip_static"),
                          ("dashboard 304", "nginx 304"), ("dashboard gzip 304", "nginx 304")):
            print("  %-20s %10.0f req/s  %.2fx %s (%.0f)" % (name, mean[name], mean[name] / mean[ref],
                                                            ref, mean[ref]))
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
