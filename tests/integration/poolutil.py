"""What the pool tests share (test_pool_grow.py, test_pool_shrink.py): fans
that answer all along like the app (a new user each, a retry with the same
body on another ingest), and the binaries started on a pool."""

import random
import tempfile
import threading
import time

import ltutil


def url(kind, ports, opts=""):
    return "%s://%s%s" % (kind, ",".join("127.0.0.1:%d" % p for p in ports), opts)


class Fans(threading.Thread):
    """Answers with a new user each, to whichever ingest is up, until told
    to stop; bounded by max_answers."""

    def __init__(self, ev, ports, kind, max_answers=20000, prefix="grow"):
        super().__init__(daemon=True)
        self.ev, self.ports, self.kind, self.prefix = ev, ports, kind, prefix
        self.max_answers = max_answers
        self.tally = ltutil.AnswerTally(ev)
        self.stop_flag = threading.Event()
        self.sent = 0
        self.retried = 0
        self.counted_earlier = 0
        self.failed = []

    def one(self, a):
        deadline = time.time() + 15
        tries = 0
        while time.time() < deadline:
            port = self.ports[(self.sent + tries) % len(self.ports)]
            tries += 1
            try:
                c = ltutil.Client(port, timeout=5)
                status, _, body = c.request("POST", "/v1/answers", a)
                c.close()
            except (OSError, ConnectionError):
                status, body = None, b""
            if status == 202:
                return "ok"
            if status == 409 and b"duplicate_answer" in body and tries > 1:
                return "earlier"
            if status is None or status == 503:
                self.retried += 1
                time.sleep(0.05)
                continue
            return "status %s %s" % (status, body[:120])
        return "deadline"

    def run(self):
        rng = random.Random(18)
        while not self.stop_flag.is_set() and self.sent < self.max_answers:
            qid = rng.choice([1, 2])
            a = ltutil.random_answer(rng, self.ev, qid,
                                     user="%s-%s-%d" % (self.prefix, self.kind, self.sent))
            got = self.one(a)
            self.sent += 1
            if got in ("ok", "earlier"):
                self.tally.add(a)
                self.counted_earlier += got == "earlier"
            else:
                self.failed.append(got)


def poll(client, predicate, timeout):
    try:
        return ltutil.wait_stats(client, predicate, timeout=timeout)
    except AssertionError:
        return None


def keys_on(kind, port):
    if kind == "memcached":
        return ltutil.mc_keys(port)
    reply = ltutil.redis_command(port, "KEYS", "*").decode(errors="replace")
    return [ln for ln in reply.split("\r\n")[1:] if ln and not ln.startswith("$")]


def ingest(event_path, backend, port, token_path, name):
    return ltutil.Proc([ltutil.binary("livetally-ingest"), "--event", event_path, "--backend",
                        backend, "--listen", "127.0.0.1:%d" % port, "--admin-token-file",
                        token_path, "--drain-delay", "0"], port=port, log_name=name)


def aggregator(event_path, backend, port):
    return ltutil.Proc([ltutil.binary("livetally-aggregate"), "--event", event_path,
                        "--backend", backend, "--interval", "200", "--listen",
                        "127.0.0.1:%d" % port], port=port, log_name="aggregate")


def dashboard(event_path, backend, port, name="dashboard"):
    return ltutil.Proc([ltutil.binary("livetally-dashboard"), "--event", event_path,
                        "--backend", backend, "--listen", "127.0.0.1:%d" % port,
                        "--interval", "200"], port=port, log_name=name)


def check_exact(chk, dc, fans, what, counted, quiet):
    """The dashboard shows exactly the fans' acknowledged answers, every
    breakdown too, with no warning (polled until it does, 20 s)."""
    n = fans.tally.n

    def exact(s):
        return sum(q["answers"] for q in s["questions"]) == n and not s.get("warnings")
    snap = poll(dc, exact, timeout=20)
    got = snap if snap is not None else dc.json("GET", "/v1/stats")[1]
    chk.eq(sum(q["answers"] for q in got["questions"]), n, "%s: %s" % (what, counted))
    chk.eq(got.get("warnings"), [], "%s: %s" % (what, quiet))
    ltutil.compare_summaries(chk, ltutil.snapshot_summary(got), fans.tally.summary(),
                             "%s: every breakdown" % what)


def stop_all(chk, what, procs, servers):
    """Each binary exits 0 on SIGTERM; the servers are stopped."""
    for p in procs:
        chk.eq(p.stop(), 0, "%s: %s exits 0" % (what, p.args[0].rsplit("/", 1)[-1]))
    for s in servers:
        s.stop()


def run_cases(chk, prefix, case):
    """case(kind, url options, tmp) on memcached and on Redis with replicas=2."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        case("memcached", "", tmp)
        case("redis", "?replicas=2", tmp)
    chk.finish()


class PoolNight:
    """4 servers of kind (memcached or redis), a 2-question event, and on
    the first 3 nodes: two ingests, an aggregator and a dashboard."""

    def __init__(self, kind, opts, tmp, prefix):
        start = ltutil.memcached if kind == "memcached" else ltutil.redis
        self.servers = [start() for _ in range(4)]
        self.ports = [s.port for s in self.servers]
        self.three, self.four = url(kind, self.ports[:3], opts), url(kind, self.ports, opts)
        self.event_path, self.ev = ltutil.write_event(tmp, n_questions=2, name=prefix + kind)
        self.name = self.ev["event"]
        self.token_path, _ = ltutil.write_token(tmp)
        self.i1, self.i2, self.ap, self.dp = (ltutil.free_port() for _ in range(4))
        self.ing1 = ingest(self.event_path, self.three, self.i1, self.token_path, "ingest1")
        self.ing2 = ingest(self.event_path, self.three, self.i2, self.token_path, "ingest2")
        self.agg = aggregator(self.event_path, self.three, self.ap)
        self.dash = dashboard(self.event_path, self.three, self.dp)
        self.dc = ltutil.Client(self.dp)
