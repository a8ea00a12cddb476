"""A new snapshot reaches every stream although the dashboard queues it a
slice per loop turn (dashboard/sse.c, SSE_PUSH_SLICE_BYTES): 60 plain
streams of the 42-question snapshot (bench/stats.py's, ~140 KB: some 16
slices), some gzip'd, while streams close in the middle of the push and a
newer snapshot replaces the one still being pushed. Every stream still open
ends on the newest generation, in order, with nothing torn; /v1/stats keeps
answering meanwhile. (How long a poll waits during the fan-out is measured
by bench/streams.py, not here.)"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
import ltutil  # noqa: E402
import stats  # noqa: E402

STREAMS = 60
CLOSE_EVERY = 7  # of the streams, these close right after a publish


def body(ev, generation):
    snap = stats.snapshot(ev["event"])
    snap["generation"] = generation
    return json.dumps(snap, separators=(",", ":")).encode()


def newest(stream, deadline):
    """The generations the stream got, in order, until it got 12, or none
    came for a while, or the deadline (shared by every stream) passed."""
    gens = []
    while 12 not in gens:
        left = deadline - time.monotonic()
        e = stream.next_event(timeout=max(0.1, min(left, 1.5 if gens else left)))
        if e is None:
            break
        if e["event"] == "stats":
            gens.append(json.loads(e["data"])["generation"])
    return gens


def main():
    chk = ltutil.Checker("test_sse_fanout")
    ev = ltutil.load_event()
    mc = ltutil.memcached()
    port = ltutil.free_port()
    dash = ltutil.Proc([ltutil.binary("livetally-dashboard"), "--event", ltutil.EVENT,
                        "--backend", "memcached://127.0.0.1:%d" % mc.port, "--listen",
                        "127.0.0.1:%d" % port, "--interval", "200"], port=port,
                       log_name="dashboard")
    streams = []
    try:
        ltutil.publish_snapshot(mc.port, ev["event"], 10, body(ev, 10))
        c = ltutil.Client(port)
        ltutil.wait_stats(c, lambda s: s.get("generation") == 10)
        for i in range(STREAMS):
            gz = {"Accept-Encoding": "gzip"} if i % 4 == 0 else None
            streams.append(ltutil.SseStream(port, headers=gz, timeout=20))
        first = [s.next_event(timeout=15) for s in streams]
        chk.eq(sum(e is not None and json.loads(e["data"])["generation"] == 10 for e in first),
               STREAMS, "every stream holds generation 10")

        # Two snapshots close together: the second may find the first's push
        # still going on, and replaces it; some streams go mid-push.
        ltutil.publish_snapshot(mc.port, ev["event"], 11, body(ev, 11))
        for k in range(0, STREAMS, CLOSE_EVERY):
            streams[k].close()
        time.sleep(0.05)
        ltutil.publish_snapshot(mc.port, ev["event"], 12, body(ev, 12))
        ok = 0
        for _ in range(20):
            status, snap, _ = c.json("GET", "/v1/stats")
            ok += status == 200 and snap["generation"] in (10, 11, 12)
        chk.eq(ok, 20, "/v1/stats answers during the fan-out")
        open_ = [s for k, s in enumerate(streams) if k % CLOSE_EVERY != 0]
        deadline = time.monotonic() + 20
        got = [newest(s, deadline) for s in open_]
        chk.eq(sum(g[-1:] == [12] for g in got), len(open_),
               "every open stream ends on generation 12 (%d streams)" % len(open_))
        chk.true(all(g == sorted(set(g)) and set(g) <= {11, 12} for g in got),
                 "in order, each generation once: %s" % sorted(set(map(tuple, got))))
        status, snap, _ = c.json("GET", "/v1/stats")
        chk.eq((status, snap["generation"]), (200, 12), "/v1/stats after the fan-out")
        m = ltutil.metrics(port)
        chk.eq(m.get("livetally_dashboard_streams"), float(len(open_)),
               "the closed streams are gone from the gauge")
        c.close()
    finally:
        for s in streams:
            s.close()
        chk.eq(dash.stop(), 0, "dashboard exit 0 on SIGTERM")
        if chk.failed:
            print(dash.output()[-3000:])
        mc.stop()
    chk.finish()


if __name__ == "__main__":
    main()
