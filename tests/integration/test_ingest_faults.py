"""The store failing under load, and SIGTERM under load.

1. One memcached of two is SIGKILLed while clients send, stays down a few
   seconds, and comes back EMPTY on the same port. Every response is a 202
   or a 503 (backend_unavailable / unconfirmed / overloaded, with
   Retry-After). A 202 sent for an answer submitted after the restart
   means its increments are on the new, empty node: for the loaded question, every counter (both
   nodes' shards summed) is at least the tally of those 202s; a question
   that receives answers only after the restart is counted exactly.
2. Both memcached servers are killed: no request sent while both are down
   gets a 202. They come back empty; a question opened afterwards is
   counted exactly.
3. SIGTERM while clients send: every response is a 202 or a 503 draining
   (or the connection is refused once the listener has closed); /healthz
   turns 503; the process exits 0 within --drain-timeout; every 202 is in
   the store exactly, and nothing else.
"""

import collections
import os
import random
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import ltutil  # noqa: E402

DEADLINE_MS = 1000
DRAIN_TIMEOUT_S = 5
LOAD = [(2, 1), (2, 1), (2, 4), (1, 16)]  # (connections, depth) per client thread


def start_load(port, ev, qid, seed):
    stop = threading.Event()
    senders = [ltutil.AnswerSender(port, ltutil.endless_feed(ev, qid, seed + i, stop), conns=c,
                                   depth=d) for i, (c, d) in enumerate(LOAD)]
    for s in senders:
        s.start()
    return stop, senders


def stop_load(stop, senders, chk, what):
    stop.set()
    for s in senders:
        s.join(30)
    chk.true(all(not s.is_alive() for s in senders), "%s: load stopped" % what)
    return [o for s in senders for o in s.outcomes], [e for s in senders for e in s.errors]


def send_list(port, answers, conns=2, depth=8, threads=2):
    feed = ltutil.answer_feed(answers)
    senders = [ltutil.AnswerSender(port, feed, conns=conns, depth=depth) for _ in range(threads)]
    for s in senders:
        s.start()
    for s in senders:
        s.join(60)
    return [o for s in senders for o in s.outcomes]


def check_503(chk, outs, what, allowed=("backend_unavailable", "unconfirmed", "overloaded")):
    bad = collections.Counter()
    for o in outs:
        if o.status == 503 and o.error in allowed and o.retry_after:
            continue
        if o.status == 202 and o.error is None:
            continue
        bad[(o.status, o.error, o.retry_after, o.closed)] += 1
    chk.eq(dict(bad), {}, "%s: every response 202 or 503 %s with Retry-After" %
           (what, "/".join(allowed)))


def admin_open(port, token, qid, timeout=15.0):
    """Opens a question, retrying while the store is still coming back."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        c = ltutil.RawConn(port)
        try:
            c.send(ltutil.http_bytes("POST", "/v1/admin/questions/%d/open" % qid, b"",
                                     {"Authorization": "Bearer " + token}, keep_alive=False))
            last = c.response()
        finally:
            c.close()
        if last[0] == 204:
            return 204
        time.sleep(0.2)
    return last and last[0]


def exact_after_restart(chk, ports, ev, outs, qid, what):
    """The question got answers only after the store came back: the store
    holds exactly its 202s. A 503 unconfirmed may leave its answer counted
    (DESIGN.md guarantee 7), so with any of those only bounds hold; a 503
    backend_unavailable or overloaded counts nothing."""
    tally = ltutil.AnswerTally(ev)
    n503 = 0
    for o in outs:
        if o.status == 202:
            tally.add(o.a)
        elif o.status == 503 and o.error == "unconfirmed":
            n503 += 1
    got, anomalies = ltutil.counter_summary(ev, ltutil.store_counters(ports, ev))
    chk.eq(anomalies, [], "%s: no stray counter keys" % what)
    chk.true(tally.n > 0, "%s: answers acknowledged after the restart (%d)" % (what, tally.n))
    want = tally.summary([qid])
    if n503 == 0:
        ltutil.compare_summaries(chk, got, want, what, questions=[qid])
    else:
        print("note: %s: %d answers got 503 unconfirmed after the restart: checking bounds" %
              (what, n503))
        ltutil.compare_summaries(chk, got, want, what, questions=[qid], at_least=True)
        g = got.get(qid, {"right": 0, "wrong": 0})
        chk.true(g["right"] + g["wrong"] <= tally.n + n503,
                 "%s: at most the 202s and the 503 unconfirmed counted" % what)
    return got


def store_scenario(chk, tmp):
    event_path, ev = ltutil.write_event(tmp, n_questions=8, name="lt-faults")
    token_path, token = ltutil.write_token(tmp)
    mems = [ltutil.memcached(), ltutil.memcached()]
    ports = [m.port for m in mems]
    backend = "memcached://127.0.0.1:%d,127.0.0.1:%d" % tuple(ports)
    ip = ltutil.free_port()
    ing = ltutil.Proc([ltutil.binary("livetally-ingest"), "--event", event_path, "--backend",
                       backend, "--listen", "127.0.0.1:%d" % ip, "--threads", "2",
                       "--deadline-ms", str(DEADLINE_MS), "--admin-token-file", token_path],
                      port=ip, log_name="ingest-faults")
    ltutil.wait_ready(ip)
    try:
        # Question states live in the store too; the victim is the node with
        # fewer of them, and the questions used below keep theirs on the
        # survivor (a lost state is probed on its own, see state_probe).
        # Read by name: a metadump (lru_crawler) may skip an item the LRU
        # maintainer moves meanwhile (seen under ASan: two of eight missing).
        state_on = {}
        names = {"%s:q%d:state" % (ev["event"], q): q for q in range(1, 9)}
        for p in ports:
            for k in ltutil.mc_get_many(p, list(names)):
                state_on[names[k]] = p
        chk.eq(sorted(state_on), list(range(1, 9)), "every open question has its state key")
        counts = collections.Counter(state_on.values())
        vi = 0 if counts[ports[0]] < counts[ports[1]] else 1
        victim, survivor = mems[vi], mems[1 - vi]
        on_s = sorted(q for q, p in state_on.items() if p == survivor.port)
        on_v = sorted(q for q, p in state_on.items() if p == victim.port)
        q_load, q_post, q_fresh = on_s[0], on_s[1], on_s[2]
        print("victim memcached :%d; load q%d, after-restart q%d, reopened q%d, states lost %s" %
              (victim.port, q_load, q_post, q_fresh, on_v), flush=True)

        # --- one node killed -------------------------------------------------
        stop, senders = start_load(ip, ev, q_load, 100)
        time.sleep(1.0)
        victim.p.kill()
        victim.p.wait()
        t_down = time.monotonic()
        victim.stop()
        time.sleep(3.0)
        victim = ltutil.memcached_on(victim.port)
        t_back = time.monotonic()
        mems[vi] = victim
        # The pool retries a failed node after a backoff (at most 2 s): the
        # after-restart question starts once nothing is carried any more.
        time.sleep(2.5)
        m = ltutil.wait_metrics(ip, lambda m: m.get("livetally_ingest_carry_keys", 1) == 0)
        chk.eq(m.get("livetally_ingest_carry_keys"), 0.0, "nothing carried once the node is back")
        chk.true(m.get("livetally_ingest_store_node_failures_total", 0) >= 1,
                 "the store handles' failures reach /metrics (%s)" %
                 m.get("livetally_ingest_store_node_failures_total"))
        chk.true(m.get("livetally_ingest_store_unavailable_items_total", 0) >= 1,
                 "so do the operations refused while the node was down")
        chk.true(m.get("livetally_ingest_store_connects_total", 0) >= 3,
                 "and the connections opened (both nodes, then the restarted one)")
        rng = random.Random(7)
        post = send_list(ip, [ltutil.random_answer(rng, ev, q_post) for _ in range(1500)])
        probe = state_probe(ip, ev, on_v, rng)
        time.sleep(0.3)
        outs, errors = stop_load(stop, senders, chk, "node killed")
        chk.eq(errors, [], "node killed: no connection failed")
        check_503(chk, outs + post, "node killed")
        down = [o for o in outs if t_down <= o.t_send and o.t_recv and o.t_recv < t_back]
        chk.true(any(o.status == 503 for o in down),
                 "node killed: 503s while it was down (%d requests)" % len(down))
        after = [o for o in outs if o.t_send >= t_back]
        n202 = sum(o.status == 202 for o in after)
        print("load: %d requests, %d while down (%d 503), %d after the restart (%d 202)" %
              (len(outs), len(down), sum(o.status == 503 for o in down), len(after), n202),
              flush=True)
        chk.true(n202 > 0, "node killed: answers accepted after the restart")

        m = ltutil.wait_metrics(ip, ltutil.ingest_quiet)
        chk.true(ltutil.ingest_quiet(m), "node killed: ingest quiet")
        got = exact_after_restart(chk, ports, ev, post, q_post, "after-restart question")
        tally = ltutil.AnswerTally(ev)
        for o in after:
            if o.status == 202:
                tally.add(o.a)
        # Answers acknowledged before the kill may be lost with the victim's
        # keys, so the loaded question holds at least the later ones.
        ltutil.compare_summaries(chk, got, tally.summary([q_load]), "loaded question after restart",
                                 questions=[q_load], at_least=True)
        if probe:
            q, probe_outs = probe
            chk.eq([o.status for o in probe_outs], [202] * len(probe_outs),
                   "probe question q%d (its state key was on the restarted node): answers taken"
                   % q)
            exact_after_restart(chk, ports, ev, probe_outs, q, "probe question")

        # --- both nodes killed -----------------------------------------------
        stop, senders = start_load(ip, ev, q_load, 200)
        time.sleep(0.7)
        for mc in mems:
            mc.p.kill()
        for mc in mems:
            mc.p.wait()
            mc.stop()
        t_dead = time.monotonic()
        # Requests out at the kill wait for the batch ahead of them to give
        # up (--deadline-ms each), so the first sent after it can take a few
        # seconds to come back: wait for one, then some more.
        until = time.monotonic() + 15.0
        while time.monotonic() < until and not any(
                o.t_send >= t_dead for s in senders for o in list(s.outcomes)):
            time.sleep(0.1)
        time.sleep(1.0)
        outs, errors = stop_load(stop, senders, chk, "both killed")
        chk.eq(errors, [], "both killed: no connection failed")
        check_503(chk, outs, "both killed")
        dead = [o for o in outs if o.t_send >= t_dead]
        chk.true(len(dead) > 0, "both killed: requests sent while the store was down")
        chk.eq(collections.Counter(o.status for o in dead), collections.Counter({503: len(dead)}),
               "both killed: no 202 while every store node is down")
        mems = [ltutil.memcached_on(p) for p in ports]
        time.sleep(2.5)
        # Every state key is gone with the nodes: an operator reopens the
        # question (the same as a question opened for the first time).
        chk.eq(admin_open(ip, token, q_fresh), 204, "reopen q%d after both restarts" % q_fresh)
        fresh = send_list(ip, [ltutil.random_answer(rng, ev, q_fresh) for _ in range(1000)])
        check_503(chk, fresh, "both restarted")
        m = ltutil.wait_metrics(ip, ltutil.ingest_quiet)
        chk.true(ltutil.ingest_quiet(m), "both restarted: ingest quiet")
        exact_after_restart(chk, ports, ev, fresh, q_fresh, "question opened after both restarts")
        print("metrics: unconfirmed %d, retries %d, carried %d, uncertain %d" % (
            m.get("livetally_ingest_answers_unconfirmed_total", -1),
            m.get("livetally_ingest_store_retries_total", -1),
            m.get("livetally_ingest_carried_keys_total", -1),
            m.get("livetally_ingest_uncertain_increments_total", -1)), flush=True)
    finally:
        chk.eq(ing.stop(), 0, "faults: ingest exit 0 on SIGTERM")
        if chk.failed:
            print(ing.output()[-4000:])
    return mems


def state_probe(port, ev, lost_states, rng):
    """A question whose state key was on the restarted node: answers to it
    must still be taken (it was open, and states only move forward)."""
    if not lost_states:
        return None
    qid = lost_states[0]
    c = ltutil.RawConn(port)
    outs = []
    try:
        for _ in range(5):
            a = ltutil.random_answer(rng, ev, qid)
            o = ltutil.Outcome(a, time.monotonic())
            c.send(ltutil.answer_bytes(a))
            o.status, _, body = c.response()
            o.error = body.decode(errors="replace")
            outs.append(o)
    finally:
        c.close()
    return qid, outs


class FreshConnSender(threading.Thread):
    """One answer per connection, until the feed ends or connecting fails."""

    def __init__(self, port, feed):
        super().__init__(daemon=True)
        self.port, self.feed = port, feed
        self.outcomes, self.errors = [], []

    def run(self):
        while True:
            a = self.feed()
            if a is None:
                return
            try:
                c = ltutil.RawConn(self.port, timeout=10)
            except OSError as e:
                self.errors.append((time.monotonic(), "connect: %s" % e))
                return
            o = ltutil.Outcome(a, time.monotonic())
            self.outcomes.append(o)
            try:
                c.send(ltutil.answer_bytes(a))
                o.status, hdrs, body = c.response()
                o.retry_after = hdrs.get("retry-after")
                o.error = ltutil.json.loads(body).get("error")
            except (OSError, ltutil.Closed) as e:
                o.closed = str(e)
            finally:
                c.close(reset=True)
            time.sleep(0.005)


def drain_scenario(chk, tmp, mems):
    event_path, ev = ltutil.write_event(tmp, n_questions=2, name="lt-drain")
    ports = [m.port for m in mems]
    # A generous store timeout: the store is not under test here, and a busy
    # machine can stall a process past the default second.
    backend = "memcached://127.0.0.1:%d,127.0.0.1:%d?timeout_ms=5000" % tuple(ports)
    ip = ltutil.free_port()
    ing = ltutil.Proc([ltutil.binary("livetally-ingest"), "--event", event_path, "--backend",
                       backend, "--listen", "127.0.0.1:%d" % ip, "--threads", "2",
                       "--drain-timeout", str(DRAIN_TIMEOUT_S)], port=ip, log_name="ingest-drain")
    ltutil.wait_ready(ip)
    try:
        stop = threading.Event()
        draining = lambda o: o.status == 503  # noqa: E731  stop writing once refused
        senders = []
        for i, (c, d) in enumerate([(3, 1), (3, 1), (3, 4), (3, 8), (2, 32)]):
            feed = ltutil.endless_feed(ev, 1 + i % 2, 300 + i, stop)
            senders.append(ltutil.AnswerSender(ip, feed, conns=c, depth=d, reconnect=False,
                                               stop_on=draining))
        # One client opens a new connection for every answer: refused once
        # the listeners are closed.
        churner = FreshConnSender(ip, ltutil.endless_feed(ev, 1, 399, stop))
        # /healthz on an answer connection (served by a fast thread; a
        # connection that starts with anything else goes to the main thread).
        health = ltutil.RawConn(ip)
        first = ltutil.random_answer(random.Random(1), ev, 1)
        health.send(ltutil.answer_bytes(first))
        chk.eq(health.response()[0], 202, "answer on the health connection")
        health_get = ltutil.http_bytes("GET", "/healthz", headers={"Content-Length": "0"})
        health.send(health_get)
        chk.eq(health.response()[0], 200, "healthz 200 before SIGTERM")
        for s in senders + [churner]:
            s.start()
        time.sleep(1.5)
        t_term = time.monotonic()
        ing.signal(signal.SIGTERM)
        health_seen = []
        while ing.p.poll() is None and time.monotonic() - t_term < DRAIN_TIMEOUT_S + 3:
            try:
                health.send(health_get)
                health_seen.append(health.response()[0])
            except (OSError, ltutil.Closed):
                break
            time.sleep(0.02)
        try:
            rc = ing.wait(DRAIN_TIMEOUT_S + 3)
        except Exception:
            rc = None
        t_exit = time.monotonic() - t_term
        health.close()
        stop.set()
        for s in senders + [churner]:
            s.join(30)
        chk.eq(rc, 0, "drain: exit 0")
        chk.true(t_exit <= DRAIN_TIMEOUT_S, "drain: exited in %.2fs <= --drain-timeout" % t_exit)
        chk.true(503 in health_seen and 200 not in health_seen[health_seen.index(503):]
                 if 503 in health_seen else False,
                 "drain: /healthz turns 503 and stays there (%s)" % health_seen[:20])

        outs = [o for s in senders + [churner] for o in s.outcomes]
        tally = ltutil.AnswerTally(ev)
        tally.add(first)
        kinds = collections.Counter()
        for o in outs:
            if o.status == 202:
                tally.add(o.a)
                kinds["202"] += 1
            elif o.status == 503 and o.error == "draining" and o.retry_after:
                kinds["503 draining"] += 1
            elif o.status is None and o.t_send >= t_term:
                kinds["no response (sent after SIGTERM)"] += 1
            else:
                kinds["BAD %s %s %s" % (o.status, o.error, o.closed)] += 1
        errors = [e for s in senders + [churner] for e in s.errors]
        early = [e for t, e in errors if t < t_term]
        print("drain: exit %s after %.2fs; %s; %d refused connects after SIGTERM" %
              (rc, t_exit, dict(kinds), len(errors) - len(early)), flush=True)
        chk.eq([k for k in kinds if k.startswith("BAD")], [],
               "drain: every response 202 or 503 draining")
        chk.eq(early, [], "drain: no connection failed before SIGTERM")
        chk.true(kinds["202"] > 0, "drain: answers acknowledged before SIGTERM")
        chk.true(kinds["503 draining"] > 0, "drain: answers refused 503 draining")
        got, anomalies = ltutil.counter_summary(ev, ltutil.store_counters(ports, ev))
        chk.eq(anomalies, [], "drain: no stray counter keys")
        ltutil.compare_summaries(chk, got, tally.summary(), "drain: store")
    finally:
        ing.stop()
        if chk.failed:
            print(ing.output()[-3000:])


def main():
    chk = ltutil.Checker("test_ingest_faults")
    tmp = tempfile.mkdtemp(prefix="lt-ingest-faults-")
    mems = store_scenario(chk, tmp)
    drain_scenario(chk, tmp, mems)
    chk.finish()


if __name__ == "__main__":
    main()
