"""Two store failures at once with replicas=2 (DESIGN.md guarantee 7): a 503
says whether the answer may have been counted.

memcached, 3 nodes, replicas=2: node X is killed and node Z is behind a link
(tests/integration/faultproxy.py) that turns 400 ms slow each way, longer
than the ingest's 300 ms I/O timeout, while the question's state stays
readable on Y. An answer with a counter on X and Z then has no replica that
confirms it: X is gone, Z timed out after the commands were written (they
reach Z all the same, 400 ms later). Its increments may have landed, so its
503 must not be `backend_unavailable` ("nothing of the answer was sent", a
retry is exact) but `unconfirmed` (it may be counted; a retry without a user
may count it twice). Once the link is fast again, the store must hold
exactly the 202s plus the `unconfirmed` answers, and a `backend_unavailable`
answer must count nothing.

Before the fix (CI run of 91772b9, test_fault_replicas under ASan: a replica
timed out while another node was killed) such an answer was answered 503
backend_unavailable and counted."""

import collections
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import faultproxy  # noqa: E402
import ltutil  # noqa: E402

SLOW_MS = 400
TIMEOUT_MS = 300


def state_nodes(ports, event):
    """The ports of the nodes that hold question 1's state key."""
    key = "%s:q1:state" % event
    return [p for p in ports if key in ltutil.mc_keys(p)]


def send(c, rng, ev, n, statuses, counted, maybe):
    """n answers to question 1, one at a time: 202s into counted, 503
    unconfirmed into both (here they all land: the slow node is alive)."""
    for i in range(n):
        a = ltutil.random_answer(rng, ev, 1)
        status, body, _ = c.json("POST", "/v1/answers", a)
        code = (body or {}).get("error", "")
        statuses["%d %s" % (status, code)] += 1
        if status == 202 or (status == 503 and code == "unconfirmed"):
            counted.add(a)
        if status == 503 and code == "unconfirmed":
            maybe.add(a)


def main():
    chk = ltutil.Checker("test_fault_two_nodes")
    tmp = tempfile.mkdtemp(prefix="lt-two-")
    event_path, ev = ltutil.write_event(tmp, n_questions=1, name="lt-two", open_all=False)
    token_path, token = ltutil.write_token(tmp)
    nodes = [ltutil.memcached() for _ in range(3)]
    direct = [n.port for n in nodes]
    proxies = [faultproxy.FaultProxy(p).start() for p in direct]
    backend = "memcached://%s?replicas=2&timeout_ms=%d" % (
        ",".join("127.0.0.1:%d" % p.port for p in proxies), TIMEOUT_MS)
    ip = ltutil.free_port()
    ing = ltutil.Proc([ltutil.binary("livetally-ingest"), "--event", event_path, "--backend",
                       backend, "--listen", "127.0.0.1:%d" % ip, "--threads", "1",
                       "--deadline-ms", "1500", "--admin-token-file", token_path],
                      port=ip, log_name="ingest")
    try:
        c = ltutil.Client(ip)
        rng = random.Random(7)
        statuses = collections.Counter()
        counted, maybe = ltutil.AnswerTally(ev), ltutil.AnswerTally(ev)
        # The question's state is written when it is opened through the API.
        st, _, _ = c.json("POST", "/v1/admin/questions/1/open", None,
                          headers={"Authorization": "Bearer %s" % token})
        chk.eq(st, 204, "question 1 opened")
        send(c, rng, ev, 30, statuses, counted, maybe)
        chk.eq(dict(statuses), {"202 ": 30}, "healthy pool: every answer acknowledged")
        holders = state_nodes(direct, ev["event"])
        chk.eq(len(holders), 2, "the state key is on two nodes (%s)" % holders)
        if len(holders) != 2:
            chk.finish()
        x = direct.index(holders[0])                      # killed
        z = [k for k in range(3) if direct[k] not in holders][0]  # slow
        y = direct.index(holders[1])                      # keeps the state readable
        print("killed %d, slow %d, state also on %d" % (direct[x], direct[z], direct[y]),
              flush=True)

        statuses.clear()
        proxies[z].set_delay(SLOW_MS)
        nodes[x].p.kill()
        nodes[x].p.wait()
        send(c, rng, ev, 40, statuses, counted, maybe)
        print("two nodes failing: %s" % dict(statuses), flush=True)
        chk.eq(statuses["503 backend_unavailable"] + statuses["503 unconfirmed"] +
               statuses["202 "], 40, "only 202, 503 unconfirmed and 503 backend_unavailable")
        chk.true(statuses["503 unconfirmed"] > 0,
                 "answers with no replica confirming are 503 unconfirmed")

        log = ing.output()
        chk.true("store: node down, kept out for a backoff node=127.0.0.1:%d " % proxies[x].port
                 in log, "the log says the killed node went down")
        chk.true("node=127.0.0.1:%d " % proxies[z].port in log,
                 "the log names the slow node (down or lagging)")
        proxies[z].set_delay(0)
        time.sleep(1.0)
        statuses.clear()
        send(c, rng, ev, 30, statuses, counted, maybe)
        chk.eq(dict(statuses), {"202 ": 30}, "one node down: every answer acknowledged")

        # What the two living nodes hold (the maximum of a counter's copies;
        # the slow commands have landed by now).
        time.sleep(2 * SLOW_MS / 1000.0)
        counters = {}
        for k in (y, z):
            for key, v in ltutil.node_counters(direct[k], ev).items():
                counters[key] = max(counters.get(key, 0), v)
        got, anomalies = ltutil.counter_summary(ev, counters)
        chk.eq(anomalies, [], "no stray counter keys")
        ltutil.compare_summaries(chk, got, counted.summary([1]), "202s + 503 unconfirmed, nothing else",
                                 questions=[1])
        m = ltutil.metrics(ip)
        chk.eq(m.get("livetally_ingest_answers_maybe_counted_total", 0),
               float(maybe.n), "the ingest counts the unconfirmed answers")
        c.close()
    finally:
        chk.eq(ing.stop(), 0, "ingest exit 0 on SIGTERM")
        if chk.failed:
            print(ing.output()[-4000:])
        for p in proxies:
            p.stop()
        for n in nodes:
            n.stop()
    chk.finish()


if __name__ == "__main__":
    main()
