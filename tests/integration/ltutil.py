"""Helpers for livetally's integration tests: real servers on free loopback
ports, real HTTP, and cleanup of every process a test starts (by PID, also
when the test fails)."""

import atexit
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


def memcached():
    exe = shutil.which("memcached") or "/usr/bin/memcached"
    port = free_port()
    return Proc([exe, "-u", "root", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-t", "2",
                 "-m", "128"], port=port, log_name="memcached")


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
