"""Scaling the ingest tier out and in under load, as the README's runbook
("Scaling the ingest nodes during a show") does it: deploy/haproxy.cfg as
shipped (only its addresses moved to loopback), 3 memcached with
replicas=2, every answer with its own user.

  1. Two nodes run; the third server line of the shipped config is a slot
     with nothing listening (its checks keep it DOWN).
  2. Out, into the slot: a node started on the slot's address is marked UP
     by the checks alone and takes answers.
  3. Out, past the slots: a node added through the runtime API (`add
     server`, `enable health`, `enable server`) is UP and takes answers.
  4. In: SIGTERM to a slot node and to the added one; haproxy marks each
     DOWN before its listener closes (the drain it sees), each exits 0,
     and the added server is deleted (`set server ... state maint`, `del
     server`).

Meanwhile 4 clients send answers through haproxy, one request at a time
each. Every reply must be a 202, no client connection may fail, and the
published snapshot must hold exactly the acknowledged answers."""

import itertools
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import ltutil  # noqa: E402
from test_drain_haproxy import accepts, server_status  # noqa: E402
from test_drain_haproxy import haproxy_api as api  # noqa: E402


def wait_status(api_port, name, want, timeout=10.0):
    end = time.monotonic() + timeout
    st = None
    while time.monotonic() < end:
        st = server_status(api_port, name)
        if st == want:
            return st
        time.sleep(0.05)
    return st


class Fleet:
    def __init__(self, tmp, event_path, backend):
        self.tmp, self.event_path, self.backend = tmp, event_path, backend
        self.nodes = {}

    def start(self, name, port):
        self.nodes[name] = ltutil.Proc(
            [ltutil.binary("livetally-ingest"), "--event", self.event_path, "--backend",
             self.backend, "--listen", "127.0.0.1:%d" % port, "--threads", "1",
             "--drain-delay", "2", "--drain-timeout", "10"],
            port=port, log_name="ingest-scale-%s" % name)
        ltutil.wait_ready(port)
        return self.nodes[name]

    def acked(self, name):
        m = ltutil.metrics(self.nodes[name].port)
        return int(m.get("livetally_ingest_answers_acknowledged_total", 0))

    def stop(self):
        for n in self.nodes.values():
            n.stop()


def user_feed(ev, qid, seed, stop):
    rng = random.Random(seed)
    lock = threading.Lock()
    ids = itertools.count()

    def nxt():
        if stop.is_set():
            return None
        with lock:
            return ltutil.random_answer(rng, ev, qid, user="fan-%d-%d" % (seed, next(ids)))
    return nxt


def drain_out(chk, api_port, fleet, name):
    """SIGTERM: DOWN in haproxy before the listener closes, exit 0."""
    node = fleet.nodes[name]
    t0 = time.monotonic()
    node.signal(signal.SIGTERM)
    t_down = t_closed = None
    while time.monotonic() - t0 < 8 and (t_down is None or t_closed is None):
        now = time.monotonic() - t0
        if t_down is None and server_status(api_port, name) not in ("UP", None):
            t_down = now
        if t_closed is None and not accepts(node.port):
            t_closed = now
        time.sleep(0.01)
    rc = node.wait(20)
    print("scale in %s: DOWN at +%s s, listener closed at +%s s, exit %s" % (
        name, "%.2f" % t_down if t_down is not None else "never",
        "%.2f" % t_closed if t_closed is not None else "never", rc), flush=True)
    chk.true(t_down is not None and t_closed is not None and t_down < t_closed,
             "scale in %s: haproxy marked it DOWN before its listener closed" % name)
    chk.eq(rc, 0, "scale in %s: the node exits 0" % name)


def main():
    chk = ltutil.Checker("test_scale_haproxy")
    haproxy = shutil.which("haproxy") or ("/usr/sbin/haproxy"
                                          if os.path.exists("/usr/sbin/haproxy") else None)
    if haproxy is None:
        print("SKIP: haproxy is not installed (scripts/setup.sh installs it)")
        sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="lt-scale-")
    mems = [ltutil.memcached() for _ in range(3)]
    backend = "memcached://%s?replicas=2" % ",".join("127.0.0.1:%d" % m.port for m in mems)
    event_path, ev = ltutil.write_event(tmp, n_questions=1, name="lt-scale")
    fleet = Fleet(tmp, event_path, backend)
    ha = None
    senders = []
    stop = threading.Event()
    try:
        ports = {n: ltutil.free_port() for n in ("ingest1", "ingest2", "ingest3", "ingest4")}
        fleet.start("ingest1", ports["ingest1"])
        fleet.start("ingest2", ports["ingest2"])
        with open(os.path.join(ltutil.SRC, "deploy", "haproxy.cfg")) as f:
            text = f.read()
        hp, api_port, dash = ltutil.free_port(), ltutil.free_port(), ltutil.free_port()
        text = text.replace("bind :80", "bind 127.0.0.1:%d" % hp)
        text = text.replace("ipv4@127.0.0.1:9999", "ipv4@127.0.0.1:%d" % api_port)
        for i, addr in enumerate(("10.0.0.11:8080", "10.0.0.12:8080", "10.0.0.13:8080")):
            text = text.replace(addr, "127.0.0.1:%d" % ports["ingest%d" % (i + 1)])
        for addr in ("10.0.0.21:8081", "10.0.0.22:8081"):
            text = text.replace(addr, "127.0.0.1:%d" % dash)
        if "10.0.0." in text:
            raise RuntimeError("deploy/haproxy.cfg: an address this test does not know")
        conf = os.path.join(tmp, "haproxy.cfg")
        with open(conf, "w") as f:
            f.write(text)
        ha = ltutil.Proc([haproxy, "-db", "-f", conf], port=hp, log_name="haproxy-scale")
        for n in ("ingest1", "ingest2"):
            chk.eq(wait_status(api_port, n, "UP"), "UP", "%s UP by its checks" % n)
        chk.true(server_status(api_port, "ingest3") not in ("UP", None),
                 "the empty slot ingest3 is not UP (%s)" % server_status(api_port, "ingest3"))

        senders = [ltutil.AnswerSender(hp, user_feed(ev, 1, 900 + i, stop), conns=1, depth=1)
                   for i in range(4)]
        for s in senders:
            s.start()
        time.sleep(1.0)

        # out, into the slot
        fleet.start("ingest3", ports["ingest3"])
        chk.eq(wait_status(api_port, "ingest3", "UP"), "UP", "scale out: ingest3 UP in its slot")
        time.sleep(1.5)
        chk.true(fleet.acked("ingest3") > 0,
                 "scale out: ingest3 takes answers (%d)" % fleet.acked("ingest3"))

        # out, past the slots
        fleet.start("ingest4", ports["ingest4"])
        reply = api(api_port, "add server ingest/ingest4 127.0.0.1:%d check inter 500ms fall 2 "
                              "rise 2 maxconn 20000" % ports["ingest4"])
        chk.true("registered" in reply, "add server ingest/ingest4: %r" % reply)
        api(api_port, "enable health ingest/ingest4")
        api(api_port, "enable server ingest/ingest4")
        chk.eq(wait_status(api_port, "ingest4", "UP"), "UP", "scale out: ingest4 UP once added")
        time.sleep(1.5)
        chk.true(fleet.acked("ingest4") > 0,
                 "scale out: ingest4 takes answers (%d)" % fleet.acked("ingest4"))

        # in
        drain_out(chk, api_port, fleet, "ingest1")
        drain_out(chk, api_port, fleet, "ingest4")
        api(api_port, "set server ingest/ingest4 state maint")
        reply = api(api_port, "del server ingest/ingest4")
        chk.true("deleted" in reply, "del server ingest/ingest4: %r" % reply)
        time.sleep(0.5)
        stop.set()
        for s in senders:
            s.join(30)

        outs, kinds, errors = ltutil.sender_outcomes(senders)
        print("replies %s; connect errors %d" % (dict(kinds), len(errors)), flush=True)
        chk.eq(dict(kinds), {"202": len(outs)}, "every answer a 202")
        chk.eq(errors, [], "no client connection failed")
        tally = ltutil.AnswerTally(ev)
        for o in outs:
            if o.status == 202:
                tally.add(o.a)
        chk.true(tally.n > 0, "answers acknowledged (%d)" % tally.n)
        rc, out = ltutil.aggregate_once(event_path, backend)
        chk.eq(rc, 0, "livetally-aggregate --once: %s" % out[-300:])
        snap = ltutil.read_snapshot([m.port for m in mems], ev)
        chk.true(snap is not None, "a snapshot is published")
        if snap is not None:
            ltutil.compare_summaries(chk, ltutil.snapshot_summary(snap), tally.summary(),
                                     "snapshot after scaling out and in")
    finally:
        stop.set()
        for s in senders:
            s.join(30)
        if ha is not None:
            ha.stop()
        fleet.stop()
        for m in mems:
            m.stop()
        if chk.failed and ha is not None:
            print(ha.output()[-2000:])
        shutil.rmtree(tmp, ignore_errors=True)
    chk.finish()


if __name__ == "__main__":
    main()
