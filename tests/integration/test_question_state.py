"""Question state at once, across ingest nodes (two processes, one memcached).

1. A question opened through node A takes answers on node B at once: B
   held its first answers while it asked the store, instead of refusing
   them as not open until its next refresh.
2. A question closed through node A takes effect at the close time the
   state records (QSTATE_CLOSE_DELAY_MS after the call), on both nodes: an
   answer received before it counts, one after it is 409 question_closed,
   whichever node it reaches; the close's 204 comes at that time, so every
   answer sent after the 204 is refused.
3. A question nobody opened is still 409 question_not_open on every node.
And an admin request with a wrong token is 401, counted in /metrics and
logged, without the token it carried.
Client and servers share this machine's clock; a margin of 30 ms either
side of the close time absorbs the time a request spends in flight.
"""

import os
import random
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import ltutil  # noqa: E402

MARGIN_MS = 30


def admin(port, token, qid, op):
    c = ltutil.RawConn(port)
    try:
        c.send(ltutil.http_bytes("POST", "/v1/admin/questions/%d/%s" % (qid, op), b"",
                                 {"Authorization": "Bearer " + token}, keep_alive=False))
        return c.response()[0]
    finally:
        c.close()


def send(conn, rng, ev, qid):
    """One answer on a kept-alive connection: (wall ms sent, wall ms replied,
    status, error)."""
    t0 = time.time() * 1000
    conn.send(ltutil.answer_bytes(ltutil.random_answer(rng, ev, qid)))
    status, _, body = conn.response()
    t1 = time.time() * 1000
    err = None
    if body:
        import json
        err = json.loads(body).get("error")
    return t0, t1, status, err


def main():
    chk = ltutil.Checker("test_question_state")
    tmp = tempfile.mkdtemp(prefix="lt-qstate-")
    event_path, ev = ltutil.write_event(tmp, n_questions=3, name="lt-qstate", open_all=False)
    token_path, token = ltutil.write_token(tmp)
    mem = ltutil.memcached()
    nodes = []
    try:
        backend = "memcached://127.0.0.1:%d" % mem.port
        for i in range(2):
            p = ltutil.free_port()
            nodes.append(ltutil.Proc([ltutil.binary("livetally-ingest"), "--event", event_path,
                                      "--backend", backend, "--listen", "127.0.0.1:%d" % p,
                                      "--threads", "2", "--admin-token-file", token_path,
                                      "--drain-delay", "0"], port=p,
                                     log_name="ingest-qstate-%d" % i))
            ltutil.wait_ready(p)
        a, b = nodes[0].port, nodes[1].port
        rng = random.Random(11)
        cb = ltutil.RawConn(b)

        # 0. a wrong token: 401, counted, logged without what was sent
        for i in range(5):
            chk.eq(admin(a, "guess-%d" % i, 1, "open"), 401, "a wrong token: 401")
        m = ltutil.wait_metrics(a, lambda m: m.get("livetally_ingest_admin_refused_total") == 5)
        chk.eq(m.get("livetally_ingest_admin_refused_total"), 5.0,
               "refused admin requests counted")
        log = nodes[0].output()
        chk.true("admin request refused" in log and "guess-" not in log,
                 "refusals logged, the tokens sent never")

        # 3. not opened: refused on both
        for port in (a, b):
            c = ltutil.RawConn(port)
            r = send(c, rng, ev, 3)
            c.close()
            chk.eq(r[2:], (409, "question_not_open"), "question 3, never opened: 409 on :%d" % port)

        # 1. opened through A, answered through B at once
        chk.eq(admin(a, token, 1, "open"), 204, "open question 1 through node A")
        first = [send(cb, rng, ev, 1) for _ in range(200)]
        statuses = {}
        for r in first:
            statuses[(r[2], r[3])] = statuses.get((r[2], r[3]), 0) + 1
        print("open through A, first 200 answers on B (%.0f ms): %s" %
              (first[-1][1] - first[0][0], statuses), flush=True)
        chk.eq(statuses, {(202, None): 200}, "B takes question 1 from its first answer")

        # 2. closed through A while answers flow to A and B: the recorded
        # close time decides on both, and the close's 204 comes at it
        ca = ltutil.RawConn(a)
        seen = []
        stop = threading.Event()

        def flow():
            r2 = random.Random(12)
            while not stop.is_set():
                seen.append(("B",) + send(cb, r2, ev, 1))
                seen.append(("A",) + send(ca, r2, ev, 1))

        th = threading.Thread(target=flow)
        th.start()
        time.sleep(0.15)
        t_call = time.time() * 1000
        chk.eq(admin(a, token, 1, "close"), 204, "close question 1 through node A")
        t_204 = time.time() * 1000
        time.sleep(0.4)
        stop.set()
        th.join(10)
        ca.close()
        val = ltutil.mc_get_many(mem.port, ["%s:q1:state" % ev["event"]])
        state = list(val.values())[0] if val else ""
        state = state.decode() if isinstance(state, bytes) else state
        chk.true(state.startswith("closed "), "the store holds the close (%r)" % state)
        close_ms = int(state.split()[2]) if state.startswith("closed ") else 0
        print("close: asked at %.0f, its 204 at %.0f, close time %d (+%.0f ms after the call)" %
              (t_call, t_204, close_ms, close_ms - t_call), flush=True)
        chk.true(t_204 >= close_ms - MARGIN_MS,
                 "the close's 204 comes at its close time, not before")
        after_204 = [x for x in seen if x[1] > t_204 and x[3] != 409]
        chk.eq(after_204[:5], [], "every answer sent after the close's 204 is 409, on A and B")
        late_ok = [s for s in seen if s[3] == 202 and s[1] > close_ms + MARGIN_MS]
        early_no = [s for s in seen if s[3] != 202 and s[2] < close_ms - MARGIN_MS]
        wrong = [s for s in seen if s[3] not in (202, 409) or
                 (s[3] == 409 and s[4] != "question_closed")]
        print("close through A: %d answers around it on A and B; accepted after the close "
              "time: %d; refused before it: %d" % (len(seen), len(late_ok), len(early_no)),
              flush=True)
        chk.eq(late_ok[:5], [], "no answer received after the close time counted, on A or B")
        chk.eq(early_no[:5], [], "no answer received before the close time refused")
        chk.eq(wrong[:5], [], "every answer 202 or 409 question_closed")
        chk.true(any(s[3] == 202 for s in seen) and any(s[3] == 409 for s in seen),
                 "both sides of the close time were seen")
        cb.close()
    finally:
        for n in nodes:
            n.stop()
        if chk.failed:
            for n in nodes:
                print(n.output()[-1500:])
        mem.stop()
    chk.finish()


if __name__ == "__main__":
    main()
