#!/usr/bin/env python3
"""The whole live night rehearsed on loopback, in one command.

    scripts/rehearse.py [--store memcached|redis|redis-cluster] [--short] [--phase-seconds S]
                        [--fans N] [--build DIR] [--json FILE]

Starts haproxy from deploy/haproxy.cfg (only its addresses moved to
loopback), 3 livetally-ingest behind it, 3 store nodes (replicas=2 on a
memcached or Redis pool; a 3-master Redis Cluster), 2 aggregators and the
dashboard. Fans answer through haproxy as the phone app does: every answer
carries its own user, and one that met a 502/503/504 or a dropped
connection is sent again, same body, after a jittered backoff, until a
deadline. One question is open per two phases, opened and closed through
haproxy's admin path. Meanwhile the fault schedule runs, one fault per
phase:

  healthy                 nothing
  ingest kill -9          an ingest node killed, started again half a phase later
  ingest rolling restart  SIGTERM (the drain haproxy sees), then a new one on its port
  store node stopped      SIGSTOP for half a phase, then SIGCONT
  store node back empty   kill -9, started again empty (pools only)
  aggregator kill -9      one aggregator killed, the other goes on; started again

and on pools, for the whole night, node 2 is 10 ms away each way and node 3's
connections are cut at random every ~3 s (tests/integration/faultproxy.py:
this kernel has no netem).

At the end: a report per phase (answers acknowledged per second, errors,
retries, p99 from the first try to the 202), then the verification: once
every ingest has replayed its hints, every count on the dashboard
(per question: answers, right, wrong, options, age buckets, countries) must
equal the tally of the 202s, or, where some answer's outcome is unknown (a
try that may have landed before its connection died, then a 409 on the
retry or a deadline), lie between the 202s and the 202s plus those.
Exit status 0 when it does, 1 when it does not, 2 on a setup failure.

Why Python and the tests' helpers (tests/integration/ltutil.py, faultproxy.py):
the rehearsal starts, watches and stops processes by PID exactly as the
integration tests do, and its fans must retry like the app, which
livetally-loadtest does not do yet. --short (about a minute) runs in CI
(tests/integration/test_rehearse.py). Loopback only; every process is
stopped when the run ends, also on failure or Ctrl-C.
"""

import argparse
import collections
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SRC, "tests", "integration"))

PHASES = ["healthy", "ingest kill -9", "ingest rolling restart", "store node stopped",
          "store node back empty", "aggregator kill -9"]
RETRY_DEADLINE_S = 10.0
RETRY_FIRST_S = 0.05
RETRY_MAX_S = 0.5


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="See the opening comment of scripts/rehearse.py.")
    ap.add_argument("--store", choices=("memcached", "redis", "redis-cluster"),
                    default="memcached",
                    help="3 memcached or 3 Redis with replicas=2, or a 3-master Redis Cluster "
                         "(default memcached)")
    ap.add_argument("--short", action="store_true", help="4 s phases, 6 fans (CI)")
    ap.add_argument("--phase-seconds", type=float, default=None,
                    help="seconds per phase (default 15, 4 with --short)")
    ap.add_argument("--fans", type=int, default=None,
                    help="concurrent fans (client threads; default 12, 6 with --short)")
    ap.add_argument("--build", default=os.path.join(SRC, "build"), help="the build directory")
    ap.add_argument("--json", default=None, help="write the report as JSON here ('-': stdout)")
    ap.add_argument("--seed", type=int, default=1, help="the fans' and the links' randomness")
    ap.add_argument("--quiet-seconds", type=float, default=0.0,
                    help="a pause with no answers after each question closes (a show's gap; "
                         "default 0: a compressed night)")
    ap.add_argument("--no-link-faults", action="store_true",
                    help="no slow or flaky store link (the other faults still run)")
    ap.add_argument("--only", default=None,
                    help="comma-separated phases to run faults in, the others run healthy: " +
                         ", ".join(PHASES))
    args = ap.parse_args()
    if args.phase_seconds is None:
        args.phase_seconds = 4.0 if args.short else 15.0
    if args.fans is None:
        args.fans = 6 if args.short else 12
    if args.phase_seconds < 2 or args.fans < 1:
        ap.error("--phase-seconds must be >= 2 and --fans >= 1")
    return args


args = parse_args()
os.environ.setdefault("LIVETALLY_BIN", args.build)
os.environ.setdefault("LIVETALLY_SRC", SRC)
import ltutil  # noqa: E402
import test_store_slow_replica as slow  # noqa: E402  (ProxyProcess)

with open(os.path.join(SRC, "examples", "1d-live.json")) as f:
    EVENT = json.load(f)
EVENT["event"] = "rehearsal"
for q in EVENT["questions"]:
    q.pop("open", None)  # every question opened through the admin API
QUESTIONS = {q["id"]: q for q in EVENT["questions"]}
BUCKETS = EVENT["age_buckets"]
COUNTRIES = ["us", "gb", "fr", "de", "br", "jp", "ie", None]


def bucket_of(age):
    return next(i for i, b in enumerate(BUCKETS) if age <= b["max"])


class Tally:
    """What the 202s (or the unknown outcomes) add, per question."""

    def __init__(self):
        self.lock = threading.Lock()
        self.q = collections.defaultdict(lambda: {
            "answers": 0, "right": 0, "by_answer": collections.Counter(),
            "by_age": collections.Counter(), "by_country": collections.Counter()})

    def add(self, a):
        right = a["answer"] == QUESTIONS[a["question"]]["correct"]
        with self.lock:
            t = self.q[a["question"]]
            t["answers"] += 1
            t["right"] += right
            t["by_answer"][a["answer"]] += 1
            t["by_age"][(bucket_of(a["age"]), right)] += 1
            t["by_country"][(a.get("country") or "unknown", right)] += 1

    def total(self):
        return sum(t["answers"] for t in self.q.values())


def figures(q_stats, qid):
    """The dashboard's counts of one question, in the Tally's shape."""
    out = {"answers": q_stats["answers"], "right": q_stats["right"],
           "by_answer": collections.Counter(dict(enumerate(q_stats["by_answer"]))),
           "by_age": collections.Counter(), "by_country": collections.Counter()}
    for a in q_stats["by_age"]:
        out["by_age"][(a["bucket"] - 1, True)] = a["right"]
        out["by_age"][(a["bucket"] - 1, False)] = a["wrong"]
    for c in q_stats["by_country"]:
        out["by_country"][(c["country"], True)] = c["right"]
        out["by_country"][(c["country"], False)] = c["wrong"]
    return out


def compare(stats, acked, maybe):
    """Every count between the 202s and the 202s plus the unknown outcomes:
    the list of what is not."""
    bad = []
    by_id = {q["id"]: q for q in stats["questions"]}
    for qid in QUESTIONS:
        got = figures(by_id[qid], qid)
        lo, extra = acked.q[qid], maybe.q[qid]
        for field in ("answers", "right"):
            if not lo[field] <= got[field] <= lo[field] + extra[field]:
                bad.append("q%d %s: %d, want %d..%d" % (qid, field, got[field], lo[field],
                                                       lo[field] + extra[field]))
        for field in ("by_answer", "by_age", "by_country"):
            for k in set(got[field]) | set(lo[field]):
                g, w, x = got[field][k], lo[field][k], extra[field][k]
                if not w <= g <= w + x:
                    bad.append("q%d %s %s: %d, want %d..%d" % (qid, field, k, g, w, w + x))
    return bad


def copies_of(night, bad):
    """For the breakdown counts off (pools only): each shard's copy on
    every node, so a count short in the dashboard shows where it went."""
    out = []
    if args.store == "redis-cluster":
        return out
    for line in bad:
        m = re.match(r"q(\d+) by_age \((\d+), (True|False)\)", line)
        a = re.match(r"q(\d+) by_answer (\d+):", line)
        c = re.match(r"q(\d+) by_country \('(\w+)', (True|False)\)", line)
        if m:
            prefix = "%s:q%sage%d%s" % (EVENT["event"], m.group(1), int(m.group(2)) + 1,
                                         "right" if m.group(3) == "True" else "wrong")
        elif a:
            prefix = "%s:q%sopt%sn" % (EVENT["event"], a.group(1), a.group(2))
        elif c:
            prefix = "%s:q%sc%s%s" % (EVENT["event"], c.group(1), c.group(2),
                                       "right" if c.group(3) == "True" else "wrong")
        else:
            continue
        copies = collections.defaultdict(dict)
        for i, node in enumerate(night.nodes):
            if args.store == "redis":
                keys = subprocess.run(["redis-cli", "-p", str(node.port), "--scan", "--pattern",
                                       prefix + "*"], capture_output=True, text=True,
                                      timeout=10).stdout.split()
                keys = [k for k in keys if re.fullmatch(re.escape(prefix) + r"\d+", k)]
                vals = subprocess.run(["redis-cli", "-p", str(node.port), "MGET"] + keys,
                                      capture_output=True, text=True,
                                      timeout=10).stdout.split() if keys else []
                got = dict(zip(keys, vals))
            else:
                keys = [k for k in ltutil.mc_keys(node.port)
                        if re.fullmatch(re.escape(prefix) + r"\d+", k)]
                got = ltutil.mc_get_many(node.port, keys) if keys else {}
            for k, v in got.items():
                copies[k][i] = int(v)
        differ = {k: v for k, v in sorted(copies.items()) if len(set(v.values())) > 1 or
                  len(v) < 2}
        total = sum(max(v.values()) for v in copies.values())
        out.append("%s: %d shards, sum of the largest copies %d; copies that differ or are "
                   "missing (node: value): %s" % (prefix, len(copies), total, differ))
    return out


class Night:
    """Every process of the rehearsal, each stopped by PID at the end."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.event_path = os.path.join(tmp, "rehearsal.json")
        with open(self.event_path, "w") as f:
            json.dump(EVENT, f)
        self.token_path, self.token = ltutil.write_token(tmp)
        self.proxies = []
        self.store_ports = []
        if args.store == "redis-cluster":
            self.nodes = ltutil.redis_cluster(3)
            self.backend = "redis-cluster://127.0.0.1:%d" % self.nodes[0].port
        else:
            start = ltutil.memcached if args.store == "memcached" else ltutil.redis
            self.nodes = [start() for _ in range(3)]
            ports = [n.port for n in self.nodes]
            faults = not args.no_link_faults
            slow_link = slow.ProxyProcess(ports[1], delay_ms=10 if faults else 0, seed=args.seed,
                                          duration=3600)
            flaky_link = slow.ProxyProcess(ports[2], cut_every_s=3.0 if faults else 0.0,
                                           seed=args.seed + 1, duration=3600)
            self.proxies = [slow_link, flaky_link]
            self.backend = "%s://127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d?replicas=2" % (
                args.store, ports[0], slow_link.port, flaky_link.port)
        self.ingest_ports = [ltutil.free_port() for _ in range(3)]
        self.ingests = [self.start_ingest(i) for i in range(3)]
        self.agg_ports = [ltutil.free_port() for _ in range(2)]
        self.aggregators = [self.start_aggregator(i) for i in range(2)]
        self.dash_port = ltutil.free_port()
        self.dashboard = ltutil.Proc(
            [ltutil.binary("livetally-dashboard"), "--event", self.event_path, "--backend",
             self.backend, "--listen", "127.0.0.1:%d" % self.dash_port, "--interval", "250"],
            port=self.dash_port, log_name="rehearsal-dashboard")
        for p in self.ingest_ports:
            ltutil.wait_ready(p)
        self.haproxy_port, self.api_port = ltutil.free_port(), ltutil.free_port()
        self.haproxy = self.start_haproxy()

    def start_ingest(self, i):
        return ltutil.Proc(
            [ltutil.binary("livetally-ingest"), "--event", self.event_path, "--backend",
             self.backend, "--listen", "127.0.0.1:%d" % self.ingest_ports[i], "--threads", "1",
             "--admin-token-file", self.token_path, "--drain-timeout", "10"],
            port=self.ingest_ports[i], log_name="rehearsal-ingest-%d" % i)

    def start_aggregator(self, i):
        return ltutil.Proc(
            [ltutil.binary("livetally-aggregate"), "--event", self.event_path, "--backend",
             self.backend, "--interval", "250", "--listen", "127.0.0.1:%d" % self.agg_ports[i]],
            port=self.agg_ports[i], log_name="rehearsal-aggregate-%d" % i)

    def start_haproxy(self):
        with open(os.path.join(SRC, "deploy", "haproxy.cfg")) as f:
            text = f.read()
        text = text.replace("bind :80", "bind 127.0.0.1:%d" % self.haproxy_port)
        text = text.replace("ipv4@127.0.0.1:9999", "ipv4@127.0.0.1:%d" % self.api_port)
        for i, addr in enumerate(("10.0.0.11:8080", "10.0.0.12:8080", "10.0.0.13:8080")):
            text = text.replace(addr, "127.0.0.1:%d" % self.ingest_ports[i])
        for addr in ("10.0.0.21:8081", "10.0.0.22:8081"):
            text = text.replace(addr, "127.0.0.1:%d" % self.dash_port)
        if "10.0.0." in text or "127.0.0.1:%d" % self.haproxy_port not in text:
            raise RuntimeError("deploy/haproxy.cfg: an address the rehearsal does not know")
        conf = os.path.join(self.tmp, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write(text)
        exe = shutil.which("haproxy") or "/usr/sbin/haproxy"
        return ltutil.Proc([exe, "-db", "-f", conf], port=self.haproxy_port,
                           log_name="rehearsal-haproxy")

    def admin(self, qid, op):
        c = ltutil.RawConn(self.haproxy_port)
        try:
            c.send(ltutil.http_bytes("POST", "/v1/admin/questions/%d/%s" % (qid, op), b"",
                                     {"Authorization": "Bearer " + self.token},
                                     keep_alive=False))
            return c.response()[0]
        finally:
            c.close()

    def admin_until(self, qid, op, deadline_s=10.0):
        """An admin call retried like the producer's console would."""
        end = time.monotonic() + deadline_s
        while True:
            try:
                st = self.admin(qid, op)
            except (OSError, ltutil.Closed):
                st = None
            if st == 204 or time.monotonic() > end:
                return st
            time.sleep(0.2)

    def ingest_metrics(self):
        out = collections.Counter()
        for p in self.ingest_ports:
            try:
                for k, v in ltutil.metrics(p).items():
                    out[k] += v
            except (OSError, RuntimeError, ltutil.Closed):
                out["unreachable"] += 1
        return out

    def aggregator_metrics(self):
        """The repair figures of the aggregators that answer (the largest
        backlog: they read the same copies)."""
        out = {"keys_repaired": 0, "repair_backlog": 0, "copies_behind": 0, "node_resets": 0}
        for p in self.agg_ports:
            try:
                m = ltutil.metrics(p)
            except (OSError, RuntimeError, ltutil.Closed):
                continue
            out["keys_repaired"] += int(m.get("livetally_aggregate_keys_repaired_total", 0))
            out["node_resets"] += int(m.get("livetally_aggregate_node_resets_total", 0))
            for k in ("repair_backlog", "copies_behind"):
                out[k] = max(out[k], int(m.get("livetally_aggregate_" + k, 0)))
        return out

    def all_procs(self):
        return ([self.haproxy] + self.ingests + self.aggregators + [self.dashboard] +
                [p.proc for p in self.proxies] + self.nodes)

    def stop(self):
        codes = {}
        for p in [self.haproxy] + self.ingests + self.aggregators + [self.dashboard]:
            codes[os.path.basename(p.log.name).rsplit("-", 1)[0]] = p.stop()
        for x in self.proxies:
            x.stop()
        for n in self.nodes:
            n.stop()
        return codes


class Fans:
    """Fans answering the open question through haproxy, retrying like the
    app: same body, same user, after a jittered backoff."""

    def __init__(self, port, n, seed):
        self.port = port
        self.n = n
        self.seed = seed
        self.question = None  # the open one, set by the schedule
        self.phase = 0
        self.stop = threading.Event()
        self.acked, self.maybe = Tally(), Tally()
        self.lock = threading.Lock()
        self.per_phase = collections.defaultdict(lambda: {
            "acked": 0, "retries": 0, "errors": collections.Counter(), "lat": []})
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True)
                        for i in range(n)]

    def start(self):
        for t in self.threads:
            t.start()

    def join(self):
        self.stop.set()
        for t in self.threads:
            t.join(RETRY_DEADLINE_S + 15)

    def note(self, phase, key, value=1):
        with self.lock:
            p = self.per_phase[phase]
            if key == "lat":
                p["lat"].append(value)
            elif key in ("acked", "retries"):
                p[key] += value
            else:
                p["errors"][key] += value

    def run(self, i):
        rng = random.Random(self.seed * 1000 + i)
        conn = None
        n = 0
        while not self.stop.is_set():
            qid, phase = self.question, self.phase
            if qid is None:
                time.sleep(0.02)
                continue
            n += 1
            q = QUESTIONS[qid]
            a = {"question": qid, "answer": rng.randrange(len(q["options"])),
                 "age": rng.randint(1, 99), "user": "fan-%d-%d" % (i, n)}
            country = rng.choice(COUNTRIES)
            if country is not None:
                a["country"] = country
            body = ltutil.answer_bytes(a)
            t0 = time.monotonic()
            maybe_landed = False
            backoff = RETRY_FIRST_S
            tries = 0
            outcome = None
            while outcome is None:
                tries += 1
                status, err = None, None
                try:
                    if conn is None:
                        conn = ltutil.RawConn(self.port, timeout=5)
                    conn.send(body)
                    status, _, rbody = conn.response()
                    if rbody:
                        try:
                            err = json.loads(rbody).get("error")
                        except ValueError:
                            err = None
                except (OSError, ltutil.Closed):
                    if conn is not None:
                        conn.close()
                    conn = None
                    maybe_landed = True  # sent, then the connection died
                if status == 202:
                    outcome = "acked"
                elif status == 409 and err == "duplicate_answer":
                    # An earlier try's marker: counted by it, unless the node
                    # that wrote it died before the increments (bounded).
                    # Also on a first try of ours: haproxy sends a 503 again
                    # by itself (retry-on 503), and the 503 of a batch part of
                    # which landed leaves the marker (its rest is carried).
                    outcome = "maybe"
                elif status == 409:
                    outcome = "maybe" if maybe_landed else "late (%s)" % err
                elif status in (502, 503, 504) or status is None:
                    if status in (502, 504):
                        maybe_landed = True  # haproxy lost the node mid-request
                    if status is not None and conn is not None and status != 503:
                        conn.close()
                        conn = None
                    if time.monotonic() - t0 > RETRY_DEADLINE_S:
                        outcome = "maybe" if maybe_landed else "gave up"
                    else:
                        self.note(phase, "retries")
                        time.sleep(backoff * (0.5 + rng.random()))
                        backoff = min(backoff * 2, RETRY_MAX_S)
                else:
                    outcome = "status %s (%s)" % (status, err)
            if outcome == "acked":
                self.acked.add(a)
                self.note(phase, "acked")
                self.note(phase, "lat", time.monotonic() - t0)
            elif outcome == "maybe":
                self.maybe.add(a)
                self.note(phase, "unknown outcome")
            else:
                self.note(phase, outcome)
        if conn is not None:
            conn.close()


def p99(values):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(0.99 * len(v)))]


def schedule(night, fans, seconds):
    """Runs the phases; returns what happened in each (faults, seconds)."""
    log = []
    pools = args.store != "redis-cluster"
    qids = sorted(QUESTIONS)
    for phase, name in enumerate(PHASES):
        t0 = time.monotonic()
        fans.phase = phase
        what = name
        if phase % 2 == 0:
            qid = qids[phase // 2]
            st = night.admin_until(qid, "open")
            if st != 204:
                raise RuntimeError("open question %d: %s" % (qid, st))
            fans.question = qid
        half = seconds / 2
        fault = name
        if args.only is not None and name not in args.only.split(","):
            fault = "healthy"
            what = "%s: fault left out (--only)" % name
        if fault == "ingest kill -9":
            night.ingests[0].signal(signal.SIGKILL)
            night.ingests[0].wait(10)
            time.sleep(half)
            night.ingests[0] = night.start_ingest(0)
        elif fault == "ingest rolling restart":
            night.ingests[1].signal(signal.SIGTERM)
            night.ingests[1].wait(30)
            night.ingests[1] = night.start_ingest(1)
        elif fault == "store node stopped":
            node = night.nodes[0]
            node.signal(signal.SIGSTOP)
            time.sleep(half)
            node.signal(signal.SIGCONT)
        elif fault == "store node back empty":
            if pools:
                port = night.nodes[0].port
                night.nodes[0].signal(signal.SIGKILL)
                night.nodes[0].wait(10)
                start = ltutil.memcached if args.store == "memcached" else ltutil.redis
                night.nodes[0] = start(port=port)
            else:
                what += " (skipped: a Redis Cluster without replicas loses a master's data)"
        elif fault == "aggregator kill -9":
            night.aggregators[0].signal(signal.SIGKILL)
            night.aggregators[0].wait(10)
            time.sleep(half)
            night.aggregators[0] = night.start_aggregator(0)
        left = seconds - (time.monotonic() - t0)
        if left > 0:
            time.sleep(left)
        if phase % 2 == 1 or phase == len(PHASES) - 1:
            qid = fans.question
            fans.question = None
            time.sleep(0.3)  # the answers under way reach the nodes before the close
            st = night.admin_until(qid, "close")
            if st != 204:
                raise RuntimeError("close question %d: %s" % (qid, st))
            if args.quiet_seconds > 0:
                time.sleep(args.quiet_seconds)
        log.append((name, what, time.monotonic() - t0))
    return log


# The aggregators read a settled question again every 5 s
# (AGGREGATE_SETTLED_REREAD_MS): a count that lands late shows within it.
STABLE_S = 6.0


def settle(night, timeout=60.0):
    """Until every ingest replayed its hints and wrote out its lagging
    connections, then until the dashboard's counts stay the same for
    STABLE_S."""
    end = time.monotonic() + timeout
    m = night.ingest_metrics()
    while time.monotonic() < end:
        m = night.ingest_metrics()
        if (m["unreachable"] == 0 and m["livetally_ingest_store_hints_pending"] == 0 and
                m["livetally_ingest_store_drains_pending"] == 0):
            break
        time.sleep(0.25)
    d = ltutil.Client(night.dash_port, timeout=30)
    stats = ltutil.wait_stats(d, lambda s: True, timeout=30)
    since = time.monotonic()
    while time.monotonic() - since < STABLE_S and time.monotonic() < end:
        gen = stats["generation"]
        nxt = ltutil.wait_stats(d, lambda s: s["generation"] > gen, timeout=10)
        if nxt["totals"] != stats["totals"] or nxt["questions"] != stats["questions"]:
            stats, since = nxt, time.monotonic()
        else:
            stats = nxt
    d.close()
    return stats, m


def main():
    for tool in ("haproxy",) + (("memcached",) if args.store == "memcached" else
                                ("redis-server", "redis-cli")):
        if shutil.which(tool) is None and not os.path.exists("/usr/sbin/" + tool):
            print("rehearse: %s is not installed (scripts/setup.sh installs it)" % tool,
                  file=sys.stderr)
            return 2
    if not os.access(ltutil.binary("livetally-ingest"), os.X_OK):
        print("rehearse: %s is not built (scripts/build.sh)" % ltutil.binary("livetally-ingest"),
              file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="lt-rehearsal-")
    night = None
    try:
        night = Night(tmp)
        print("rehearsal: %s, haproxy 127.0.0.1:%d, dashboard http://127.0.0.1:%d/, %d fans, "
              "%d phases of %.0f s" % (night.backend, night.haproxy_port, night.dash_port,
                                       args.fans, len(PHASES), args.phase_seconds), flush=True)
        fans = Fans(night.haproxy_port, args.fans, args.seed)
        fans.start()
        log = schedule(night, fans, args.phase_seconds)
        fans.join()
        stats, m = settle(night)
        bad = compare(stats, fans.acked, fans.maybe)
        acked, maybe = fans.acked.total(), fans.maybe.total()
        unexpected = collections.Counter()
        report = {"store": args.store, "backend": night.backend, "phases": []}
        print("\n%-24s %8s %10s %8s %8s  %s" % ("phase", "seconds", "answers/s", "retries",
                                                 "p99 ms", "errors"))
        for phase, (name, what, secs) in enumerate(log):
            p = fans.per_phase[phase]
            lat = p99(p["lat"])
            errs = dict(p["errors"])
            for k, v in errs.items():
                if k.startswith(("duplicate on a first try", "status ")):
                    unexpected[k] += v
            print("%-24s %8.1f %10.0f %8d %8s  %s" % (name, secs, p["acked"] / secs, p["retries"],
                                                      "%.1f" % (lat * 1000) if lat else "-",
                                                      errs or ""))
            if what != name:
                print("  %s" % what)
            report["phases"].append({"phase": name, "note": what, "seconds": round(secs, 2),
                                     "acknowledged": p["acked"], "retries": p["retries"],
                                     "p99_ms": round(lat * 1000, 2) if lat else None,
                                     "errors": errs})
        got = stats["totals"]["answers"]
        print("\nanswers: %d acknowledged, %d of unknown outcome; the dashboard shows %d "
              "(generation %d)" % (acked, maybe, got, stats["generation"]))
        print("store: hints queued %d replayed %d dropped %d, pending %d" % (
            m["livetally_ingest_store_hints_queued_total"],
            m["livetally_ingest_store_hints_replayed_total"],
            m["livetally_ingest_store_hints_dropped_total"],
            m["livetally_ingest_store_hints_pending"]))
        am = night.aggregator_metrics()
        print("aggregators: node resets seen %d, copies repaired %d, repairs due %d, "
              "copies behind %d" % (am["node_resets"], am["keys_repaired"], am["repair_backlog"],
                                    am["copies_behind"]))
        report["aggregators"] = am
        ok = not bad and not unexpected and acked > 0
        if bad:
            print("VERIFY FAILED: %d counts off:\n  %s" % (len(bad), "\n  ".join(bad[:20])))
            for line in copies_of(night, bad[:5]):
                print("  " + line)
        elif unexpected:
            print("VERIFY FAILED: replies no fan should get: %s" % dict(unexpected))
        else:
            print("verify: every count %s" % ("exact" if maybe == 0 else
                                              "between the 202s and the 202s plus the %d of "
                                              "unknown outcome" % maybe))
        report.update({"acknowledged": acked, "unknown_outcome": maybe, "dashboard": got,
                       "verified": ok, "counts_off": bad[:100],
                       "unexpected_replies": dict(unexpected)})
        if not ok or os.environ.get("REHEARSE_LOGS"):
            for p in night.ingests + night.aggregators:
                lines = [l for l in p.output().splitlines()
                         if ("WARN" in l or "ERROR" in l or "question" in l) and
                         "breakdowns do not add up" not in l]
                print("%s:\n  %s" % (os.path.basename(p.log.name), "\n  ".join(lines[-25:])))
        codes = night.stop()
        night = None
        report["exit_codes"] = codes
        stray = {k: v for k, v in codes.items() if v != 0 and not k.startswith("rehearsal-haproxy")}
        if stray:
            print("exit codes not 0: %s" % stray)
            ok = False
        if args.json:
            text = json.dumps(report, indent=2) + "\n"
            if args.json == "-":
                sys.stdout.write(text)
            else:
                with open(args.json, "w") as f:
                    f.write(text)
        return 0 if ok else 1
    except (RuntimeError, OSError, ltutil.Closed) as e:
        print("rehearse: %s" % e, file=sys.stderr)
        if night is not None:
            for p in night.all_procs():
                print(p.output()[-1500:], file=sys.stderr)
        return 2
    finally:
        if night is not None:
            night.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
