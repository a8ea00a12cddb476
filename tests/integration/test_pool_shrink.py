"""A pool gets smaller mid-event: a node added for the burst is retired and
every acknowledged answer is still counted (issue 18: removing a node after
the burst dropped its counters, as growing did).

On memcached:// (replicas=1) and on redis:// with replicas=2, with fans
answering all along through two ingests (poolutil.Fans):
  - 3 nodes grow to 4 by a rolling restart (epoch 1);
  - livetally-aggregate --retire the 4th records epoch 2 without it and
    exits 3: both ingests still write epoch 1; a 3-node list is refused
    while epoch 1 is not folded;
  - the aggregator and both ingests restarted (same 4 nodes: they join
    epoch 2); the aggregator reads 3 key lists;
  - --retire again, paused after each chunk of carry writes, is killed
    with SIGKILL halfway: no fold marker anywhere, so nothing reads the
    carry yet;
  - --retire once more completes it (exit 0), and a further run says it
    was done (idempotent); the running aggregator warns that it still reads
    the folded epochs;
  - the aggregator restarted on the 3 nodes reads 2 key lists (the carry
    and epoch 2), the 4th node is stopped, the ingests and the dashboard
    restarted on the 3 nodes;
  - the answers stop: the dashboard shows exactly the acknowledged answers,
    every breakdown too, with no warning."""

import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import ltutil  # noqa: E402
from poolutil import (Fans, PoolNight, aggregator, check_exact, dashboard, ingest,  # noqa: E402
                      keys_on, poll, run_cases, stop_all)

chk = ltutil.Checker("test_pool_shrink")


def retire(event_path, backend, node, wait=0, pause_ms=None, background=False):
    args = [ltutil.binary("livetally-aggregate"), "--event", event_path, "--backend", backend,
            "--retire", node, "--wait", str(wait)]
    env = dict(os.environ)
    if pause_ms is not None:
        env["LIVETALLY_RETIRE_PAUSE_MS"] = str(pause_ms)
    if background:
        return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env=env)
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       stdin=subprocess.DEVNULL, env=env, timeout=wait + 60)
    return p.returncode, p.stdout.decode(errors="replace")


def keys_metric(port, want=None):
    m = ltutil.wait_metrics(port, lambda m: m.get("livetally_aggregate_keys", 0) > 0 and
                            (want is None or m["livetally_aggregate_keys"] == want))
    return m["livetally_aggregate_keys"]


def has_key(kind, port, key):
    if kind == "memcached":
        return key in ltutil.mc_get_many(port, [key])
    return not ltutil.redis_command(port, "GET", key).startswith(b"$-1")


def marker_anywhere(kind, ports, key):
    return any(has_key(kind, p, key) for p in ports)


def case(kind, opts, tmp):
    what = "%s%s" % (kind, opts)
    night = PoolNight(kind, opts, tmp, "lt-shrink-")
    servers, ports, three, four = night.servers, night.ports, night.three, night.four
    event_path, ev, name, token_path = night.event_path, night.ev, night.name, night.token_path
    i1, i2, ap, dp = night.i1, night.i2, night.ap, night.dp
    ing1, ing2, agg, dash, dc = night.ing1, night.ing2, night.agg, night.dash, night.dc
    node4 = "127.0.0.1:%d" % ports[3]
    base = keys_metric(ap)

    fans = Fans(ev, [i1, i2], kind, prefix="shrink")
    fans.start()
    time.sleep(1.0)

    # growing for the burst: 3 -> 4
    for restart in ("ing1", "agg", "ing2"):
        if restart == "ing1":
            ing1.stop()
            ing1 = ingest(event_path, four, i1, token_path, "ingest1-4")
        elif restart == "agg":
            agg.stop()
            agg = aggregator(event_path, four, ap)
        else:
            ing2.stop()
            ing2 = ingest(event_path, four, i2, token_path, "ingest2-4")
        time.sleep(0.7)
    chk.eq(keys_metric(ap), 2 * base, "%s: grown to epoch 1 (2 key lists)" % what)
    time.sleep(2.0)  # the 4th node takes counters
    on4 = [k for k in keys_on(kind, ports[3]) if k.startswith(name + "~1:")]
    chk.true(len(on4) > 20, "%s: the 4th node holds epoch-1 counters (%d)" % (what, len(on4)))

    # getting smaller: the first run records epoch 2, the ingests hold the fold back
    rc, out = retire(event_path, four, node4)
    chk.eq(rc, 3, "%s: --retire waits while the ingests write epoch 1: %s" %
           (what, out.strip()[-200:]))
    chk.true("epoch 2" in out and "restart" in out,
             "%s: and says what to restart: %s" % (what, out.strip()[-300:]))
    rc, out = ltutil.aggregate_once(event_path, three)
    chk.eq(rc, 2, "%s: a 3-node list is refused before the fold" % what)
    chk.true("not folded" in out, "%s: saying the counters are not folded: %s" %
             (what, out.strip()[-300:]))

    agg.stop()
    agg = aggregator(event_path, four, ap)
    chk.eq(keys_metric(ap), 3 * base, "%s: the aggregator reads epochs 0-2" % what)
    ing1.stop()
    ing1 = ingest(event_path, four, i1, token_path, "ingest1-e2")
    time.sleep(0.7)
    ing2.stop()
    ing2 = ingest(event_path, four, i2, token_path, "ingest2-e2")
    time.sleep(1.0)

    # a fold cut halfway by SIGKILL
    folded_key = name + ":pool:2:folded"
    p = retire(event_path, four, node4, wait=60, pause_ms=400, background=True)
    seen = b""
    deadline = time.time() + 60
    while time.time() < deadline and b"carry counters written" not in seen:
        line = p.stdout.readline()
        if not line:
            break
        seen += line
    cut = b"carry counters written" in seen
    p.send_signal(signal.SIGKILL)
    p.wait(10)
    p.stdout.close()
    chk.true(cut, "%s: the fold ran and was killed halfway: %s" %
             (what, seen.decode(errors="replace").strip()[-300:]))
    chk.true(not marker_anywhere(kind, ports, folded_key),
             "%s: no fold marker after the kill" % what)
    partial = [k for k in keys_on(kind, ports[0]) + keys_on(kind, ports[1]) +
               keys_on(kind, ports[2]) if k.startswith(name + "~2:f:")]
    chk.true(len(partial) > 0, "%s: some carry counters were written (%d)" %
             (what, len(partial)))

    rc, out = retire(event_path, four, node4, wait=60)
    chk.eq(rc, 0, "%s: the rerun completes the retirement: %s" % (what, out.strip()[-300:]))
    chk.true("is retired" in out, "%s: and says so: %s" % (what, out.strip()[-300:]))
    chk.true(all(has_key(kind, p, folded_key) for p in ports),
             "%s: every node holds the fold marker" % what)
    rc, out = retire(event_path, four, node4)
    chk.eq(rc, 0, "%s: a further run is a no-op: %s" % (what, out.strip()[-200:]))
    chk.true("earlier run" in out, "%s: saying so" % what)
    snap = poll(dc, lambda s: any("folded under this aggregator" in w
                                  for w in s.get("warnings", [])), timeout=15)
    chk.true(snap is not None, "%s: the running aggregator says it still reads the folded "
                               "epochs" % what)

    # the aggregator first, then the node goes, then the others follow
    agg.stop()
    agg = aggregator(event_path, three, ap)
    chk.eq(keys_metric(ap), 2 * base,
           "%s: after the fold the aggregator reads the carry and epoch 2 (%d, was %d)" %
           (what, 2 * base, 3 * base))
    servers[3].stop()
    ing1.stop()
    ing1 = ingest(event_path, three, i1, token_path, "ingest1-3")
    time.sleep(0.7)
    ing2.stop()
    ing2 = ingest(event_path, three, i2, token_path, "ingest2-3")
    dash.stop()
    dash = dashboard(event_path, three, dp, "dashboard-3")
    dc.close()
    dc = ltutil.Client(dp)
    time.sleep(1.5)
    fans.stop_flag.set()
    fans.join(60)
    chk.eq(fans.failed[:5], [], "%s: every answer acknowledged (%d sent, %d retries)" %
           (what, fans.sent, fans.retried))

    check_exact(chk, dc, fans, what,
                "the dashboard counts every acknowledged answer after the node left",
                "no warning")

    dc.close()
    stop_all(chk, what, (dash, agg, ing1, ing2), servers)


if __name__ == "__main__":
    run_cases(chk, "lt-shrink-", case)
