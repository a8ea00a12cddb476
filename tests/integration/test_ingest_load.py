"""Exact totals after a concurrent load: livetally-ingest with two fast
threads on two memcached servers, many client connections from several
threads, keep-alive and HTTP/1.1 pipelining (up to more requests written at
once than the server parses ahead). Every 202 must be in the store exactly,
on every counter (per question, by answer, by age bucket, by country), and
nothing else may be: the raw counters are read from both memcached servers
(every key, shards summed) and the aggregated snapshot is checked too."""

import collections
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import ltutil  # noqa: E402

N_ANSWERS = 12000
# (connections, requests written at once) per client thread: 22 connections
# from 6 threads; 40 is more than the server's pipeline window (32).
SENDERS = [(4, 1), (4, 1), (4, 4), (4, 4), (3, 16), (3, 40)]


def main():
    chk = ltutil.Checker("test_ingest_load")
    tmp = tempfile.mkdtemp(prefix="lt-ingest-load-")
    event_path, ev = ltutil.write_event(tmp, n_questions=4, name="lt-load")
    m1, m2 = ltutil.memcached(), ltutil.memcached()
    ports = [m1.port, m2.port]
    # A generous store timeout: the store is not under test here, and a busy
    # machine can stall a process past the default second.
    backend = "memcached://127.0.0.1:%d,127.0.0.1:%d?timeout_ms=5000" % tuple(ports)
    ip = ltutil.free_port()
    ing = ltutil.Proc([ltutil.binary("livetally-ingest"), "--event", event_path, "--backend",
                       backend, "--listen", "127.0.0.1:%d" % ip, "--threads", "2"], port=ip,
                      log_name="ingest")
    ltutil.wait_ready(ip)
    try:
        rng = random.Random(20261122)
        answers = []
        for i in range(N_ANSWERS):
            qid = rng.choice([1, 1, 1, 2, 2, 3])  # question 4 gets nothing
            answers.append(ltutil.random_answer(rng, ev, qid,
                                                user="fan-%d" % i if i % 7 == 0 else None))
        feed = ltutil.answer_feed(answers)
        senders = [ltutil.AnswerSender(ip, feed, conns=c, depth=d) for c, d in SENDERS]
        t0 = time.monotonic()
        for s in senders:
            s.start()
        for s in senders:
            s.join(60)
        elapsed = time.monotonic() - t0
        chk.true(all(not s.is_alive() for s in senders), "senders finished within 60 s")

        tally = ltutil.AnswerTally(ev)
        statuses = collections.Counter()
        bodies = collections.Counter()
        outcomes = [o for s in senders for o in s.outcomes]
        for o in outcomes:
            statuses[o.status] += 1
            bodies[(o.status, o.error)] += 1
            if o.status == 202:
                tally.add(o.a)
        print("sent %d answers in %.2fs over %d connections: %s" %
              (len(outcomes), elapsed, sum(c for c, _ in SENDERS), dict(statuses)), flush=True)
        chk.eq(len(outcomes), N_ANSWERS, "every answer sent")
        chk.eq(dict(statuses), {202: N_ANSWERS}, "every answer acknowledged 202")
        chk.eq(sum(len(s.errors) for s in senders), 0, "no connection failed")

        # Every 202 is confirmed by the store before it is sent, so the
        # counters are complete now; waiting for a quiet ingest only guards
        # against increments that were not the clients'.
        # (metrics are published every 250 ms: wait for the last figures)
        m = ltutil.wait_metrics(ip, lambda m: ltutil.ingest_quiet(m) and m.get(
            "livetally_ingest_answers_acknowledged_total", 0) >= N_ANSWERS)
        chk.true(ltutil.ingest_quiet(m), "ingest quiet after the load")
        counters = ltutil.store_counters(ports, ev)
        got, anomalies = ltutil.counter_summary(ev, counters)
        chk.eq(anomalies, [], "no counter key outside the event's scheme")
        compare_ok = chk.failed
        ltutil.compare_summaries(chk, got, tally.summary(), "store")
        chk.true(4 not in got, "no counter of a question nobody answered")
        if chk.failed != compare_ok:
            print("store counters: %d keys" % len(counters))
        per_node = [len(ltutil.node_counters(p, ev)) for p in ports]
        chk.true(all(n > 0 for n in per_node), "both nodes hold counters %s" % per_node)

        chk.eq(m.get('livetally_ingest_requests_total{code="202"}'), float(N_ANSWERS),
               "metrics: 202 count")
        chk.eq(m.get("livetally_ingest_answers_acknowledged_total"), float(N_ANSWERS),
               "metrics: acknowledged")
        chk.eq(m.get("livetally_ingest_increments_total"), float(4 * N_ANSWERS),
               "metrics: four increments per answer")
        keys = m.get("livetally_ingest_batch_keys_total", 0)
        batches = m.get("livetally_ingest_batches_total", 0)
        chk.true(0 < keys <= 4 * N_ANSWERS, "metrics: batch keys %d <= increments" % keys)
        print("batches %d, keys written %d (%.3f per answer)" %
              (batches, keys, keys / N_ANSWERS), flush=True)

        # The same figures through the aggregator's snapshot.
        rc, out = ltutil.aggregate_once(event_path, backend)
        chk.eq(rc, 0, "aggregate --once")
        snap = ltutil.read_snapshot(ports, ev)
        chk.true(snap is not None, "snapshot published")
        if snap:
            ltutil.compare_summaries(chk, ltutil.snapshot_summary(snap), tally.summary(),
                                     "snapshot")
            want_right = sum(q["right"] for q in tally.summary().values())
            chk.eq(snap["totals"], {"answers": N_ANSWERS, "right": want_right,
                                    "wrong": N_ANSWERS - want_right}, "snapshot totals")
        if rc != 0:
            print(out[-2000:])
    finally:
        chk.eq(ing.stop(), 0, "ingest: exit 0 on SIGTERM")
        if chk.failed:
            print(ing.output()[-3000:])
    chk.finish()


if __name__ == "__main__":
    main()
