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
4. A node whose state reads take longer than the close delay (node C, its
   store link 150 ms each way through tests/integration/faultproxy.py)
   refuses every answer sent after the close's 204 as well: it takes
   answers on its states only within QSTATE_CLOSE_DELAY_MS of its last
   read's start, and asks the store first past that. (Before, a node whose
   reads lagged took answers on a close it had not read yet: seen under
   ASan on a loaded machine, and on every run of this part.)
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
import faultproxy  # noqa: E402
import ltutil  # noqa: E402

MARGIN_MS = 30
SLOW_LINK_MS = 150


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


def close_around(chk, label, token, mem_port, ev, qid, admin_port, targets, lead_s=0.15,
                 seconds_after=0.4):
    """Closes qid through admin_port while client threads (one per entry of
    targets: (name, port)) send answers to it; checks that the close time
    the store records decides everywhere and that the 204 comes at it."""
    seen = []
    lock = threading.Lock()
    stop = threading.Event()

    def flow(name, port, seed):
        r2 = random.Random(seed)
        c = ltutil.RawConn(port)
        try:
            while not stop.is_set():
                r = send(c, r2, ev, qid)
                with lock:
                    seen.append((name,) + r)
        finally:
            c.close()

    ths = [threading.Thread(target=flow, args=(name, port, 100 + i))
           for i, (name, port) in enumerate(targets)]
    for th in ths:
        th.start()
    time.sleep(lead_s)
    t_call = time.time() * 1000
    chk.eq(admin(admin_port, token, qid, "close"), 204, "%s: close question %d" % (label, qid))
    t_204 = time.time() * 1000
    time.sleep(seconds_after)
    stop.set()
    for th in ths:
        th.join(15)
    val = ltutil.mc_get_many(mem_port, ["%s:q%d:state" % (ev["event"], qid)])
    state = list(val.values())[0] if val else ""
    state = state.decode() if isinstance(state, bytes) else state
    chk.true(state.startswith("closed "), "%s: the store holds the close (%r)" % (label, state))
    close_ms = int(state.split()[2]) if state.startswith("closed ") else 0
    print("%s: close asked at %.0f, its 204 at %.0f, close time %d (+%.0f ms after the call)" %
          (label, t_call, t_204, close_ms, close_ms - t_call), flush=True)
    chk.true(t_204 >= close_ms - MARGIN_MS,
             "%s: the close's 204 comes at its close time, not before" % label)
    after_204 = [x for x in seen if x[1] > t_204 and x[3] != 409]
    chk.eq(after_204[:5], [], "%s: every answer sent after the close's 204 is 409" % label)
    late_ok = [s for s in seen if s[3] == 202 and s[1] > close_ms + MARGIN_MS]
    early_no = [s for s in seen if s[3] != 202 and s[2] < close_ms - MARGIN_MS]
    wrong = [s for s in seen if s[3] not in (202, 409) or
             (s[3] == 409 and s[4] != "question_closed")]
    per_node = {}
    for s in seen:
        per_node.setdefault(s[0], [0, 0])[0 if s[3] == 202 else 1] += 1
    print("%s: %d answers around it, (202, 409) per node %s; accepted after the close time: "
          "%d; refused before it: %d" % (label, len(seen), per_node, len(late_ok), len(early_no)),
          flush=True)
    chk.eq(late_ok[:5], [], "%s: no answer received after the close time counted" % label)
    chk.eq(early_no[:5], [], "%s: no answer received before the close time refused" % label)
    chk.eq(wrong[:5], [], "%s: every answer 202 or 409 question_closed" % label)
    for name, _ in targets:
        mine = [s for s in seen if s[0] == name]
        chk.true(any(s[3] == 202 for s in mine) and any(s[3] == 409 for s in mine),
                 "%s: both sides of the close time seen on %s" % (label, name))


def main():
    chk = ltutil.Checker("test_question_state")
    tmp = tempfile.mkdtemp(prefix="lt-qstate-")
    event_path, ev = ltutil.write_event(tmp, n_questions=3, name="lt-qstate", open_all=False)
    token_path, token = ltutil.write_token(tmp)
    mem = ltutil.memcached()
    nodes = []
    proxies = []
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
        cb.close()
        close_around(chk, "close through A", token, mem.port, ev, 1, a, [("A", a), ("B", b)])

        # 4. node C reads the states through a link slower than the close
        # delay: it still refuses what is sent after the close's 204
        slow = faultproxy.FaultProxy(mem.port, delay_ms=SLOW_LINK_MS).start()
        proxies.append(slow)
        p = ltutil.free_port()
        nodes.append(ltutil.Proc([ltutil.binary("livetally-ingest"), "--event", event_path,
                                  "--backend", "memcached://127.0.0.1:%d" % slow.port,
                                  "--listen", "127.0.0.1:%d" % p, "--threads", "1",
                                  "--admin-token-file", token_path, "--drain-delay", "0"],
                                 port=p, log_name="ingest-qstate-slow"))
        ltutil.wait_ready(p, timeout=30)
        chk.eq(admin(a, token, 2, "open"), 204, "open question 2 through node A")
        close_around(chk, "close through A, C slow", token, mem.port, ev, 2, a,
                     [("A", a)] + [("C", p)] * 6, lead_s=1.5, seconds_after=1.5)
    finally:
        for n in nodes:
            n.stop()
        for x in proxies:
            x.stop()
        if chk.failed:
            for n in nodes:
                print(n.output()[-1500:])
        mem.stop()
    chk.finish()


if __name__ == "__main__":
    main()
