"""A pool grows mid-event by a rolling restart and every acknowledged answer
is counted (issue 18: 3 memcached, 3,000 answers, a 4th node added to
--backend, 3,000 more: the dashboard showed about 5,140 of 6,000).

On memcached:// (replicas=1) and on redis:// with replicas=2, with fans
answering all along (every answer with its own user, as the app sends it,
to one of two ingest nodes; a try that finds its node restarting goes to
the other with the same body, and a 409 duplicate_answer on such a retry
means the first try was counted):
  - two ingests, an aggregator and a dashboard on 3 nodes, a 4th node idle;
  - ingest 1 restarted with the 4 nodes: it records epoch 1 and writes its
    counters there ("{event}~1:" keys), while ingest 2 still writes epoch 0;
    the aggregator, still on 3 nodes, says in the snapshot that the pool
    grew under it;
  - the aggregator restarted with the 4 nodes (no note any more), then
    ingest 2;
  - the answers stop: the dashboard shows exactly the acknowledged answers,
    every breakdown too; the 4th node took epoch-1 counters and nothing else
    of the event's (questions, users and snapshots stay on epoch 0's ring);
  - the old 3-node list is refused now, in one line that names the hosts;
  - before the aggregator's restart the counts of epoch 0 were already all
    there (nothing moved)."""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import ltutil  # noqa: E402
from poolutil import (Fans, PoolNight, aggregator, check_exact, ingest, keys_on, poll,  # noqa: E402
                      run_cases, stop_all)

chk = ltutil.Checker("test_pool_grow")


def case(kind, opts, tmp):
    what = "%s%s" % (kind, opts)
    night = PoolNight(kind, opts, tmp, "lt-grow-")
    servers, ports, three, four = night.servers, night.ports, night.three, night.four
    event_path, ev, name, token_path = night.event_path, night.ev, night.name, night.token_path
    i1, i2, ap, dp = night.i1, night.i2, night.ap, night.dp
    ing1, ing2, agg, dash, dc = night.ing1, night.ing2, night.agg, night.dash, night.dc

    keys_before = ltutil.wait_metrics(
        ap, lambda m: m.get("livetally_aggregate_keys", 0) > 0)["livetally_aggregate_keys"]

    fans = Fans(ev, [i1, i2], kind)
    fans.start()
    time.sleep(1.5)
    before = fans.tally.n
    chk.true(before > 50, "%s: answers flow on 3 nodes (%d)" % (what, before))

    # ingest 1 first: it records epoch 1
    ing1.stop()
    ing1 = ingest(event_path, four, i1, token_path, "ingest1-4")
    chk.true(ltutil.redis_command(ports[0], "GET", name + ":pool:1").startswith(b"$")
             if kind == "redis" else
             (name + ":pool:1") in ltutil.mc_get_many(ports[0], [name + ":pool:1"]),
             "%s: the 4-node ingest recorded epoch 1" % what)
    snap = poll(dc, lambda s: any("changed to epoch 1" in w
                                               for w in s.get("warnings", [])), timeout=15)
    chk.true(snap is not None, "%s: the 3-node aggregator says the pool grew under it" % what)
    time.sleep(1.0)

    agg.stop()
    agg = aggregator(event_path, four, ap)
    keys_after = ltutil.wait_metrics(
        ap, lambda m: m.get("livetally_aggregate_keys", 0) > 0)["livetally_aggregate_keys"]
    chk.eq(keys_after, 2 * keys_before,
           "%s: the aggregator reads each counter key once per epoch (%d keys, then %d)" %
           (what, keys_before, keys_after))
    time.sleep(0.5)
    ing2.stop()
    ing2 = ingest(event_path, four, i2, token_path, "ingest2-4")
    time.sleep(1.5)
    fans.stop_flag.set()
    fans.join(60)
    chk.eq(fans.failed[:5], [], "%s: every answer acknowledged (%d sent, %d retries)" %
           (what, fans.sent, fans.retried))
    n = fans.tally.n
    chk.true(n > before + 100, "%s: answers flowed through the restarts (%d)" % (what, n))

    check_exact(chk, dc, fans, what, "the dashboard counts every acknowledged answer",
                "no warning once every binary reads epoch 1")

    # where the keys went
    new_keys = [k for k in keys_on(kind, ports[3]) if k.startswith(name)]
    tagged = [k for k in new_keys if k.startswith(name + "~1:")]
    other = [k for k in new_keys if not k.startswith(name + "~1:") and
             not k.startswith(name + ":pool") and not k.startswith(name + ":node") and
             not k.startswith(name + ":rr:")]
    chk.true(len(tagged) > 20, "%s: the 4th node holds epoch-1 counters (%d)" %
             (what, len(tagged)))
    chk.eq(other, [], "%s: and nothing else of the event's" % what)
    old = [k for p in ports[:3] for k in keys_on(kind, p) if k.startswith(name + ":q")]
    chk.true(len(old) > 20, "%s: epoch-0 counters stay where they were" % what)

    # the 3-node list is refused now
    rc_out = ltutil.aggregate_once(event_path, three)
    chk.eq(rc_out[0], 2, "%s: the 3-node list is refused after the growth" % what)
    chk.true("127.0.0.1:%d" % ports[3] in rc_out[1] and "Changing the pool" in rc_out[1],
             "%s: naming the hosts to use: %s" % (what, rc_out[1].strip()[-300:]))

    dc.close()
    stop_all(chk, what, (dash, agg, ing1, ing2), servers)


if __name__ == "__main__":
    run_cases(chk, "lt-grow-", case)
