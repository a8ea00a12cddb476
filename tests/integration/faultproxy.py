#!/usr/bin/env python3
"""A fault-injecting TCP proxy for the store tests and bench/faults.sh.

Why it exists: the kernel of the machines these tests run on has no netem
qdisc (`tc qdisc add dev lo root netem delay 20ms` fails), and a test must
not need root anyway. So a slow or flaky store link is made in user space:
the proxy listens on a free 127.0.0.1 port and forwards every connection to
a 127.0.0.1 target, with these faults:

  delay_ms     every chunk is forwarded delay_ms after it was read, in each
               direction (a round trip costs 2 x delay_ms), without
               throttling: chunks read meanwhile are in flight together,
               as on a long link.
  cut_every_s  connections are cut at random (exponential intervals of this
               mean): one open connection, chosen at random, is reset on
               both sides (RST, as a middlebox that drops its state does);
               with cut_mode="silent" it is black-holed instead: nothing
               more is forwarded either way and nothing tells the peers,
               until they close it (a path that died without a word).
  stall        toggled at run time (set_stall): nothing is forwarded (bytes
               are held, in order) until it is cleared; connections stay
               open, so the peer sees a silent node, not a closed one.

From a test:
    p = FaultProxy(target_port, delay_ms=20).start()   # p.port listens
    ...; p.set_stall(True); ...; p.stop()
From a shell (bounded: --duration):
    faultproxy.py --target 11211 --port 0 --delay-ms 20 --duration 60
prints "listening PORT" on stdout once it accepts connections; SIGUSR1
toggles the stall; SIGTERM (or the end of --duration) stops it, printing
"accepted N cut M". A test under load should run it so, as a process of
its own (see test_store_slow_replica.py): in the test's process it shares
the interpreter lock with the client threads, and the proxy itself becomes
the slow link.

Threads with blocking sockets, two per connection (and a sender per
direction while a delay or a stall holds bytes back): the store links
carry a few connections of many small messages, where a thread's
recv/sendall costs less than an event loop's turn. Standard library only.
Even so a hop through it costs more than a direct loopback round trip
(bench/README.md gives both).
"""

import argparse
import collections
import random
import signal
import socket
import struct
import sys
import threading
import time

CHUNK = 65536


def _reset(sock):
    """Closes sock with an RST (SO_LINGER 0), waking a thread blocked in recv
    on it first (shutdown of the read side sends nothing)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    try:
        sock.shutdown(socket.SHUT_RD)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _Direction:
    """src -> dst of one connection: direct while nothing is held back,
    else through a queue and a sender thread that keeps the order."""

    def __init__(self, proxy, conn, src, dst):
        self.proxy, self.conn, self.src, self.dst = proxy, conn, src, dst
        self.q = collections.deque()
        self.cv = threading.Condition()
        self.sender = None

    def pump(self):
        data = None
        try:
            while not self.conn.closed:
                data = self.src.recv(CHUNK)
                if not data:
                    break
                self.forward(data)
            self.forward(b"")  # EOF passes through, after what is queued
        except OSError:
            pass
        finally:
            if not data_pending(self):
                self.conn.close()

    def forward(self, data):
        p = self.proxy
        if self.conn.silent:
            return  # black-holed: read and dropped
        with self.cv:
            if not self.q and p.delay_ms <= 0 and not p.stalled:
                self._send(data)
                return
            self.q.append((time.monotonic() + p.delay_ms / 1000.0, data))
            if self.sender is None:
                self.sender = threading.Thread(target=self._drain, daemon=True)
                self.sender.start()
            self.cv.notify()

    def _send(self, data):
        if data:
            self.dst.sendall(data)
        else:
            try:
                self.dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def _drain(self):
        p = self.proxy
        try:
            while not self.conn.closed:
                with self.cv:
                    while not self.q and not self.conn.closed:
                        self.cv.wait(0.2)
                    if self.conn.closed:
                        return
                    due = self.q[0][0]
                wait = due - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                p.unstalled.wait()
                with self.cv:
                    if self.conn.closed or not self.q:
                        continue
                    _, data = self.q.popleft()
                    self._send(data)
                    if not data:
                        return
        except OSError:
            self.conn.close()


def data_pending(d):
    with d.cv:
        return bool(d.q)


class _Conn:
    def __init__(self, proxy, client, target):
        self.proxy = proxy
        self.client, self.target = client, target
        self.closed = False
        self.silent = False
        self.lock = threading.Lock()
        self.dirs = (_Direction(proxy, self, client, target), _Direction(proxy, self, target, client))

    def start(self):
        for d in self.dirs:
            threading.Thread(target=d.pump, daemon=True).start()

    def close(self):
        with self.lock:
            if self.closed:
                return
            self.closed = True
        self.proxy._forget(self)
        _reset(self.client)
        _reset(self.target)
        for d in self.dirs:
            with d.cv:
                d.cv.notify_all()


class FaultProxy:
    def __init__(self, target_port, port=0, delay_ms=0, cut_every_s=0.0, seed=None,
                 target_host="127.0.0.1", cut_mode="rst"):
        if target_host != "127.0.0.1":
            raise ValueError("faultproxy forwards to 127.0.0.1 only")
        self.target_port = target_port
        self.want_port = port
        self.delay_ms = delay_ms
        self.cut_every_s = cut_every_s
        if cut_mode not in ("rst", "silent"):
            raise ValueError("cut_mode: rst or silent")
        self.cut_mode = cut_mode
        self.rng = random.Random(seed)
        self.port = None
        self.cuts = 0           # connections cut so far
        self.accepted = 0
        self.stalled = False
        self.unstalled = threading.Event()
        self.unstalled.set()
        self._conns = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = None
        self._threads = []

    # ---- control (any thread) ----

    def start(self):
        ls = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.want_port))
        ls.listen(128)
        ls.settimeout(0.2)
        self._listener = ls
        self.port = ls.getsockname()[1]
        for fn in (self._accept_loop, self._cutter):
            t = threading.Thread(target=fn, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, timeout=5.0):
        self._stop.set()
        self.unstalled.set()
        for t in self._threads:
            t.join(timeout)
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            c.close()
        return self

    def set_stall(self, on):
        """Stops (True) or resumes (False) forwarding, in both directions."""
        self.stalled = bool(on)
        if on:
            self.unstalled.clear()
        else:
            self.unstalled.set()

    def set_delay(self, delay_ms):
        self.delay_ms = delay_ms  # read per chunk: takes effect at once

    def set_cut_every(self, seconds):
        self.cut_every_s = seconds

    def open_connections(self):
        with self._lock:
            return len(self._conns)

    # ---- threads ----

    def _forget(self, conn):
        with self._lock:
            self._conns.discard(conn)

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            self.accepted += 1
            client.settimeout(None)
            try:
                target = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                target.settimeout(None)
            except OSError:
                _reset(client)
                continue
            for s in (client, target):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = _Conn(self, client, target)
            with self._lock:
                self._conns.add(conn)
            conn.start()

    def _cutter(self):
        while not self._stop.is_set():
            if self.cut_every_s <= 0:
                self._stop.wait(0.1)
                continue
            if self._stop.wait(self.rng.expovariate(1.0 / self.cut_every_s)):
                return
            with self._lock:
                conns = sorted(self._conns, key=id)
            if conns:
                self.cuts += 1
                c = self.rng.choice(conns)
                if self.cut_mode == "silent":
                    c.silent = True
                    self._forget(c)  # not cut twice; closed when a peer closes
                else:
                    c.close()


def main():
    ap = argparse.ArgumentParser(description="Fault-injecting TCP proxy, 127.0.0.1 only "
                                             "(no netem on this kernel).")
    ap.add_argument("--target", type=int, required=True, help="port on 127.0.0.1 to forward to")
    ap.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    ap.add_argument("--delay-ms", type=float, default=0, help="delay each way, ms")
    ap.add_argument("--cut-every-s", type=float, default=0,
                    help="mean interval between random connection cuts, s (0: none)")
    ap.add_argument("--cut-mode", choices=("rst", "silent"), default="rst",
                    help="rst: reset both sides; silent: black-hole the connection")
    ap.add_argument("--stall-after-s", type=float, default=None,
                    help="stall (stop forwarding) this long after the start")
    ap.add_argument("--stall-for-s", type=float, default=1.0, help="how long a stall lasts")
    ap.add_argument("--duration", type=float, default=60.0,
                    help="exit after this many seconds (bounded by design)")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    p = FaultProxy(args.target, port=args.port, delay_ms=args.delay_ms,
                   cut_every_s=args.cut_every_s, seed=args.seed,
                   cut_mode=args.cut_mode).start()
    stop = threading.Event()
    toggled = [False]
    signal.signal(signal.SIGTERM, lambda s, f: stop.set())
    signal.signal(signal.SIGUSR1, lambda s, f: toggled.__setitem__(0, not toggled[0]))
    print("listening %d" % p.port, flush=True)
    t0 = time.monotonic()
    try:
        stalled = False
        while time.monotonic() - t0 < args.duration and not stop.is_set():
            el = time.monotonic() - t0
            want = toggled[0]
            if args.stall_after_s is not None:
                want = want or args.stall_after_s <= el < args.stall_after_s + args.stall_for_s
            if want != stalled:
                p.set_stall(want)
                stalled = want
            time.sleep(0.05)
    except KeyboardInterrupt:
        pass
    finally:
        p.stop()
        print("accepted %d cut %d" % (p.accepted, p.cuts), flush=True)


if __name__ == "__main__":
    sys.exit(main())
