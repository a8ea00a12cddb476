"""Connections the fast path passes to the main thread's evhttp (health,
metrics, admin, and in livetally the dashboard) are held to the same
bounds as answer connections:

1. a client that, after a request, dribbles the next one a byte every
   0.5 s is closed within --http-timeout (evhttp's own timeout restarts
   with every byte read, so it alone never closes it);
2. they count against --max-conns: with 40 allowed, at most 40 of 60
   clients holding kept-alive /healthz connections get in, the others a
   503 overloaded.
"""

import os
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import ltutil  # noqa: E402

TIMEOUT_S = 2
MAX_CONNS = 40
HEALTH = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"


def dribbler(port, out):
    """A request, its reply, then the next request a byte at a time: when
    did the server close (seconds after the dribble began, None: never)."""
    c = ltutil.RawConn(port, timeout=5)
    try:
        c.send(HEALTH)
        st = c.response()[0]
        t0 = time.monotonic()
        for b in HEALTH * 4:
            try:
                c.sock.send(bytes([b]))
            except OSError:
                out.append((st, time.monotonic() - t0))
                return
            if time.monotonic() - t0 > 3 * TIMEOUT_S + 2:
                break
            if c.wait_closed(0.5):
                out.append((st, time.monotonic() - t0))
                return
        out.append((st, None))
    finally:
        c.close(reset=True)


def main():
    chk = ltutil.Checker("test_ingest_passed")
    ltutil.raise_nofile(4096)
    tmp = tempfile.mkdtemp(prefix="lt-passed-")
    event_path, ev = ltutil.write_event(tmp, n_questions=1, name="lt-passed")
    mem = ltutil.memcached()
    ip = ltutil.free_port()
    ing = ltutil.Proc([ltutil.binary("livetally-ingest"), "--event", event_path, "--backend",
                       "memcached://127.0.0.1:%d" % mem.port, "--listen", "127.0.0.1:%d" % ip,
                       "--threads", "1", "--http-timeout", str(TIMEOUT_S), "--max-conns",
                       str(MAX_CONNS), "--drain-delay", "0"], port=ip, log_name="ingest-passed")
    try:
        ltutil.wait_ready(ip)
        out = []
        ts = [threading.Thread(target=dribbler, args=(ip, out)) for _ in range(10)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(30)
        print("dribblers (status, closed after s): %s" %
              sorted(out, key=lambda x: (x[1] is None, x[1] or 0)), flush=True)
        chk.eq(sorted({st for st, _ in out}), [200], "dribblers' first request answered")
        late = [t for _, t in out if t is None or t > TIMEOUT_S + 1.5]
        chk.eq(late, [], "every dribbler closed within --http-timeout (%d s) + 1.5 s" % TIMEOUT_S)

        time.sleep(0.3)  # the dribblers' connections are gone
        conns, got = [], {}
        for _ in range(60):
            try:
                c = ltutil.RawConn(ip, timeout=3)
                c.send(HEALTH)
                st, _, body = c.response()
            except (OSError, ltutil.Closed, socket.timeout) as e:
                st, body, c = type(e).__name__, b"", None
            key = (st, body.decode(errors="replace") if st == 503 else "")
            got[key] = got.get(key, 0) + 1
            if c is not None:
                conns.append(c)
        for c in conns:
            c.close()
        print("60 clients holding /healthz connections, --max-conns %d: %s" % (MAX_CONNS, got),
              flush=True)
        ok = got.get((200, ""), 0)
        chk.true(ok <= MAX_CONNS, "at most --max-conns of them got in (%d)" % ok)
        chk.true(ok >= MAX_CONNS - 5, "nearly all the allowed got in (%d)" % ok)
        chk.eq(got.get((503, '{"error":"overloaded"}'), 0), 60 - ok,
               "the others: 503 overloaded")
        chk.true(ing.p.poll() is None, "the ingest still runs")
    finally:
        rc = ing.stop()
        if chk.failed:
            print(ing.output()[-2000:])
        mem.stop()
    chk.eq(rc, 0, "the ingest exits 0 on SIGTERM")
    chk.finish()


if __name__ == "__main__":
    main()
