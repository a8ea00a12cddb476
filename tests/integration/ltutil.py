"""Helpers for livetally's integration tests: real servers on free loopback
ports, real HTTP, and cleanup of every process a test starts (by PID, also
when the test fails)."""

import atexit
import collections
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import zlib

BIN = os.environ.get("LIVETALLY_BIN", os.path.join(os.path.dirname(__file__), "../../build"))
SRC = os.environ.get("LIVETALLY_SRC", os.path.join(os.path.dirname(__file__), "../.."))
EVENT = os.path.join(SRC, "examples", "1d-live.json")

_started = []


def binary(name):
    paths = {
        "livetally": "livetally/livetally",
        "livetally-ingest": "ingest/livetally-ingest",
        "livetally-aggregate": "aggregate/livetally-aggregate",
        "livetally-dashboard": "dashboard/livetally-dashboard",
        "livetally-loadtest": "loadtest/livetally-loadtest",
    }
    return os.path.join(BIN, paths[name])


def find_chromium():
    """The installed Chromium (scripts/setup.sh installs it), or None."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc=None, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError("process exited early with %s" % proc.returncode)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("nothing listens on port %d after %.0fs" % (port, timeout))


class Proc:
    """A child process stopped by PID when the test ends, whatever happens."""

    def __init__(self, args, port=None, log_name=None):
        self.args = args
        self.port = port
        self.log = tempfile.NamedTemporaryFile(prefix=(log_name or "proc") + "-", suffix=".log",
                                               delete=False)
        self.p = subprocess.Popen(args, stdout=self.log, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL)
        _started.append(self)
        if port is not None:
            wait_port(port, self.p)

    @property
    def pid(self):
        return self.p.pid

    def signal(self, sig):
        if self.p.poll() is None:
            os.kill(self.p.pid, sig)

    def wait(self, timeout):
        return self.p.wait(timeout=timeout)

    def stop(self, timeout=10.0):
        """SIGTERM, then SIGKILL; returns the exit code."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
        if self in _started:
            _started.remove(self)
        return self.p.returncode

    def output(self):
        self.log.flush()
        with open(self.log.name, errors="replace") as f:
            return f.read()


def _cleanup():
    for p in list(_started):
        try:
            p.stop(timeout=3)
        except Exception:
            pass


atexit.register(_cleanup)
for _sig in (signal.SIGTERM, signal.SIGINT):
    signal.signal(_sig, lambda s, f: sys.exit(1))


def memcached(port=None):
    """memcached on a free port (or on port: a restart after a kill)."""
    exe = shutil.which("memcached") or "/usr/bin/memcached"
    port = port or free_port()
    return Proc([exe, "-u", "root", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "2",
                 "-m", "128"], port=port, log_name="memcached")


def redis(port=None, cluster_dir=None):
    """redis-server on a free port (or on port), nothing saved to disk. With
    cluster_dir, a cluster node keeping its nodes.conf there and its cluster
    bus on a free port of its own (the default, port + 10000, may be taken)."""
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = port or free_port()
    args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    if cluster_dir is None:
        return Proc(args, port=port, log_name="redis")
    bus = free_port()
    while bus == port:
        bus = free_port()
    args += ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
             "--cluster-node-timeout", "5000", "--cluster-port", str(bus), "--dir", cluster_dir]
    node = Proc(args, port=port, log_name="redis")
    # a node that lost the race for its bus port exits after it took the
    # client port: ready means both listen
    wait_port(bus, node.p)
    return node


def redis_command(port, *args, timeout=2.0):
    """One command over RESP; returns the raw reply bytes (enough for the
    short replies the tests read)."""
    req = b"*%d\r\n" % len(args)
    for a in args:
        a = a.encode() if isinstance(a, str) else a
        req += b"$%d\r\n%s\r\n" % (len(a), a)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(req)
        data = b""
        while not data.endswith(b"\r\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def redis_cluster(masters=3, timeout=30.0):
    """A Redis Cluster of `masters` nodes (no replicas) made by
    redis-cli --cluster create; returns the node Procs once every node says
    cluster_state:ok. Their directories go when the test ends."""
    nodes = []
    for _ in range(masters):
        d = tempfile.mkdtemp(prefix="lt-redis-node-")
        atexit.register(shutil.rmtree, d, True)
        nodes.append(redis(cluster_dir=d))
    cli = shutil.which("redis-cli") or "/usr/bin/redis-cli"
    made = subprocess.run([cli, "--cluster", "create"] +
                          ["127.0.0.1:%d" % n.port for n in nodes] + ["--cluster-yes"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, timeout=timeout)
    if made.returncode != 0:
        raise RuntimeError("redis-cli --cluster create failed:\n" +
                           made.stdout.decode(errors="replace"))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(b"cluster_state:ok" in redis_command(n.port, "CLUSTER", "INFO") for n in nodes):
            return nodes
        time.sleep(0.05)
    raise RuntimeError("the cluster did not reach cluster_state:ok in %.0fs" % timeout)


class Client:
    """One keep-alive HTTP/1.1 connection."""

    def __init__(self, port, timeout=10.0):
        self.port = port
        self.timeout = timeout
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)

    def request(self, method, path, body=None, headers=None):
        h = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        if isinstance(body, str):
            body = body.encode()
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=body, headers=h)
                r = self.conn.getresponse()
                data = r.read()
                return r.status, {k.lower(): v for k, v in r.getheaders()}, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                # The server closed an idle keep-alive connection: one retry on a new one.
                self.conn.close()
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                if attempt:
                    raise

    def json(self, method, path, body=None, headers=None):
        status, hdrs, data = self.request(method, path, body, headers)
        return status, (json.loads(data) if data else None), hdrs

    def close(self):
        self.conn.close()


def write_token(tmpdir, token="test-admin-token"):
    path = os.path.join(tmpdir, "admin.token")
    with open(path, "w") as f:
        f.write(token + "\n")
    return path, token


def load_event(path=EVENT):
    with open(path) as f:
        return json.load(f)


def wait_stats(client, predicate, timeout=15.0, path="/v1/stats"):
    """Polls until predicate(stats) is true; returns the stats."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        status, body, _ = client.json("GET", path)
        if status == 200:
            last = body
            if predicate(body):
                return body
        time.sleep(0.1)
    raise AssertionError("stats did not reach the expected state in %.0fs; last: %s" %
                         (timeout, json.dumps(last)[:2000] if last else None))


class Checker:
    """Collects failed checks so one run reports all of them, and prints the
    closing line ctest's log shows."""

    def __init__(self, name):
        self.name = name
        self.passed = 0
        self.failed = 0

    def eq(self, got, want, what):
        if got == want:
            self.passed += 1
        else:
            self.failed += 1
            print("FAIL %s: got %r, want %r" % (what, got, want), flush=True)

    def true(self, cond, what):
        self.eq(bool(cond), True, what)

    def finish(self):
        print("%s: %d passed, %d failed" % (self.name, self.passed, self.failed), flush=True)
        _cleanup()
        sys.exit(1 if self.failed or self.passed == 0 else 0)


# ---- Server-Sent Events and hand-made snapshots (dashboard tests) ----------

class SseStream:
    """One GET of a Server-Sent Events stream over a raw socket: the status
    and headers, then events as they come (HTTP/1.1 chunked bodies decoded)."""

    def __init__(self, port, path="/v1/stats/stream", headers=None, timeout=10.0, http10=False):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        lines = ["GET %s HTTP/%s" % (path, "1.0" if http10 else "1.1"), "Host: 127.0.0.1",
                 "Accept: text/event-stream"]
        for k, v in (headers or {}).items():
            lines.append("%s: %s" % (k, v))
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        self.raw = b""      # received, not yet decoded
        self.body = b""     # decoded body, not yet parsed into events
        self.comments = []  # comment lines seen (heartbeats)
        self.retry = None
        self.closed = False
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.raw:
            if not self._recv(deadline):
                raise RuntimeError("no response head from the stream")
        head, self.raw = self.raw.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        self.headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            self.headers[k.strip().lower()] = v.strip()
        self.chunked = self.headers.get("transfer-encoding", "").lower() == "chunked"
        # gzip'd: one gzip stream over the whole body, decoded as it comes
        self.gunzip = (zlib.decompressobj(16 + zlib.MAX_WBITS)
                       if self.headers.get("content-encoding", "").lower() == "gzip" else None)
        if self.status != 200:
            n = int(self.headers.get("content-length", "0"))
            while len(self.raw) < n and self._recv(deadline):
                pass
            self.error_body = self.raw[:n]

    def _recv(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or self.closed:
            return False
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except OSError:
            data = b""
        if not data:
            self.closed = True
            return False
        self.raw += data
        return True

    def _add_body(self, data):
        self.body += self.gunzip.decompress(data) if self.gunzip is not None else data

    def _decode(self):
        if not self.chunked:
            self._add_body(self.raw)
            self.raw = b""
            return
        while True:
            line_end = self.raw.find(b"\r\n")
            if line_end < 0:
                return
            size = int(self.raw[:line_end].split(b";")[0], 16)
            if len(self.raw) < line_end + 2 + size + 2:
                return
            start = line_end + 2
            self._add_body(self.raw[start:start + size])
            if self.raw[start + size:start + size + 2] != b"\r\n":
                raise AssertionError("bad chunk framing")
            self.raw = self.raw[start + size + 2:]
            if size == 0:
                self.closed = True
                return

    def next_event(self, timeout=5.0):
        """The next event as {"event", "id", "data"}, or None after timeout
        (or when the stream ended). Comment-only blocks go to comments."""
        deadline = time.monotonic() + timeout
        while True:
            self._decode()
            while b"\n\n" in self.body:
                block, self.body = self.body.split(b"\n\n", 1)
                ev = {"event": "message", "id": None, "data": None}
                data = []
                fields = 0
                for line in block.decode("utf-8").split("\n"):
                    if line.startswith(":"):
                        self.comments.append(line[1:].strip())
                        continue
                    k, _, v = line.partition(":")
                    v = v[1:] if v.startswith(" ") else v
                    fields += 1
                    if k == "data":
                        data.append(v)
                    elif k == "retry":
                        self.retry = int(v)
                    elif k in ("event", "id"):
                        ev[k] = v
                if data:
                    ev["data"] = "\n".join(data)
                    ev["data_lines"] = len(data)
                    return ev
            if not self._recv(deadline):
                return None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def memcached_cmd(port, payload, expect_lines=1, timeout=5.0):
    """Sends raw memcached text-protocol bytes; returns the reply lines."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        data = b""
        while data.count(b"\r\n") < expect_lines:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.decode("latin-1").split("\r\n")[:expect_lines]


def publish_snapshot(mc_port, event, generation, snapshot, ttl_s=3600):
    """Publishes a snapshot by hand in the layout of common/snapstore.h (what
    the aggregator writes): chunks of at most 512 KiB in slot generation % 2,
    each led by "<generation>\\n", then the head "<generation> <n> <len>"."""
    text = snapshot if isinstance(snapshot, bytes) else json.dumps(snapshot).encode()
    chunk = 512 * 1024
    n = (len(text) + chunk - 1) // chunk
    payload = b""
    for i in range(n):
        key = ("%s:snap:%d:%d" % (event, generation % 2, i)).encode()
        value = b"%d\n" % generation + text[i * chunk:(i + 1) * chunk]
        payload += b"set %s 0 %d %d\r\n%s\r\n" % (key, ttl_s, len(value), value)
    head = b"%d %d %d" % (generation, n, len(text))
    payload += b"set %s:snap 0 %d %d\r\n%s\r\n" % (event.encode(), ttl_s, len(head), head)
    replies = memcached_cmd(mc_port, payload, expect_lines=n + 1)
    if replies != ["STORED"] * (n + 1):
        raise RuntimeError("memcached did not store the snapshot: %r" % replies)


# ---------------------------------------------------------------------------
# Raw HTTP, store counters, event files and process figures: what the ingest
# tests need to send exactly the bytes they mean (pipelining, bad input) and
# to check every counter against a tally kept on the client side.

import random  # noqa: E402
import re  # noqa: E402
import resource  # noqa: E402
import select  # noqa: E402
import struct  # noqa: E402
import threading  # noqa: E402
import urllib.parse  # noqa: E402

# Codes that are certainly assigned ISO 3166-1 alpha-2 codes, and spellings
# the ingest counts as "unknown"; "uk" is taken as "gb".
ISO_SAMPLE = ("us", "gb", "ie", "fr", "de", "br", "jp", "in", "es", "it", "nl", "se")
NOT_COUNTRIES = ("zz", "usa", "", "x1")


def memcached_on(port):
    """A memcached on this port (a restart of a killed one: empty)."""
    exe = shutil.which("memcached") or "/usr/bin/memcached"
    return Proc([exe, "-u", "root", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "2",
                 "-m", "128"], port=port, log_name="memcached")


def write_event(tmpdir, n_questions=4, name="lt-test", open_all=True):
    """An event file like the example's (same shards, buckets, countries)
    whose questions are all open from start-up. Returns (path, dict)."""
    ev = dict(load_event())
    ev["event"] = name
    qs = []
    for i in range(n_questions):
        nopt = 3 + i % 2
        q = {"id": i + 1, "text": "Question %d" % (i + 1),
             "options": ["option %d" % k for k in range(nopt)], "correct": i % nopt}
        if open_all:
            q["open"] = True
        qs.append(q)
    ev["questions"] = qs
    path = os.path.join(tmpdir, name + ".json")
    with open(path, "w") as f:
        json.dump(ev, f)
    return path, ev


def normalise_country(c):
    if c is None:
        return "unknown"
    c = c.lower()
    if c == "uk":
        return "gb"
    return c if c in ISO_SAMPLE else "unknown"


def random_answer(rng, ev, qid, user=None):
    """A valid answer with a varied age, country (or none) and option."""
    q = [q for q in ev["questions"] if q["id"] == qid][0]
    a = {"question": qid, "answer": rng.randrange(len(q["options"])), "age": rng.randint(1, 130)}
    r = rng.random()
    if r < 0.25:
        a["country"] = rng.choice(["us", "US", "Us"])
    elif r < 0.4:
        a["country"] = rng.choice(["gb", "uk", "UK"])
    elif r < 0.5:
        a["country"] = rng.choice(NOT_COUNTRIES)
    elif r < 0.55:
        a["country"] = None
    elif r < 0.9:
        a["country"] = rng.choice(ISO_SAMPLE)
    if user is not None:
        a["user"] = user
    return a


class AnswerTally:
    """Expected counters of a set of acknowledged answers, in the shape
    counter_summary() and snapshot_summary() give (zeros left out):
    {qid: {"right": n, "wrong": n, "by_answer": {k: n},
           "by_age": {bucket1: (right, wrong)}, "by_country": {cc: (right, wrong)}}}"""

    def __init__(self, ev):
        self.ev = ev
        self.questions = {q["id"]: q for q in ev["questions"]}
        self.lock = threading.Lock()
        self.n = 0
        self.raw = {}

    def _bucket(self, age):
        for i, b in enumerate(self.ev["age_buckets"]):
            if age <= b["max"]:
                return i + 1
        raise ValueError(age)

    def add(self, a):
        qid = a["question"]
        right = a["answer"] == self.questions[qid]["correct"]
        key = (qid, right, a["answer"], self._bucket(a["age"]), normalise_country(a.get("country")))
        with self.lock:
            self.raw[key] = self.raw.get(key, 0) + 1
            self.n += 1

    def summary(self, questions=None):
        out = {}
        with self.lock:
            items = list(self.raw.items())
        for (qid, right, opt, bucket, cc), n in items:
            if questions is not None and qid not in questions:
                continue
            q = out.setdefault(qid, _empty_question())
            o = 0 if right else 1
            q["right" if right else "wrong"] += n
            q["by_answer"][opt] = q["by_answer"].get(opt, 0) + n
            _add_pair(q["by_age"], bucket, o, n)
            _add_pair(q["by_country"], cc, o, n)
        return out


def _empty_question():
    return {"right": 0, "wrong": 0, "by_answer": {}, "by_age": {}, "by_country": {}}


def _add_pair(d, k, o, n):
    r, w = d.get(k, (0, 0))
    d[k] = (r + n, w) if o == 0 else (r, w + n)


_COUNTER_RES = (
    ("total", re.compile(r"q(\d+)(right|wrong)(\d{2,})$")),
    ("age", re.compile(r"q(\d+)age(\d+)(right|wrong)(\d{2,})$")),
    ("country", re.compile(r"q(\d+)c([a-z]+?)(right|wrong)(\d{2,})$")),
    ("option", re.compile(r"q(\d+)opt(\d+)n(\d{2,})$")),
)


def parse_counter_key(ev, key):
    """(kind, qid, sub, outcome, shard) of a counter key of the event, or
    None for its other keys (question state, snapshot, per-user)."""
    prefix = ev["event"] + ":"
    if not key.startswith(prefix):
        return None
    rest = key[len(prefix):]
    for kind, rx in _COUNTER_RES:
        m = rx.match(rest)
        if not m:
            continue
        g = m.groups()
        if kind == "total":
            return kind, int(g[0]), None, g[1], int(g[2])
        if kind == "age":
            return kind, int(g[0]), int(g[1]), g[2], int(g[3])
        if kind == "country":
            return kind, int(g[0]), g[1], g[2], int(g[3])
        return kind, int(g[0]), int(g[1]), None, int(g[2])
    return None


def counter_summary(ev, counters):
    """Sums the shards of raw counters {key: value} into AnswerTally's
    shape. Returns (summary, anomalies): anomalies lists counter keys that
    do not fit the event (shard out of range, unknown question, ...)."""
    out = {}
    anomalies = []
    qids = {q["id"] for q in ev["questions"]}
    for key, v in counters.items():
        p = parse_counter_key(ev, key)
        if p is None:
            rest = key[len(ev["event"]) + 1:]
            if not (rest.startswith("snap") or rest.endswith(":state") or rest.startswith("u:") or
                    rest.startswith("fans:")):
                anomalies.append(key)
            continue
        kind, qid, sub, outcome, shard = p
        shards = ev.get("shards", 100)
        if kind == "country":
            shards = ev.get("hot_countries", {}).get(sub, ev.get("country_shards", 3))
        if qid not in qids or not 1 <= shard <= shards:
            anomalies.append(key)
            continue
        if v == 0:
            continue
        q = out.setdefault(qid, _empty_question())
        o = 0 if outcome == "right" else 1
        if kind == "total":
            q[outcome] += v
        elif kind == "age":
            _add_pair(q["by_age"], sub, o, v)
        elif kind == "country":
            _add_pair(q["by_country"], sub, o, v)
        else:
            q["by_answer"][sub] = q["by_answer"].get(sub, 0) + v
    return out, anomalies


def compare_summaries(chk, got, want, what, questions=None, at_least=False):
    """One check per question and breakdown; at_least: got >= want for every
    counter (a store that may hold more than the tally)."""
    qids = sorted(set(got) | set(want)) if questions is None else sorted(questions)
    for qid in qids:
        g = got.get(qid, _empty_question())
        w = want.get(qid, _empty_question())
        for field in ("right", "wrong", "by_answer", "by_age", "by_country"):
            label = "%s: q%d %s" % (what, qid, field)
            if not at_least:
                chk.eq(g[field], w[field], label)
                continue
            if isinstance(w[field], int):
                chk.true(g[field] >= w[field], "%s: %d >= %d" % (label, g[field], w[field]))
                continue
            short = {}
            for k, wv in w[field].items():
                gv = g[field].get(k, 0 if isinstance(wv, int) else (0, 0))
                pairs = zip(gv, wv) if isinstance(wv, tuple) else [(gv, wv)]
                if any(a < b for a, b in pairs):
                    short[k] = (gv, wv)
            chk.eq(short, {}, label + " >= tally ({key: (store, tally)} short)")


# ---- memcached: raw meta protocol -----------------------------------------

def _mc_talk(port, payload, done, timeout=10.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(payload)
        buf = b""
        deadline = time.monotonic() + timeout
        while not done(buf):
            if time.monotonic() > deadline:
                raise RuntimeError("memcached %d: no complete reply in %.0fs" % (port, timeout))
            chunk = s.recv(1 << 20)
            if not chunk:
                raise RuntimeError("memcached %d closed the connection" % port)
            buf += chunk
        return buf


def mc_keys(port):
    """Every key a memcached holds (lru_crawler metadump)."""
    for _ in range(50):
        out = _mc_talk(port, b"lru_crawler metadump all\r\n",
                       lambda b: b.endswith(b"END\r\n") or b.startswith(b"BUSY") or
                       b.startswith(b"ERROR") or b.startswith(b"CLIENT_ERROR"))
        if out.startswith(b"BUSY"):
            time.sleep(0.05)
            continue
        if not out.endswith(b"END\r\n"):
            raise RuntimeError("memcached %d metadump: %r" % (port, out[:200]))
        keys = []
        for line in out.split(b"\n"):  # metadump lines end in \n alone
            if line.startswith(b"key="):
                keys.append(urllib.parse.unquote(line.split(b" ", 1)[0][4:].decode()))
        return keys
    raise RuntimeError("memcached %d: metadump busy" % port)


def mc_get_many(port, keys):
    """{key: bytes value} of the keys present (pipelined mg, ended by mn)."""
    out = {}
    for i in range(0, len(keys), 2000):
        part = keys[i:i + 2000]
        payload = b"".join(b"mg %s v\r\n" % k.encode() for k in part) + b"mn\r\n"
        buf = _mc_talk(port, payload, lambda b: b.endswith(b"MN\r\n"))
        pos = 0
        for k in part:
            eol = buf.index(b"\r\n", pos)
            line = buf[pos:eol]
            pos = eol + 2
            if line.startswith(b"VA "):
                n = int(line.split()[1])
                out[k] = buf[pos:pos + n]
                pos += n + 2
            elif line != b"EN":
                raise RuntimeError("memcached %d: mg %s: %r" % (port, k, line))
        if buf[pos:] != b"MN\r\n":
            raise RuntimeError("memcached %d: trailing %r" % (port, buf[pos:pos + 100]))
    return out


def node_counters(port, ev):
    """{key: value} of the event's numeric keys on one memcached."""
    # The dump must have seen every key, or nothing is proven. A server may
    # still write in the background (the ingest's list of fans, once a
    # second): dump again until no key was added meanwhile.
    for _ in range(20):
        before = int(mc_stats(port)["curr_items"])
        every = mc_keys(port)
        items = int(mc_stats(port)["curr_items"])
        if len(every) == items == before:
            break
        time.sleep(0.2)
    else:
        raise RuntimeError("memcached %d: metadump listed %d keys of %d" %
                           (port, len(every), items))
    keys = [k for k in every if k.startswith(ev["event"] + ":")]
    vals = mc_get_many(port, keys)
    out = {}
    for k, v in vals.items():
        if v.isdigit():
            out[k] = int(v)
    return out


def store_counters(ports, ev):
    """{key: value} over a pool without replicas (each key on one node)."""
    out = {}
    for p in ports:
        for k, v in node_counters(p, ev).items():
            out[k] = out.get(k, 0) + v
    return out


def mc_stats(port):
    out = _mc_talk(port, b"stats\r\n", lambda b: b.endswith(b"END\r\n"))
    st = {}
    for line in out.decode().split("\r\n"):
        parts = line.split()
        if len(parts) == 3 and parts[0] == "STAT":
            st[parts[1]] = parts[2]
    return st


def aggregate_once(event_path, backend, timeout=60):
    """One pass of livetally-aggregate: the snapshot is published."""
    p = subprocess.run([binary("livetally-aggregate"), "--event", event_path, "--backend",
                        backend, "--once"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=timeout)
    return p.returncode, p.stdout.decode(errors="replace")


def read_snapshot(ports, ev):
    """The published snapshot JSON (snapstore.h layout), or None."""
    name = ev["event"]
    for port in ports:
        head = mc_get_many(port, [name + ":snap"]).get(name + ":snap")
        if head is None:
            continue
        gen, nchunks, total = (int(x) for x in head.split())
        data = b""
        for i in range(nchunks):
            key = "%s:snap:%d:%d" % (name, gen % 2, i)
            chunk = None
            for p2 in ports:
                chunk = mc_get_many(p2, [key]).get(key)
                if chunk is not None:
                    break
            if chunk is None:
                return None
            line, _, rest = chunk.partition(b"\n")
            if int(line) != gen:
                return None
            data += rest
        if len(data) != total:
            return None
        return json.loads(data)
    return None


def snapshot_summary(snap):
    """A snapshot's questions in AnswerTally's shape (zeros left out)."""
    out = {}
    for q in snap["questions"]:
        if q["answers"] == 0:
            continue
        s = _empty_question()
        s["right"], s["wrong"] = q["right"], q["wrong"]
        s["by_answer"] = {k: n for k, n in enumerate(q["by_answer"]) if n}
        s["by_age"] = {a["bucket"]: (a["right"], a["wrong"]) for a in q["by_age"] if a["answers"]}
        s["by_country"] = {c["country"]: (c["right"], c["wrong"]) for c in q["by_country"]
                           if c["answers"]}
        out[q["id"]] = s
    return out


# ---- raw HTTP ---------------------------------------------------------------

def http_bytes(method, path, body=b"", headers=None, keep_alive=True):
    """One HTTP/1.1 request, exactly these bytes (Content-Length when a body)."""
    if isinstance(body, str):
        body = body.encode()
    lines = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1"]
    h = dict(headers or {})
    if body or method == "POST":
        h.setdefault("Content-Length", str(len(body)))
    if not keep_alive:
        h["Connection"] = "close"
    for k, v in h.items():
        lines.append("%s: %s" % (k, v))
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def answer_bytes(a, keep_alive=True):
    body = json.dumps({k: v for k, v in a.items() if v is not None}, separators=(",", ":"))
    return http_bytes("POST", "/v1/answers", body, {"Content-Type": "application/json"},
                      keep_alive)


class Closed(Exception):
    """The connection ended before a whole response arrived."""


class RawConn:
    """One client connection speaking raw HTTP/1.1 (responses with a
    Content-Length, as the ingest always sends)."""

    def __init__(self, port, timeout=10.0, src=None):
        """src: the loopback address to connect from (127.0.0.x), for tests
        that tell clients apart by address."""
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                             source_address=(src, 0) if src else None)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self):
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise
        except OSError as e:
            raise Closed(str(e))
        if not chunk:
            self.eof = True
            raise Closed("eof")
        self.buf += chunk

    def response(self):
        """(status, {header: value} lowercased, body); Closed on EOF/reset."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, _, rest = self.buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        hdrs = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            hdrs[k.strip().lower()] = v.strip()
        n = int(hdrs.get("content-length", "0"))
        while len(rest) < n:
            self._fill()
            head, _, rest = self.buf.partition(b"\r\n\r\n")
        self.buf = rest[n:]
        return status, hdrs, rest[:n]

    def wait_closed(self, timeout):
        """True when the peer closes (EOF or reset) within timeout; the
        bytes read meanwhile are kept in buf."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.sock], [], [], max(0.0, deadline - time.monotonic()))
            if not r:
                continue
            try:
                chunk = self.sock.recv(65536)
            except OSError:
                return True
            if not chunk:
                return True
            self.buf += chunk
        return False

    def close(self, reset=False):
        if reset:  # RST instead of FIN: no TIME_WAIT left behind
            try:
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
        self.sock.close()


def http_get(port, path, timeout=10.0):
    """(status, headers, body) of one GET on a fresh connection."""
    c = RawConn(port, timeout)
    try:
        c.send(http_bytes("GET", path, keep_alive=False))
        return c.response()
    finally:
        c.close()


def metrics(port):
    """{"name" or "name{labels}": value} of GET /metrics."""
    status, _, body = http_get(port, "/metrics")
    if status != 200:
        raise RuntimeError("/metrics: %d" % status)
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, _, v = line.rpartition(" ")
            out[name] = float(v)
    return out


def check_process_metrics(chk, port, binary, pid):
    """/metrics of a livetally binary ends with livetally_build_info and the
    process_* families of the Prometheus client libraries, and they say
    what /proc says of pid."""
    m = metrics(port)
    info = [k for k in m if k.startswith("livetally_build_info{")]
    chk.true(len(info) == 1 and 'binary="%s"' % binary in info[0] and 'version="' in info[0]
             and m[info[0]] == 1, "%s: livetally_build_info (%s)" % (binary, info))
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rpartition(")")[2].split()
    start = fields[19]  # starttime, field 22 of proc(5)
    with open("/proc/stat") as f:
        btime = next(int(line.split()[1]) for line in f if line.startswith("btime "))
    started = btime + int(start) / os.sysconf("SC_CLK_TCK")
    chk.true(abs(m.get("process_start_time_seconds", 0) - started) < 1,
             "%s: process_start_time_seconds is its start (%s vs %s)" %
             (binary, m.get("process_start_time_seconds"), started))
    chk.true(m.get("process_cpu_seconds_total", -1) >= 0, "%s: process_cpu_seconds_total" % binary)
    rss = m.get("process_resident_memory_bytes", 0)
    chk.true(1 << 20 < rss < 1 << 34, "%s: process_resident_memory_bytes (%s)" % (binary, rss))
    # Connections come and go between the two reads (the /metrics request's
    # own, a handed-over one closing): a few tries at a quiet moment.
    for _ in range(5):
        fds = len(os.listdir("/proc/%d/fd" % pid))
        if abs(m.get("process_open_fds", 0) - fds) <= 3:
            break
        time.sleep(0.2)
        m = metrics(port)
    chk.true(abs(m.get("process_open_fds", 0) - fds) <= 3,
             "%s: process_open_fds (%s, /proc shows %d)" % (binary, m.get("process_open_fds"), fds))
    chk.true(m.get("process_max_fds", 0) >= m.get("process_open_fds", 1),
             "%s: process_max_fds" % binary)


def wait_metrics(port, predicate, timeout=15.0):
    """Polls /metrics until predicate(m) holds; returns the last figures
    (the caller checks: a timeout is not an exception). A refused, reset or
    503 poll (a server at its connection bound) is tried again."""
    deadline = time.monotonic() + timeout
    m = None
    while True:
        try:
            m = metrics(port)
        except (OSError, Closed, RuntimeError):  # RuntimeError: a status other than 200
            if time.monotonic() >= deadline:
                raise
        if (m is not None and predicate(m)) or time.monotonic() >= deadline:
            return m if m is not None else {}
        time.sleep(0.1)


def wait_ready(port, timeout=15.0):
    """Until GET /healthz answers 200 on a connection of its own: such a
    connection is served by the main thread, so the whole process is up
    (an open port only means the answer threads are)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = http_get(port, "/healthz", timeout=2.0)[0]
            if last == 200:
                return
        except (OSError, Closed) as e:
            last = str(e)
        time.sleep(0.05)
    raise RuntimeError("port %d not ready in %.0fs: %s" % (port, timeout, last))


def ingest_quiet(m):
    """Nothing waiting for the store, nothing carried, no batch filling."""
    return (m.get("livetally_ingest_waiting_answers", 1) == 0 and
            m.get("livetally_ingest_carry_keys", 1) == 0 and
            m.get("livetally_ingest_open_batch_answers", 1) == 0)


def proc_status_kib(pid, field="VmRSS"):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError("%s not in /proc/%d/status" % (field, pid))


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Outcome:
    """One answer sent: what the client knows of it."""
    __slots__ = ("a", "t_send", "t_recv", "status", "error", "retry_after", "closed")

    def __init__(self, a, t_send):
        self.a = a
        self.t_send = t_send
        self.t_recv = None
        self.status = None      # None: no response (the connection ended first)
        self.error = None
        self.retry_after = None
        self.closed = None      # why the connection ended, when it did


class AnswerSender(threading.Thread):
    """Sends answers from next_answer() (None: stop) over `conns`
    connections of its own; each connection writes `depth` requests at once
    (HTTP/1.1 pipelining when > 1) and reads their responses. Every request
    becomes an Outcome in self.outcomes. A connection that ends is reopened
    unless reconnect is False (then the sender stops: a refused connect
    ends it too). stop_on(outcome) -> True stops the sender after that
    response."""

    def __init__(self, port, next_answer, conns=1, depth=1, reconnect=True, stop_on=None,
                 timeout=15.0):
        super().__init__(daemon=True)
        self.port = port
        self.next_answer = next_answer
        self.nconns = conns
        self.depth = depth
        self.reconnect = reconnect
        self.stop_on = stop_on
        self.timeout = timeout
        self.outcomes = []
        self.errors = []        # connect failures and other surprises, with times
        self.stopped = threading.Event()

    def _open(self):
        try:
            return RawConn(self.port, self.timeout)
        except OSError as e:
            self.errors.append((time.monotonic(), "connect: %s" % e))
            return None

    def run(self):
        conns = [self._open() for _ in range(self.nconns)]
        out_of_answers = False
        while not out_of_answers and not self.stopped.is_set():
            if any(c is None for c in conns):
                if not self.reconnect:
                    break
                conns = [c or self._open() for c in conns]
                if any(c is None for c in conns):
                    time.sleep(0.05)
                    continue
            rounds = []
            for c in conns:
                batch = []
                for _ in range(self.depth):
                    a = self.next_answer()
                    if a is None:
                        out_of_answers = True
                        break
                    batch.append(a)
                if not batch:
                    rounds.append((c, []))
                    continue
                now = time.monotonic()
                outs = [Outcome(a, now) for a in batch]
                self.outcomes.extend(outs)
                try:
                    c.send(b"".join(answer_bytes(a) for a in batch))
                except OSError as e:
                    for o in outs:
                        o.closed = "send: %s" % e
                    rounds.append((c, None))
                    continue
                rounds.append((c, outs))
            for i, (c, outs) in enumerate(rounds):
                if outs is None:
                    c.close(reset=True)
                    conns[i] = None
                    continue
                for o in outs:
                    try:
                        st, hdrs, body = c.response()
                    except (Closed, socket.timeout) as e:
                        for o2 in outs[outs.index(o):]:
                            o2.closed = str(e) or type(e).__name__
                        c.close(reset=True)
                        conns[i] = None
                        break
                    o.t_recv = time.monotonic()
                    o.status = st
                    o.retry_after = hdrs.get("retry-after")
                    try:
                        o.error = json.loads(body).get("error") if body else None
                    except ValueError:
                        o.error = "(not json) %r" % body[:80]
                    if self.stop_on is not None and self.stop_on(o):
                        self.stopped.set()
        for c in conns:
            if c is not None:
                c.close()


def sender_outcomes(senders):
    """Every outcome of the AnswerSenders (once they were joined), the
    replies by kind ("202", or "STATUS ERROR CLOSED"), and their connect
    errors."""
    outs = [o for s in senders for o in s.outcomes]
    kinds = collections.Counter(
        "202" if o.status == 202 else "%s %s %s" % (o.status, o.error, o.closed) for o in outs)
    errors = [e for s in senders for t, e in s.errors]
    return outs, kinds, errors


def answer_feed(answers):
    """next_answer() over a list, shared by several senders."""
    lock = threading.Lock()
    it = iter(answers)

    def nxt():
        with lock:
            return next(it, None)
    return nxt


def endless_feed(ev, qid, seed, stop):
    """next_answer() of random answers to qid until stop (an Event) is set."""
    rng = random.Random(seed)
    lock = threading.Lock()

    def nxt():
        if stop.is_set():
            return None
        with lock:
            return random_answer(rng, ev, qid)
    return nxt


def sanitized(path):
    """True when the binary is built with AddressSanitizer: its RSS then
    holds freed memory in quarantine, and LeakSanitizer checks leaks at exit."""
    with open(path, "rb") as f:
        return b"__asan_init" in f.read()
