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
               both sides (RST, as a middlebox that drops its state does).
  stall        toggled at run time (set_stall): nothing is forwarded (bytes
               are held, in order) until it is cleared; connections stay
               open, so the peer sees a silent node, not a closed one.

From a test:
    p = FaultProxy(target_port, delay_ms=20).start()   # p.port listens
    ...; p.set_stall(True); ...; p.stop()
From a shell (bounded: --duration):
    faultproxy.py --target 11211 --port 0 --delay-ms 20 --duration 60
prints "listening PORT" on stdout once it accepts connections.

Standard library only (asyncio in a thread of its own).
"""

import argparse
import asyncio
import random
import socket
import struct
import sys
import threading
import time

CHUNK = 65536


class FaultProxy:
    def __init__(self, target_port, port=0, delay_ms=0, cut_every_s=0.0, seed=None,
                 target_host="127.0.0.1"):
        if target_host != "127.0.0.1":
            raise ValueError("faultproxy forwards to 127.0.0.1 only")
        self.target_port = target_port
        self.want_port = port
        self.delay_ms = delay_ms
        self.cut_every_s = cut_every_s
        self.rng = random.Random(seed)
        self.port = None
        self.cuts = 0           # connections cut so far
        self.accepted = 0
        self._stall = False
        self._loop = None
        self._thread = None
        self._server = None
        self._conns = set()     # (client writer, target writer) pairs open now
        self._unstall = None    # asyncio.Event, set while not stalled
        self._ready = threading.Event()
        self._error = None

    # ---- control (any thread) ----

    def start(self, timeout=5.0):
        self._thread = threading.Thread(target=self._run, name="faultproxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._error is not None:
            raise RuntimeError("faultproxy did not start: %s" % self._error)
        return self

    def stop(self, timeout=5.0):
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._shutdown)
            self._thread.join(timeout)
        return self

    def set_stall(self, on):
        """Stops (True) or resumes (False) forwarding, in both directions."""
        self._loop.call_soon_threadsafe(self._set_stall, bool(on))

    def set_delay(self, delay_ms):
        self.delay_ms = delay_ms  # read per chunk: takes effect at once

    def set_cut_every(self, seconds):
        self.cut_every_s = seconds

    def open_connections(self):
        return len(self._conns)

    # ---- the loop ----

    def _run(self):
        self._loop = asyncio.new_event_loop()
        try:
            self._loop.run_until_complete(self._main())
        except Exception as e:  # reported to start()
            self._error = e
            self._ready.set()
        finally:
            self._loop.close()

    async def _main(self):
        self._unstall = asyncio.Event()
        self._set_stall(self._stall)
        self._done = asyncio.Event()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.want_port,
                                                  reuse_address=True)
        self.port = self._server.sockets[0].getsockname()[1]
        cutter = asyncio.ensure_future(self._cutter())
        self._ready.set()
        await self._done.wait()
        cutter.cancel()
        self._server.close()
        await self._server.wait_closed()
        for pair in list(self._conns):
            self._reset(pair)
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in rest:
            t.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def _shutdown(self):
        self._done.set()

    def _set_stall(self, on):
        self._stall = on
        if on:
            self._unstall.clear()
        else:
            self._unstall.set()

    async def _accept(self, creader, cwriter):
        self.accepted += 1
        try:
            treader, twriter = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            self._abort(cwriter)
            return
        for w in (cwriter, twriter):
            s = w.get_extra_info("socket")
            if s is not None:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pair = (cwriter, twriter)
        self._conns.add(pair)
        try:
            await asyncio.gather(self._pipe(creader, twriter, pair),
                                 self._pipe(treader, cwriter, pair))
        except asyncio.CancelledError:
            pass  # stop(): asyncio's stream callback would log a cancelled handler
        finally:
            self._reset(pair)

    async def _pipe(self, reader, writer, pair):
        """reader -> writer, each chunk delay_ms after it was read."""
        q = asyncio.Queue()

        async def send():
            while True:
                due, data = await q.get()
                if data is None:
                    break
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                await self._unstall.wait()
                if pair not in self._conns:
                    return
                writer.write(data)
                await writer.drain()
            if pair in self._conns:
                try:
                    writer.write_eof()  # a half close passes through
                except OSError:
                    pass

        sender = asyncio.ensure_future(send())
        try:
            while pair in self._conns:
                data = await reader.read(CHUNK)
                q.put_nowait((time.monotonic() + self.delay_ms / 1000.0, data or None))
                if not data:
                    break
            await sender
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            sender.cancel()

    async def _cutter(self):
        while True:
            if self.cut_every_s <= 0:
                await asyncio.sleep(0.1)
                continue
            await asyncio.sleep(self.rng.expovariate(1.0 / self.cut_every_s))
            if self._conns:
                pair = self.rng.choice(sorted(self._conns, key=id))
                self.cuts += 1
                self._reset(pair)

    @staticmethod
    def _abort(writer):
        s = writer.get_extra_info("socket")
        try:
            if s is not None:  # RST, not FIN: the state is gone, as behind a middlebox
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        writer.transport.abort()

    def _reset(self, pair):
        if pair not in self._conns:
            return
        self._conns.discard(pair)
        for w in pair:
            self._abort(w)


def main():
    ap = argparse.ArgumentParser(description="Fault-injecting TCP proxy, 127.0.0.1 only "
                                             "(no netem on this kernel).")
    ap.add_argument("--target", type=int, required=True, help="port on 127.0.0.1 to forward to")
    ap.add_argument("--port", type=int, default=0, help="port to listen on (0: a free one)")
    ap.add_argument("--delay-ms", type=float, default=0, help="delay each way, ms")
    ap.add_argument("--cut-every-s", type=float, default=0,
                    help="mean interval between random connection cuts, s (0: none)")
    ap.add_argument("--stall-after-s", type=float, default=None,
                    help="stall (stop forwarding) this long after the start")
    ap.add_argument("--stall-for-s", type=float, default=1.0, help="how long a stall lasts")
    ap.add_argument("--duration", type=float, default=60.0,
                    help="exit after this many seconds (bounded by design)")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    p = FaultProxy(args.target, port=args.port, delay_ms=args.delay_ms,
                   cut_every_s=args.cut_every_s, seed=args.seed).start()
    print("listening %d" % p.port, flush=True)
    t0 = time.monotonic()
    try:
        stalled = False
        while time.monotonic() - t0 < args.duration:
            el = time.monotonic() - t0
            if args.stall_after_s is not None:
                want = args.stall_after_s <= el < args.stall_after_s + args.stall_for_s
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
