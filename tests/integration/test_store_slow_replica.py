"""A slow replica and a flaky one must not hold the event (DESIGN.md
guarantee 3; issue 12, finding 3): 3 store nodes with replicas=2, one of
them 20 ms away each way, another whose connections are cut at random every
~1.5 s (tests/integration/faultproxy.py: this kernel has no netem), the
split binaries (2 ingest, aggregate, dashboard) all behind the same links,
client threads sending answers with user ids for a bounded time and
retrying a 503 with the same body. Every count on /v1/stats must equal the
tally of 202s, on memcached:// and on redis://. The rate is printed, not
asserted (bench/faults.sh compares it with the healthy fleet).

Before the fix (2026-12-06, the build of 04eb0d7) this fleet acknowledged
35-38 answers/s on memcached and 34-36 on redis (the same fleet without
faults: ~2,500-3,000): it passed, unbearably slowly. Every batch, and every
per-user marker (one add at a time per replica, store_pool.h), waited for
the 40 ms round trip of the slow node; the cuts alone cost little (the
ingest reconnects). With replica_lag_ms=0 it still does.

The fleet runner is shared with bench/faults.sh (`--bench`)."""

import argparse
import collections
import os
import random
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import ltutil  # noqa: E402
import test_pipeline  # noqa: E402

PROXY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "faultproxy.py")
CLIENTS = 8
INGESTS = 2
DELAY_MS = 20
CUT_EVERY_S = 1.5
RETRY_503_S = 0.05


class ProxyProcess:
    """faultproxy.py as a process of its own (not sharing this process'
    interpreter lock with the client threads), stopped by PID."""

    def __init__(self, target_port, delay_ms=0, cut_every_s=0.0, seed=1, duration=900,
                 cut_mode="rst"):
        self.proc = ltutil.Proc([sys.executable, PROXY, "--target", str(target_port),
                                 "--delay-ms", str(delay_ms), "--cut-every-s", str(cut_every_s),
                                 "--cut-mode", cut_mode, "--seed", str(seed),
                                 "--duration", str(duration)],
                                log_name="faultproxy")
        deadline = time.monotonic() + 10
        self.port = None
        while self.port is None:
            for line in self.proc.output().splitlines():
                if line.startswith("listening "):
                    self.port = int(line.split()[1])
            if self.port is None:
                if time.monotonic() > deadline or self.proc.p.poll() is not None:
                    raise RuntimeError("faultproxy did not start: %s" % self.proc.output())
                time.sleep(0.05)
        self.cuts = 0

    def stop(self):
        self.proc.stop()
        for line in self.proc.output().splitlines():
            if line.startswith("accepted "):
                self.cuts = int(line.split()[3])
        return self


def client(ports, seed, tally, maybe, statuses, lock, stop, hard_stop):
    """Sends answers with a fresh user each, to question 1, round robin over
    the ingest ports, until stop; a 503 is sent again with the same body
    (until hard_stop). Tallies the 202s; an answer whose 503 ended in a 409
    (its marker was there: it may have been counted) or in a last 503 goes
    to maybe."""
    rng = random.Random(seed)
    conns = [ltutil.Client(p) for p in ports]
    n = 0
    while not stop.is_set():
        for a in test_pipeline.make_answers(rng, 1, 50):
            if stop.is_set():
                break
            n += 1
            a["user"] = "fan-%d-%d" % (seed, n)
            c = conns[n % len(conns)]
            had503 = False
            while True:
                try:
                    status, _, _ = c.json("POST", "/v1/answers", a)
                except OSError as e:
                    status = "error %s" % type(e).__name__
                with lock:
                    statuses[status] += 1
                if status != 503 or hard_stop.is_set():
                    break
                had503 = True
                time.sleep(RETRY_503_S)
            if status == 202:
                tally.add(a)
            elif had503 and status in (409, 503):
                maybe.add(a)
                with lock:
                    statuses["409/503 after a 503"] += 1
            elif status == 409:
                with lock:
                    statuses["409 on a first send"] += 1  # users are unique: a failure
    for c in conns:
        c.close()


class Fleet:
    """kind's nodes (3), optionally behind fault proxies, and the split
    binaries on replicas=2. faulty: node 1 delayed, node 2 cut at random."""

    def __init__(self, kind, faulty, token_path, options="", ingests=INGESTS, seed=1,
                 delay_ms=DELAY_MS, cut_every_s=CUT_EVERY_S, cut_mode="rst"):
        start = ltutil.memcached if kind == "memcached" else ltutil.redis
        self.procs = []
        self.proxies = []
        self.nodes = [start() for _ in range(3)]
        ports = [n.port for n in self.nodes]
        if faulty:
            slow = ProxyProcess(ports[1], delay_ms=delay_ms, seed=seed)
            flaky = ProxyProcess(ports[2], cut_every_s=cut_every_s, seed=seed + 1,
                                 cut_mode=cut_mode)
            self.proxies = [slow, flaky]
            ports = [ports[0], slow.port, flaky.port]
        backend = "%s://%s?replicas=2%s" % (kind, ",".join("127.0.0.1:%d" % p for p in ports),
                                            options)
        self.backend = backend
        self.ingest_ports = []
        for _ in range(ingests):
            ip = ltutil.free_port()
            self.procs.append(ltutil.Proc(
                [ltutil.binary("livetally-ingest"), "--event", ltutil.EVENT, "--backend", backend,
                 "--listen", "127.0.0.1:%d" % ip, "--admin-token-file", token_path,
                 "--threads", "1"], port=ip, log_name="ingest"))
            self.ingest_ports.append(ip)
        self.procs.append(ltutil.Proc(
            [ltutil.binary("livetally-aggregate"), "--event", ltutil.EVENT, "--backend", backend,
             "--interval", "250"], log_name="aggregate"))
        self.dash_port = ltutil.free_port()
        self.procs.append(ltutil.Proc(
            [ltutil.binary("livetally-dashboard"), "--event", ltutil.EVENT, "--backend", backend,
             "--listen", "127.0.0.1:%d" % self.dash_port, "--interval", "250"],
            port=self.dash_port, log_name="dashboard"))
        for ip in self.ingest_ports:
            ltutil.wait_ready(ip)

    def load(self, seconds, clients=CLIENTS, seed=100, grace_s=10.0):
        """Sends for `seconds`; returns (tally, maybe, statuses, answers/s of
        202s)."""
        tally, maybe = test_pipeline.Tally(), test_pipeline.Tally()
        statuses = collections.Counter()
        lock = threading.Lock()
        stop, hard_stop = threading.Event(), threading.Event()
        ts = [threading.Thread(target=client, args=(self.ingest_ports, seed + i, tally, maybe,
                                                    statuses, lock, stop, hard_stop), daemon=True)
              for i in range(clients)]
        t0 = time.monotonic()
        for t in ts:
            t.start()
        time.sleep(seconds)
        stop.set()
        deadline = time.monotonic() + grace_s  # the answers under way end (503s retried)
        for t in ts:
            t.join(max(0.1, deadline - time.monotonic()))
        hard_stop.set()
        for t in ts:
            t.join(15)
        elapsed = time.monotonic() - t0
        return tally, maybe, statuses, tally.total() / elapsed

    def ingest_metrics(self):
        out = collections.Counter()
        for ip in self.ingest_ports:
            for k, v in ltutil.metrics(ip).items():
                if k.startswith("livetally_ingest_store_"):
                    out[k[len("livetally_ingest_store_"):]] += v
        return out

    def stop(self):
        """Exit codes of the binaries, in start order."""
        codes = [p.stop() for p in self.procs]
        for p in self.proxies:
            p.stop()
        for n in self.nodes:
            n.stop()
        return codes

    def output(self):
        return "\n".join(p.output()[-3000:] for p in self.procs)


def settled(client, stats, quiet_s=3.0, timeout=30.0):
    """The snapshot whose totals the snapshots of the next quiet_s seconds
    repeat (the last one seen when timeout passes). Why seconds: what was
    formatted for a replica given up on for lag is written out (drained) on
    the ingest's next store operation, with nothing else to do its 1 s
    hint replay timer; so an increment of unknown outcome can land a second
    or so after the load ended."""
    deadline = time.monotonic() + timeout
    since = time.monotonic()
    while time.monotonic() - since < quiet_s and time.monotonic() < deadline:
        gen = stats["generation"]
        nxt = ltutil.wait_stats(client, lambda s: s["generation"] > gen, timeout=10)
        if nxt["totals"] != stats["totals"]:
            stats, since = nxt, time.monotonic()
    return stats


def run(kind, chk, token_path, seconds):
    mode = "%s slow+flaky replicas=2" % kind
    fleet = Fleet(kind, True, token_path)
    try:
        tally, maybe, statuses, rate = fleet.load(seconds)
        total = tally.total()
        m = fleet.ingest_metrics()
        print("%s: %d answers acknowledged in %.0f s: %.0f answers/s; statuses %s; "
              "store: node_failures %d connects %d hints queued %d replayed %d "
              "dropped %d" % (mode, total, seconds, rate, dict(statuses),
                              m["node_failures_total"], m["connects_total"],
                              m["hints_queued_total"], m["hints_replayed_total"],
                              m["hints_dropped_total"]), flush=True)
        chk.true(total > 0, "%s: answers acknowledged" % mode)
        chk.eq(sorted(str(s) for s in statuses if s not in (202, 503, 409, "409/503 after a 503")),
               [], "%s: every response a 202, or a 503 retried" % mode)
        # What a replica missed reaches it once the load is over: the hints
        # (also the stale deletes of a replica still marked lagging) and
        # what was being written out to one given up on for lag. Until
        # then the maximum of the replicas may miss an answer that one copy
        # lost with a cut connection (outcome unknown, no hint) and the
        # other has not received yet.
        deadline = time.monotonic() + 30
        while True:
            m = fleet.ingest_metrics()
            if (m["hints_pending"] == 0 and m["drains_pending"] == 0) or \
                    time.monotonic() > deadline:
                break
            time.sleep(0.2)
        print("%s: after the load: hints pending %d, drains pending %d, hints replayed %d, "
              "dropped %d" % (mode, m["hints_pending"], m["drains_pending"],
                              m["hints_replayed_total"], m["hints_dropped_total"]), flush=True)
        chk.eq((m["hints_pending"], m["drains_pending"]), (0, 0),
               "%s: every hint replayed and every lagging connection written out" % mode)
        d = ltutil.Client(fleet.dash_port, timeout=30)
        stats = ltutil.wait_stats(d, lambda s: s["totals"]["answers"] >= total, timeout=30)
        # Settled first: an increment given up on for lag (no hint, outcome
        # unknown) may still land on the slow replica a moment later and
        # raise the maximum; the checks below are about where it ends.
        stats = settled(d, stats)
        if maybe.total() == 0:
            test_pipeline.check_stats(stats, tally, {1: "open"}, chk, mode)
        else:
            # A 503 with a replica lagging and a cut of the other one's
            # connection: an increment of unknown outcome (DESIGN.md
            # guarantee 7); its retry then meets its marker (409). Bounds.
            got = stats["totals"]["answers"]
            print("note: %s: %d answers ended 503 or 409 after a 503: checking bounds %d <= %d "
                  "<= %d" % (mode, maybe.total(), total, got, total + maybe.total()), flush=True)
            chk.true(total <= got <= total + maybe.total(),
                     "%s: at least the 202s, at most those and the 503s counted" % mode)
        gen = stats["generation"]
        later = ltutil.wait_stats(d, lambda s: s["generation"] > gen + 2, timeout=30)
        chk.eq(later["totals"], stats["totals"], "%s: totals stable" % mode)
        d.close()
    finally:
        codes = fleet.stop()
        print("%s: connections cut by the flaky link: %d" % (mode, fleet.proxies[1].cuts))
        chk.eq(codes, [0] * len(codes), "%s: every binary exits 0 on SIGTERM" % mode)
        if chk.failed:
            print(fleet.output())


def bench(args):
    """bench/faults.sh: healthy vs slow+flaky, interleaved A B A B."""
    tmp = tempfile.mkdtemp(prefix="lt-faults-")
    token_path, _ = ltutil.write_token(tmp)
    rates = {False: [], True: []}
    for r in range(args.rounds):
        for faulty in (False, True):
            fleet = Fleet(args.kind, faulty, token_path, options=args.options,
                          delay_ms=args.delay_ms, cut_every_s=args.cut_every_s,
                          cut_mode=args.cut_mode)
            try:
                tally, _, statuses, rate = fleet.load(args.seconds, clients=args.clients,
                                                   seed=1000 * r + 100)
                m = fleet.ingest_metrics()
            finally:
                fleet.stop()
            rates[faulty].append(rate)
            print("round %d %-9s %s: %.0f answers/s (%d acknowledged; statuses %s%s)" %
                  (r + 1, "faulty" if faulty else "healthy", args.kind, rate, tally.total(),
                   dict(statuses), "; cuts %d" % fleet.proxies[1].cuts if faulty else ""),
                  flush=True)
            print("  ingest store: node_failures %d connects %d hints queued %d replayed %d "
                  "dropped %d" % (m["node_failures_total"], m["connects_total"],
                                  m["hints_queued_total"], m["hints_replayed_total"],
                                  m["hints_dropped_total"]), flush=True)
    h = sum(rates[False]) / len(rates[False])
    f = sum(rates[True]) / len(rates[True])
    print("%s: healthy %.0f answers/s, faulty (delay %g ms each way, cut (%s) every %g s) %.0f "
          "answers/s (means of %d rounds), ratio %.2f" %
          (args.kind, h, args.delay_ms, args.cut_mode, args.cut_every_s, f, args.rounds,
           f / h if h else 0.0),
          flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bench", action="store_true")
    ap.add_argument("--kind", default="memcached", choices=("memcached", "redis"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--delay-ms", type=float, default=DELAY_MS, help="node 1's delay each way")
    ap.add_argument("--cut-every-s", type=float, default=CUT_EVERY_S,
                    help="node 2's mean interval between cuts (0: none)")
    ap.add_argument("--cut-mode", choices=("rst", "silent"), default="rst")
    ap.add_argument("--clients", type=int, default=CLIENTS)
    ap.add_argument("--options", default="", help="more backend URL options, e.g. &timeout_ms=500")
    args = ap.parse_args()
    if args.bench:
        bench(args)
        return
    chk = ltutil.Checker("test_store_slow_replica")
    tmp = tempfile.mkdtemp(prefix="lt-slow-")
    token_path, _ = ltutil.write_token(tmp)
    for kind in ("memcached", "redis"):
        run(kind, chk, token_path, args.seconds)
    chk.finish()


if __name__ == "__main__":
    main()
