"""Server-Sent Events at stadium scale (issue 15): N streams on one
livetally-dashboard, the memory each costs, and how long a new snapshot
takes to reach them.

A 42-question snapshot (bench/stats.py's, 140 KB) is published by hand into
a memcached; N clients (raw sockets in this process, read with a selector)
open /v1/stats/stream and read the current snapshot; the dashboard's
resident memory before and after gives the cost of a stream. Then a new
snapshot is published and each stream's arrival of it is timed from the
moment it was written to the store (the dashboard finds it at its next
poll, every --interval/4 = 250 ms here, which is part of the figure).

  python3 bench/streams.py --build build [--streams 3000] [--gzip]

--gzip: the clients send Accept-Encoding: gzip, as browsers do, and decode
each stream (chunked, then one gzip stream) as it comes.

Everything is stopped by PID at the end, also on failure."""

import argparse
import json
import os
import resource
import re
import selectors
import shutil
import socket
import subprocess
import sys
import time
import zlib

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "integration"))
sys.path.insert(0, here)
import ltutil  # noqa: E402
import stats  # noqa: E402


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def dechunk_gunzip(st, data):
    """The decoded bytes of a gzip'd chunked stream that arrived so far."""
    st["raw"] += data
    if not st["head"]:
        if b"\r\n\r\n" not in st["raw"]:
            return b""
        st["raw"] = st["raw"].split(b"\r\n\r\n", 1)[1]
        st["head"] = True
    out = b""
    while True:
        end = st["raw"].find(b"\r\n")
        if end < 0:
            return out
        size = int(st["raw"][:end].split(b";")[0], 16)
        if len(st["raw"]) < end + 2 + size + 2:
            return out
        out += st["z"].decompress(st["raw"][end + 2:end + 2 + size])
        st["raw"] = st["raw"][end + 2 + size + 2:]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--streams", type=int, default=3000)
    ap.add_argument("--gzip", action="store_true")
    a = ap.parse_args()
    ltutil.BIN = a.build
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, a.streams + 1024), hard))
    ev = ltutil.load_event()
    body = json.dumps(stats.snapshot(ev["event"]), separators=(",", ":")).encode()
    mc = ltutil.memcached()
    port = ltutil.free_port()
    dash = None
    socks = []
    try:
        ltutil.publish_snapshot(mc.port, ev["event"], 1, body)
        dash = ltutil.Proc([os.path.join(a.build, "dashboard", "livetally-dashboard"), "--event",
                            ltutil.EVENT, "--backend", "memcached://127.0.0.1:%d" % mc.port,
                            "--listen", "127.0.0.1:%d" % port, "--interval", "1000",
                            "--max-streams", str(a.streams + 100), "--log-level", "warn"],
                           port=port, log_name="dashboard")
        c = ltutil.Client(port)
        ltutil.wait_stats(c, lambda s: "questions" in s)  # the body's own generation is 7
        c.close()
        rss0 = rss_kib(dash.pid)
        sel = selectors.DefaultSelector()
        req = (b"GET /v1/stats/stream HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n" +
               (b"Accept-Encoding: gzip\r\n" if a.gzip else b"") + b"\r\n")
        state = {}
        t_open = time.monotonic()
        for i in range(a.streams):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(req)
            s.setblocking(False)
            socks.append(s)
            state[s] = {"tail": b"", "got": set(), "at": None, "raw": b"", "head": False,
                        "z": zlib.decompressobj(16 + zlib.MAX_WBITS) if a.gzip else None}
            sel.register(s, selectors.EVENT_READ)

        def pump(want, until):
            left = sum(1 for st in state.values() if want not in st["got"])
            while left and time.monotonic() < until:
                for key, _ in sel.select(timeout=0.2):
                    s = key.fileobj
                    st = state[s]
                    try:
                        data = s.recv(1 << 20)
                    except BlockingIOError:
                        continue
                    if not data:
                        sel.unregister(s)
                        continue
                    if st["z"] is not None:
                        data = dechunk_gunzip(st, data)
                    buf = st["tail"] + data
                    for g in (1, 2):
                        if g not in st["got"] and b"id: %d\n" % g in buf:
                            st["got"].add(g)
                            if g == want:
                                st["at"] = time.monotonic()
                                left -= 1
                    st["tail"] = buf[-32:]
            return left

        missing = pump(1, time.monotonic() + 120)
        opened = time.monotonic() - t_open
        time.sleep(1.0)
        rss1 = rss_kib(dash.pid)
        print("%d streams%s open and holding the current snapshot in %.1f s (%d without it)"
              % (a.streams, " (gzip)" if a.gzip else "", opened, missing))
        print("dashboard resident memory %d KiB -> %d KiB: %.1f KiB per stream"
              % (rss0, rss1, (rss1 - rss0) / a.streams))
        # GET /v1/stats meanwhile, from another process (wrk): what a poller
        # sees while the dashboard writes the new event to every stream
        wrk = None
        if shutil.which("wrk"):
            wrk = subprocess.Popen(["wrk", "-t1", "-c8", "-d3s", "--latency",
                                    "http://127.0.0.1:%d/v1/stats" % port],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            time.sleep(0.2)
        t0 = time.monotonic()
        ltutil.publish_snapshot(mc.port, ev["event"], 2, body.replace(b'"generation":7',
                                                                      b'"generation":8'))
        missing = pump(2, time.monotonic() + 30)
        times = sorted(st["at"] - t0 for st in state.values() if st["at"] is not None)
        if times:
            def pct(p):
                return times[min(len(times) - 1, int(len(times) * p / 100))]
            print("a new snapshot reached %d of %d streams: p50 %.2f s, p99 %.2f s, last %.2f s "
                  "after it was written to the store" % (len(times), a.streams, pct(50), pct(99),
                                                         times[-1]))
        else:
            print("a new snapshot reached no stream")
        if wrk is not None:
            out = wrk.communicate(timeout=30)[0]
            lat = {m.group(1): m.group(2) for m in re.finditer(r"^\s+(50|99)%\s+(\S+)", out, re.M)}
            rps = re.search(r"Requests/sec:\s+(\S+)", out)
            print("meanwhile GET /v1/stats (wrk -t1 -c8, 3 s from just before the write): "
                  "p50 %s, p99 %s, %s req/s" % (lat.get("50", "?"), lat.get("99", "?"),
                                                rps.group(1) if rps else "?"))
    finally:
        for s in socks:
            s.close()
        if dash is not None:
            dash.stop()
        mc.stop()


if __name__ == "__main__":
    main()
