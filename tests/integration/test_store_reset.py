"""A store node back empty loses no acknowledged answer (DESIGN.md,
guarantee 3): "a counter that reads lower than last seen is a reset, not a
loss: what was seen stays as a base and the new increments add to it (with
R=1 too)", and "a replica that reads lower than its peers is written back
up (read repair), so the pool regains R copies before the next failure".

The split binaries, answers with user ids (a new user per answer: the
configuration a live night runs), each case on memcached:// and on redis://:

reset, replicas=1: 2 nodes. 1500 answers, the dashboard shows them; one node
is killed with kill -9 and restarted empty on the same port; 1500 more.
Every count of /v1/stats must equal the tally of acknowledged answers, a
snapshot must say in its warnings that the node (127.0.0.1:PORT) was reset,
and the aggregator's /metrics must count it
(livetally_aggregate_node_resets_total). The finding: the aggregator kept
each counter's old maximum, so the new increments on the restarted node
stayed invisible (about 2400 of 3000 answers on the dashboard).

repair, replicas=2: 3 nodes. A burst during which node B is killed and
restarted empty; in the quiet after it the pool must regain two copies of
every counter (livetally_aggregate_repair_backlog 0,
livetally_aggregate_keys_repaired_total > 0, and every counter key has the
same value on both of its replicas, read straight from the nodes). Then
node A is killed and stays dead, 1500 more answers: every count must equal
the tally. The finding: "38,311 of 40,000 acknowledged answers on the
dashboard, 82 counts off", and on Redis "30 counts off": the copies on B
were never written back up, so once A was gone the aggregator read B's low
values and kept its old maximum.

reset with two aggregators (memcached): both saw the node before it came
back empty; exactly one restores it (the claim on the node), the counts are
exact and stay exact (a second restore would count the old values twice).

An answer that gets 503 (or no response) is sent again with the same body
and user; a 409 duplicate_answer on such a resend means an earlier try was
counted, so it is tallied as counted. Each case prints its own PASS/FAIL
line; the script exits 1 if any failed."""

import collections
import os
import random
import socket
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import ltutil  # noqa: E402
import test_pipeline  # noqa: E402

EV = ltutil.load_event()
SENDERS = 4
RESEND_DEADLINE = 20.0  # per answer: resends of a 503 stop after this


# ---- sending answers ----------------------------------------------------

class Sent:
    """What the senders saw: statuses of every try, and the surprises."""

    def __init__(self):
        self.lock = threading.Lock()
        self.statuses = collections.Counter()
        self.resends = 0
        self.dup_on_resend = 0   # 409 duplicate_answer after a resend: counted
        self.unexpected = []     # (status, error) of answers neither counted nor retried

    def note(self, status):
        with self.lock:
            self.statuses[status] += 1


_user_lock = threading.Lock()
_user_n = [0]


def new_user(tag):
    with _user_lock:
        _user_n[0] += 1
        return "fan-%s-%d" % (tag, _user_n[0])


def send_one(c, a, tally, sent):
    """Sends a until it is counted (202, or 409 duplicate_answer on a
    resend) or refused; resends a 503 or a lost response with the same
    body. Returns the connection to use next (a new one after a lost one)."""
    deadline = time.monotonic() + RESEND_DEADLINE
    tries = 0
    while True:
        tries += 1
        try:
            status, body, _ = c.json("POST", "/v1/answers", a)
        except (OSError, ValueError) as e:  # no (whole) response: maybe counted, maybe not
            sent.note("lost")
            c.close()
            c = ltutil.Client(c.port)
            status, body = None, {"error": str(e)}
        else:
            sent.note(status)
        err = body.get("error") if isinstance(body, dict) else None
        if status == 202:
            tally.add(a)
            return c
        if status == 409 and err == "duplicate_answer" and tries > 1:
            with sent.lock:
                sent.dup_on_resend += 1
            tally.add(a)
            return c
        if status in (None, 503) and time.monotonic() < deadline:
            with sent.lock:
                sent.resends += 1
            time.sleep(0.05)
            continue
        with sent.lock:
            sent.unexpected.append((status, err))
        return c


def send_all(port, answers, tally, sent, threads=SENDERS):
    chunks = [answers[i::threads] for i in range(threads)]

    def run(chunk):
        c = ltutil.Client(port)
        for a in chunk:
            c = send_one(c, a, tally, sent)
        c.close()

    ts = [threading.Thread(target=run, args=(ch,), daemon=True) for ch in chunks]
    for t in ts:
        t.start()
    for t in ts:
        t.join(timeout=120)


def answers(seed, n, tag):
    """n answers to question 1, each from a user of its own."""
    out = test_pipeline.make_answers(random.Random(seed), 1, n)
    for a in out:
        a["user"] = new_user(tag)
    return out


def stream(port, seed, tag, tally, sent, stop):
    """Sends answers to question 1 until stop is set."""
    rng = random.Random(seed)
    c = ltutil.Client(port)
    while not stop.is_set():
        for a in test_pipeline.make_answers(rng, 1, 50):
            if stop.is_set():
                break
            a["user"] = new_user(tag)
            c = send_one(c, a, tally, sent)
    c.close()


# ---- every count of /v1/stats against the tally ----------------------------

def flat_stats(stats):
    """{name: count} of every count of /v1/stats (zeros left out)."""
    out = {}

    def put(k, v):
        if v:
            out[k] = v
    t = stats["totals"]
    for f in ("answers", "right", "wrong"):
        put("totals." + f, t[f])
    for q in stats["questions"]:
        p = "q%d." % q["id"]
        for f in ("answers", "right", "wrong"):
            put(p + f, q[f])
        for k, n in enumerate(q["by_answer"]):
            put(p + "option%d" % k, n)
        for a in q["by_age"]:
            for f in ("answers", "right", "wrong"):
                put(p + "age%d.%s" % (a["bucket"], f), a[f])
        for c in q["by_country"]:
            for f in ("answers", "right", "wrong"):
                put(p + "%s.%s" % (c["country"], f), c[f])
    return out


def flat_tally(tally):
    out = {}

    def put(k, v):
        if v:
            out[k] = v
    right = sum(t["right"] for t in tally.q.values())
    wrong = sum(t["wrong"] for t in tally.q.values())
    put("totals.answers", right + wrong)
    put("totals.right", right)
    put("totals.wrong", wrong)
    for qid, t in tally.q.items():
        p = "q%d." % qid
        put(p + "answers", t["right"] + t["wrong"])
        put(p + "right", t["right"])
        put(p + "wrong", t["wrong"])
        for k, n in t["by_answer"].items():
            put(p + "option%d" % k, n)
        for b, (r, w) in t["by_age"].items():
            put(p + "age%d.answers" % (b + 1), r + w)
            put(p + "age%d.right" % (b + 1), r)
            put(p + "age%d.wrong" % (b + 1), w)
        for cc, (r, w) in t["by_country"].items():
            put(p + "%s.answers" % cc, r + w)
            put(p + "%s.right" % cc, r)
            put(p + "%s.wrong" % cc, w)
    return out


def count_diffs(stats, tally):
    got, want = flat_stats(stats), flat_tally(tally)
    return {k: (got.get(k, 0), want.get(k, 0)) for k in sorted(set(got) | set(want))
            if got.get(k, 0) != want.get(k, 0)}


class Watch(threading.Thread):
    """Polls the dashboard's /v1/stats every 100 ms and keeps every warning
    any snapshot carried (a warning may be in a few snapshots only)."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.warnings = []
        self.seen = set()
        self.last = None
        self.stop = threading.Event()

    def run(self):
        c = ltutil.Client(self.port, timeout=5)
        while not self.stop.is_set():
            try:
                status, body, _ = c.json("GET", "/v1/stats")
            except (OSError, ValueError):
                c.close()
                c = ltutil.Client(self.port, timeout=5)
                status, body = None, None
            if status == 200:
                self.last = body
                for w in body.get("warnings") or []:
                    if w not in self.seen:
                        self.seen.add(w)
                        self.warnings.append(w)
            self.stop.wait(0.1)
        c.close()


def wait_exact(dash_port, tally, timeout):
    """Polls /v1/stats until every count equals the tally or timeout;
    returns (stats, diffs) of the last poll."""
    c = ltutil.Client(dash_port, timeout=5)
    deadline = time.monotonic() + timeout
    stats, diffs = None, {"(no stats)": (None, None)}
    try:
        while True:
            status, body, _ = c.json("GET", "/v1/stats")
            if status == 200:
                stats, diffs = body, count_diffs(body, tally)
                if not diffs:
                    break
            if time.monotonic() >= deadline:
                break
            time.sleep(0.1)
    finally:
        c.close()
    return stats, diffs


def check_counts(chk, stats, diffs, tally, what):
    total = tally.total()
    shown = stats["totals"]["answers"] if stats else None
    if diffs:
        sample = ", ".join("%s %s (tally %s)" % (k, g, w) for k, (g, w) in list(diffs.items())[:6])
        print("  %s: %s of %d acknowledged answers on the dashboard, %d counts off: %s%s" %
              (what, shown, total, len(diffs), sample, ", ..." if len(diffs) > 6 else ""),
              flush=True)
    else:
        print("  %s: every count of /v1/stats equals the tally (%d answers)" % (what, total),
              flush=True)
    chk.eq(len(diffs), 0, "%s: counts of /v1/stats off the tally (dashboard %s of %d answers)" %
           (what, shown, total))


def sent_checks(chk, sent, what):
    print("  %s: statuses %s, %d resends, %d counted by a 409 on a resend" %
          (what, dict(sent.statuses), sent.resends, sent.dup_on_resend), flush=True)
    chk.eq(sent.unexpected[:5], [], "%s: answers neither counted nor refused for a reason" % what)


# ---- the store, read straight from the nodes ------------------------------

def _resp_read(f):
    line = f.readline()
    if not line.endswith(b"\r\n"):
        raise RuntimeError("redis: short reply %r" % line)
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest
    if kind == b"-":
        raise RuntimeError("redis: %s" % rest.decode(errors="replace"))
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)
        return data[:-2]
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise RuntimeError("redis: unexpected reply %r" % line[:80])


def redis_call(port, *args, timeout=10.0):
    """One command, the whole reply parsed (arrays of any size: ltutil's
    redis_command reads only short replies)."""
    req = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        req += b"$%d\r\n%s\r\n" % (len(a), a)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(req)
        with s.makefile("rb") as f:
            return _resp_read(f)


def redis_node_counters(port):
    keys = [k.decode() for k in redis_call(port, "KEYS", EV["event"] + ":*")]
    keys = [k for k in keys if ltutil.parse_counter_key(EV, k)]
    out = {}
    for i in range(0, len(keys), 500):
        part = keys[i:i + 500]
        for k, v in zip(part, redis_call(port, "MGET", *part)):
            if v is not None:
                out[k] = int(v)
    return out


def node_counters(kind, port):
    """{counter key: value} of the event on one node."""
    if kind == "redis":
        return redis_node_counters(port)
    return {k: v for k, v in ltutil.node_counters(port, EV).items()
            if ltutil.parse_counter_key(EV, k)}


def check_replicas(chk, kind, ports, tally, what):
    """Every counter key on exactly 2 nodes with the same value, and the
    maximum over the replicas summed equals the tally."""
    per_node = [node_counters(kind, p) for p in ports]
    keys = set().union(*per_node)
    short = []      # (key, {port: value}) on fewer than 2 nodes or unequal
    top = {}
    for k in sorted(keys):
        vals = {p: n[k] for p, n in zip(ports, per_node) if k in n}
        top[k] = max(vals.values())
        if len(vals) != 2 or len(set(vals.values())) != 1:
            short.append((k, vals))
    if short:
        print("  %s: %d of %d counter keys without two equal copies, e.g. %s" %
              (what, len(short), len(keys), "; ".join("%s %s" % (k, v) for k, v in short[:4])),
              flush=True)
    chk.eq(len(short), 0, "%s: counter keys without two equal copies (of %d)" % (what, len(keys)))
    got, anomalies = ltutil.counter_summary(EV, top)
    chk.eq(anomalies, [], "%s: counter keys that fit the event" % what)
    failed = chk.failed
    ltutil.compare_summaries(chk, got, tally_summary(tally), "%s: max over replicas" % what,
                             questions=[1])
    if chk.failed == failed:
        print("  %s: the maximum over the replicas of every counter sums to the tally" % what,
              flush=True)


def tally_summary(tally):
    """test_pipeline.Tally in counter_summary's shape."""
    out = {}
    for qid, t in tally.q.items():
        out[qid] = {
            "right": t["right"], "wrong": t["wrong"],
            "by_answer": {k: n for k, n in t["by_answer"].items() if n},
            "by_age": {b + 1: tuple(rw) for b, rw in t["by_age"].items() if sum(rw)},
            "by_country": {cc: tuple(rw) for cc, rw in t["by_country"].items() if sum(rw)},
        }
    return out


# ---- the processes -----------------------------------------------------------

class Pipeline:
    def __init__(self, backend):
        self.ip, self.ap, self.dp = ltutil.free_port(), ltutil.free_port(), ltutil.free_port()
        self.ing = ltutil.Proc([ltutil.binary("livetally-ingest"), "--event", ltutil.EVENT,
                                "--backend", backend, "--listen", "127.0.0.1:%d" % self.ip],
                               port=self.ip, log_name="ingest")
        self.agg = ltutil.Proc([ltutil.binary("livetally-aggregate"), "--event", ltutil.EVENT,
                                "--backend", backend, "--interval", "200", "--listen",
                                "127.0.0.1:%d" % self.ap], port=self.ap, log_name="aggregate")
        self.dash = ltutil.Proc([ltutil.binary("livetally-dashboard"), "--event", ltutil.EVENT,
                                 "--backend", backend, "--listen", "127.0.0.1:%d" % self.dp,
                                 "--interval", "200"], port=self.dp, log_name="dashboard")
        ltutil.wait_ready(self.ip)

    def stop(self, failed):
        for p in (self.ing, self.agg, self.dash):
            p.stop(timeout=5)
        if failed:
            lines = self.agg.output().splitlines()
            print("  aggregate log, last lines:\n    " + "\n    ".join(lines[-8:]), flush=True)


def kill9(node):
    node.p.kill()
    node.p.wait(timeout=5)


def metric_wait(port, names, predicate, timeout):
    """wait_metrics, but returns early when after 3 s of polls the
    aggregator still exports none of names: a process that does not define
    a metric at start never will."""
    start = time.monotonic()

    def done(m):
        if predicate(m):
            return True
        return (time.monotonic() - start > 3.0 and not any(n in m for n in names))
    return ltutil.wait_metrics(port, done, timeout=timeout)


# ---- the cases ---------------------------------------------------------------

def case_reset(kind, chk):
    """replicas=1: a node back empty after the aggregator saw it."""
    start = ltutil.memcached if kind == "memcached" else ltutil.redis
    nodes = [start() for _ in range(2)]
    ports = [n.port for n in nodes]
    backend = "%s://%s?timeout_ms=300" % (kind, ",".join("127.0.0.1:%d" % p for p in ports))
    pl = Pipeline(backend)
    watch = None
    try:
        tally, sent = test_pipeline.Tally(), Sent()
        send_all(pl.ip, answers(11, 1500, "r1"), tally, sent)
        chk.eq(tally.total(), 1500, "before the reset: 1500 answers acknowledged")
        stats, diffs = wait_exact(pl.dp, tally, 15)
        check_counts(chk, stats, diffs, tally, "before the reset")

        victim = 1
        kill9(nodes[victim])
        nodes[victim] = start(port=ports[victim])  # back, empty
        watch = Watch(pl.dp)
        watch.start()
        t0 = time.monotonic()
        send_all(pl.ip, answers(12, 1, "r1probe"), tally, sent, threads=1)
        print("  the ingest answered 202 again %.1f s after the restart" %
              (time.monotonic() - t0), flush=True)
        send_all(pl.ip, answers(13, 1500, "r1"), tally, sent)
        sent_checks(chk, sent, "after the reset")
        stats, diffs = wait_exact(pl.dp, tally, 15)
        check_counts(chk, stats, diffs, tally, "after the reset")

        watch.stop.set()
        watch.join(timeout=10)
        node = "127.0.0.1:%d" % ports[victim]
        said = [w for w in watch.warnings if node in w and "reset" in w.lower()]
        if not said:
            print("  warnings seen: %d, e.g. %s" % (len(watch.warnings), watch.warnings[:2]),
                  flush=True)
        chk.true(said, "a snapshot warning names %s and says reset" % node)
        m = ltutil.metrics(pl.ap)
        resets = m.get("livetally_aggregate_node_resets_total")
        chk.true(resets is not None and resets >= 1,
                 "aggregate /metrics livetally_aggregate_node_resets_total >= 1 (got %s)" % resets)
    finally:
        if watch is not None:
            watch.stop.set()
        pl.stop(chk.failed)
        for n in nodes:
            n.stop()


def case_two_aggregators(kind, chk):
    """replicas=1 with two aggregators: both saw the node, one restores it
    (the claim), and the counts are exact, not restored twice."""
    start = ltutil.memcached if kind == "memcached" else ltutil.redis
    nodes = [start() for _ in range(2)]
    ports = [n.port for n in nodes]
    backend = "%s://%s?timeout_ms=300" % (kind, ",".join("127.0.0.1:%d" % p for p in ports))
    pl = Pipeline(backend)
    ap2 = ltutil.free_port()
    agg2 = ltutil.Proc([ltutil.binary("livetally-aggregate"), "--event", ltutil.EVENT,
                        "--backend", backend, "--interval", "200", "--listen",
                        "127.0.0.1:%d" % ap2], port=ap2, log_name="aggregate2")
    try:
        tally, sent = test_pipeline.Tally(), Sent()
        send_all(pl.ip, answers(31, 1500, "r2a"), tally, sent)
        stats, diffs = wait_exact(pl.dp, tally, 15)
        check_counts(chk, stats, diffs, tally, "before the reset")
        time.sleep(0.5)  # both aggregators have read the counts
        kill9(nodes[0])
        nodes[0] = start(port=ports[0])  # back, empty
        send_all(pl.ip, answers(32, 1500, "r2a"), tally, sent)
        sent_checks(chk, sent, "after the reset")
        stats, diffs = wait_exact(pl.dp, tally, 15)
        check_counts(chk, stats, diffs, tally, "after the reset")
        time.sleep(1.0)  # a second restore, if any, would have landed by now
        stats, diffs = wait_exact(pl.dp, tally, 5)
        check_counts(chk, stats, diffs, tally, "a second later")
        restored = [ltutil.metrics(p).get("livetally_aggregate_keys_restored_total", 0)
                    for p in (pl.ap, ap2)]
        resets = [ltutil.metrics(p).get("livetally_aggregate_node_resets_total", 0)
                  for p in (pl.ap, ap2)]
        # The one that saw it second may find the node restored already:
        # to it the node is whole, not reset.
        chk.true(max(resets) == 1, "an aggregator saw the reset (resets: %s)" % resets)
        chk.true(sorted(restored)[0] == 0 and sorted(restored)[1] > 0,
                 "exactly one aggregator restored the node (keys restored: %s)" % restored)
    finally:
        agg2.stop(timeout=5)
        pl.stop(chk.failed)
        for n in nodes:
            n.stop()


def case_repair(kind, chk):
    """replicas=2: node B back empty, repaired in the quiet, then node A
    killed (never two down at once)."""
    start = ltutil.memcached if kind == "memcached" else ltutil.redis
    nodes = [start() for _ in range(3)]
    ports = [n.port for n in nodes]
    backend = "%s://%s?replicas=2&timeout_ms=300" % (
        kind, ",".join("127.0.0.1:%d" % p for p in ports))
    pl = Pipeline(backend)
    b, a = 1, 0
    try:
        tally, sent = test_pipeline.Tally(), Sent()
        stop = threading.Event()
        ts = [threading.Thread(target=stream, args=(pl.ip, 200 + i, "r2", tally, sent, stop),
                               daemon=True) for i in range(SENDERS)]
        t0 = time.monotonic()
        for t in ts:
            t.start()
        time.sleep(1.5)
        at_kill = tally.total()
        kill9(nodes[b])
        time.sleep(1.5)
        nodes[b] = start(port=ports[b])  # back, empty
        at_restart = tally.total()
        time.sleep(2.0)
        stop.set()
        for t in ts:
            t.join(timeout=60)
        print("  burst 1: %d answers in %.1f s, %d before the kill of B, %d while B was down" %
              (tally.total(), time.monotonic() - t0, at_kill, at_restart - at_kill), flush=True)
        chk.true(at_restart - at_kill > 50, "answers kept coming while B was down")

        names = ("livetally_aggregate_repair_backlog", "livetally_aggregate_keys_repaired_total")
        m = metric_wait(pl.ap, names,
                        lambda m: m.get(names[0]) == 0 and m.get(names[1], 0) > 0, timeout=20)
        print("  after the quiet: %s" % {n: m.get(n) for n in names}, flush=True)
        chk.eq(m.get(names[0]), 0.0, "aggregate /metrics %s == 0" % names[0])
        chk.true(m.get(names[1], 0) > 0,
                 "aggregate /metrics %s > 0 (got %s)" % (names[1], m.get(names[1])))
        # The hints of the ingest are out too before the nodes are read.
        im = ltutil.wait_metrics(pl.ip, lambda m: ltutil.ingest_quiet(m) and
                                 m.get("livetally_ingest_store_hints_pending", 1) == 0, timeout=10)
        chk.eq(im.get("livetally_ingest_store_hints_pending"), 0.0, "ingest hints replayed")
        check_replicas(chk, kind, ports, tally, "before A is killed")
        stats, diffs = wait_exact(pl.dp, tally, 10)
        check_counts(chk, stats, diffs, tally, "before A is killed")

        kill9(nodes[a])  # and it stays dead
        send_all(pl.ip, answers(21, 1500, "r2b"), tally, sent)
        sent_checks(chk, sent, "both bursts")
        stats, diffs = wait_exact(pl.dp, tally, 15)
        check_counts(chk, stats, diffs, tally, "A dead, B once reset")
    finally:
        pl.stop(chk.failed)
        for n in nodes:
            n.stop()


class CaseChecker(ltutil.Checker):
    """A Checker per case: its FAIL lines carry the case's name."""

    def eq(self, got, want, what):
        super().eq(got, want, "%s: %s" % (self.name, what))


def main():
    t_start = time.monotonic()
    results = []
    cases = [(kind, name, fn) for kind in ("memcached", "redis")
             for name, fn in (("reset replicas=1", case_reset),
                              ("repair replicas=2", case_repair))]
    cases.append(("memcached", "reset with two aggregators", case_two_aggregators))
    for kind, name, fn in cases:
        label = "%s on %s" % (name, kind)
        print("== %s" % label, flush=True)
        chk = CaseChecker(label)
        t0 = time.monotonic()
        try:
            fn(kind, chk)
        except Exception as e:  # a harness error: reported as such
            chk.failed += 1
            print("ERROR %s: %s: %s" % (label, type(e).__name__, e), flush=True)
        ok = chk.failed == 0 and chk.passed > 0
        print("%s %s: %d checks passed, %d failed (%.1f s)" %
              ("PASS" if ok else "FAIL", label, chk.passed, chk.failed,
               time.monotonic() - t0), flush=True)
        results.append((label, ok))
    failed = [label for label, ok in results if not ok]
    print("test_store_reset: %d of %d cases passed%s (%.0f s)" %
          (len(results) - len(failed), len(results),
           "; failed: " + ", ".join(failed) if failed else "", time.monotonic() - t_start),
          flush=True)
    ltutil._cleanup()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
