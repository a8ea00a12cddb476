"""Lose a store node mid-burst, lose no count: the split binaries on
replicas=2 over 3 memcached servers, then over 3 redis servers. While
answers stream in, one node is killed with kill -9 and restarted empty on
the same port a few seconds later; every answer must still be acknowledged
(202) and the final statistics must equal the tally of acknowledged answers
exactly (reads take the maximum of the replicas, so the empty node cannot
pull a total down, and the increments it missed are replayed to it).

Only when the ingest's log shows another node down as well (a living node
timing out on a starved machine: two failures at once, seen once under ASan
in CI) may an answer be 503: `unconfirmed` (then it may be counted: the
total lies between the 202s and the 202s plus those) or
`backend_unavailable` (counted nothing). test_fault_two_nodes.py makes that
case on purpose and checks it exactly."""

import collections
import os
import random
import re
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import ltutil  # noqa: E402
import test_pipeline  # noqa: E402

SENDERS = 4


def stream(port, seed, tally, statuses, lock, stop):
    """Sends answers to question 1 until stop is set; tallies the 202s."""
    rng = random.Random(seed)
    c = ltutil.Client(port)
    n = 0
    while not stop.is_set():
        for a in test_pipeline.make_answers(rng, 1, 50):
            if stop.is_set():
                break
            if "user" in a:  # one answer per user and question: a new user each time
                n += 1
                a["user"] = "fan-%d-%d" % (seed, n)
            status, body, _ = c.json("POST", "/v1/answers", a)
            with lock:
                statuses[status if status == 202 else
                         "%d %s" % (status, (body or {}).get("error"))] += 1
            if status == 202:
                tally.add(a)
    c.close()


def run(kind, chk, token_path):
    start = ltutil.memcached if kind == "memcached" else ltutil.redis
    nodes = [start() for _ in range(3)]
    ports = [n.port for n in nodes]
    backend = "%s://%s?replicas=2&timeout_ms=300" % (
        kind, ",".join("127.0.0.1:%d" % p for p in ports))
    ip, dp = ltutil.free_port(), ltutil.free_port()
    ing = ltutil.Proc([ltutil.binary("livetally-ingest"), "--event", ltutil.EVENT, "--backend",
                       backend, "--listen", "127.0.0.1:%d" % ip, "--admin-token-file",
                       token_path], port=ip, log_name="ingest")
    agg = ltutil.Proc([ltutil.binary("livetally-aggregate"), "--event", ltutil.EVENT,
                       "--backend", backend, "--interval", "200"], log_name="aggregate")
    dash = ltutil.Proc([ltutil.binary("livetally-dashboard"), "--event", ltutil.EVENT,
                        "--backend", backend, "--listen", "127.0.0.1:%d" % dp, "--interval",
                        "200"], port=dp, log_name="dashboard")
    mode = "%s replicas=2" % kind
    try:
        tally = test_pipeline.Tally()
        statuses = collections.Counter()
        lock = threading.Lock()
        stop = threading.Event()
        senders = [threading.Thread(target=stream, args=(ip, 100 + i, tally, statuses, lock,
                                                         stop)) for i in range(SENDERS)]
        for t in senders:
            t.start()
        time.sleep(1.0)
        victim = 1
        before_kill = tally.total()
        nodes[victim].p.kill()  # kill -9, mid-load
        nodes[victim].p.wait()
        time.sleep(2.5)
        during = tally.total() - before_kill
        nodes[victim] = start(port=ports[victim])  # back, empty
        time.sleep(3.0)  # the load goes on: the missed increments are replayed
        stop.set()
        for t in senders:
            t.join()
        total = tally.total()
        print("%s: %d answers acknowledged, %d while the node was down; statuses %s" %
              (mode, total, during, dict(statuses)), flush=True)
        chk.true(during > 100, "%s: answers kept coming while the node was down" % mode)
        others = second_failures(ing.output(), ports[victim])
        unconfirmed = statuses["503 unconfirmed"]
        d = ltutil.Client(dp)
        stats = ltutil.wait_stats(d, lambda s: s["totals"]["answers"] >= total, timeout=20)
        if set(statuses) == {202} or not others:
            chk.eq(set(statuses), {202}, "%s: every answer acknowledged" % mode)
            test_pipeline.check_stats(stats, tally, {1: "open"}, chk, mode)
        else:
            # Two failures at once (a living node timed out too: a starved
            # machine): an answer with a counter on both may be 503
            # unconfirmed, and counted; any other 503 counts nothing.
            print("note: %s: another node failed as well (%s): bounds" % (mode, others))
            chk.eq(set(statuses) - {202, "503 unconfirmed", "503 backend_unavailable"}, set(),
                   "%s: 202, or 503 unconfirmed / backend_unavailable" % mode)
            got = stats["totals"]["answers"]
            chk.true(total <= got <= total + unconfirmed,
                     "%s: the 202s counted, and at most the unconfirmed besides: %d <= %d <= %d" %
                     (mode, total, got, total + unconfirmed))
        # and it stays exact (nothing arrives late, nothing is counted twice)
        gen = stats["generation"]
        later = ltutil.wait_stats(d, lambda s: s["generation"] > gen + 2)
        chk.eq(later["totals"], stats["totals"], "%s: totals stable" % mode)
        d.close()

        # Between two questions no batch goes out: the increments a replica
        # missed are replayed all the same once it is back.
        m = answers_while_down(chk, "%s: answers acknowledged with a replica down" % mode,
                               nodes[victim], ip, 5)
        queued = m.get("livetally_ingest_store_hints_queued_total", 0)
        chk.true(queued > 0, "%s: writes kept for the dead replica (%s)" % (mode, queued))
        replayed0 = m.get("livetally_ingest_store_hints_replayed_total", 0)
        nodes[victim] = start(port=ports[victim])  # back, empty; no more answers
        m = ltutil.wait_metrics(ip, lambda m: m.get("livetally_ingest_store_hints_pending", 1) == 0)
        chk.eq(m.get("livetally_ingest_store_hints_pending"), 0.0,
               "%s: hints replayed while idle" % mode)
        chk.true(m.get("livetally_ingest_store_hints_replayed_total", 0) > replayed0,
                 "%s: replayed, not dropped" % mode)
        drain_replays(chk, mode, kind, nodes, ports, victim, backend, token_path)
    finally:
        chk.eq(ing.stop(), 0, "%s: ingest exit 0 on SIGTERM" % mode)
        chk.eq(agg.stop(), 0, "%s: aggregate exit 0 on SIGTERM" % mode)
        chk.eq(dash.stop(), 0, "%s: dashboard exit 0 on SIGTERM" % mode)
        if chk.failed:
            for p in (ing, agg, dash):
                print(p.output()[-3000:])
        for n in nodes:
            n.stop()


def second_failures(log, victim_port):
    """The nodes other than the victim that the ingest log says went down."""
    out = set()
    for line in log.splitlines():
        m = re.search(r"store: node down.* node=127\.0\.0\.1:(\d+)", line)
        if m and int(m.group(1)) != victim_port:
            out.add(int(m.group(1)))
    return sorted(out)


def answers_while_down(chk, what, node, ip, seed):
    """kill -9 node, then 200 anonymous answers to the ingest at ip, each a
    202; returns its metrics once it holds hints for the node."""
    node.p.kill()
    node.p.wait()
    c = ltutil.Client(ip)
    sent = 0
    for a in test_pipeline.make_answers(random.Random(seed), 1, 200):
        a.pop("user", None)
        status, _, _ = c.json("POST", "/v1/answers", a)
        sent += status == 202
    c.close()
    chk.eq(sent, 200, what)
    return ltutil.wait_metrics(ip, lambda m: m.get("livetally_ingest_store_hints_pending", 0) > 0)


def drain_replays(chk, mode, kind, nodes, ports, victim, backend, token_path):
    """A rolling restart must not leave a replica behind: an ingest stopped
    (SIGTERM, --drain-delay 0) right after a replica came back writes the
    hints it held for it before it exits. Before, it exited at once and
    logged "closing with hints not replayed": the replica stayed behind, for
    the next failure of its peer to expose."""
    start = ltutil.memcached if kind == "memcached" else ltutil.redis
    ip = ltutil.free_port()
    ing = ltutil.Proc([ltutil.binary("livetally-ingest"), "--event", ltutil.EVENT, "--backend",
                       backend, "--listen", "127.0.0.1:%d" % ip, "--admin-token-file",
                       token_path, "--drain-delay", "0"], port=ip, log_name="ingest-drain")
    try:
        ltutil.wait_ready(ip)
        m = answers_while_down(chk, "%s: drain: answers acknowledged with a replica down" % mode,
                               nodes[victim], ip, 9)
        chk.true(m.get("livetally_ingest_store_hints_pending", 0) > 0,
                 "%s: drain: hints held for the dead replica" % mode)
        nodes[victim] = start(port=ports[victim])  # back, empty
        t0 = time.monotonic()
        rc = ing.stop(timeout=20)
        took = time.monotonic() - t0
        log = ing.output()
        print("%s: stopped right after the replica came back: exit %s in %.1f s" %
              (mode, rc, took), flush=True)
        chk.eq(rc, 0, "%s: drain: exit 0" % mode)
        chk.true("closing with hints not replayed" not in log and "given up" not in log,
                 "%s: drain: every hint written before the exit" % mode)
        if chk.failed:
            print(log[-2000:])
    finally:
        ing.stop()


def main():
    chk = ltutil.Checker("test_fault_replicas")
    tmp = tempfile.mkdtemp(prefix="lt-fault-")
    token_path, _ = ltutil.write_token(tmp)
    run("memcached", chk, token_path)
    run("redis", chk, token_path)
    chk.finish()


if __name__ == "__main__":
    main()
