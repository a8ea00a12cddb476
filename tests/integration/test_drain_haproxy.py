"""A drain the load balancer sees: two livetally-ingest behind a real haproxy.

haproxy checks GET /healthz every 100 ms (fall 2) and retries nothing
(retries 0, no retry-on): a request it sends to a node that has closed its
listener fails, so a drain only it cannot see costs requests. One node gets
SIGTERM while a client sends answers through haproxy: haproxy must mark it
DOWN (its runtime socket, `show stat`) before the node stops accepting
connections (polled with connect()), every answer must be a 202, the node
must exit 0, and the store must hold exactly the acknowledged answers.
Then the same with --drain-delay 0, where the node closes its listener at
the signal: the test shows the order the other way round, so it would see
the difference.
"""

import os
import random
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import ltutil  # noqa: E402

DRAIN_DELAY_S = 1


def haproxy_conf(tmp, port, sock, servers):
    lines = [
        "global",
        "    maxconn 2000",
        "    stats socket %s mode 600 level admin" % sock,
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 15s",
        "    timeout server 15s",
        "    option http-keep-alive",
        "    retries 0",
        "frontend answers",
        "    bind 127.0.0.1:%d" % port,
        "    default_backend ingest",
        "backend ingest",
        "    balance roundrobin",
        "    option httpchk GET /healthz",
        "    http-check expect status 200",
        "    default-server inter 100ms fall 2 rise 1",
    ]
    for name, p in servers:
        lines.append("    server %s 127.0.0.1:%d check" % (name, p))
    path = os.path.join(tmp, "haproxy.cfg")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def haproxy_api(sock, command):
    """One command on haproxy's runtime API, its reply; sock: a unix socket
    path, or a TCP port on 127.0.0.1."""
    if isinstance(sock, int):
        s = socket.create_connection(("127.0.0.1", sock), timeout=5)
    else:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(sock)
    s.sendall(command.encode() + b"\n")
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    return data.decode(errors="replace").strip()


def server_status(sock, name, backend="ingest"):
    """The server's status in haproxy's `show stat`."""
    for line in haproxy_api(sock, "show stat").splitlines():
        f = line.split(",")
        if len(f) > 17 and f[0] == backend and f[1] == name:
            return f[17]
    return None


def accepts(port):
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def scenario(chk, tmp, mem, delay_s):
    what = "drain-delay %d" % delay_s
    event_path, ev = ltutil.write_event(tmp, n_questions=1, name="lt-haproxy-%d" % delay_s)
    backend = "memcached://127.0.0.1:%d?timeout_ms=5000" % mem.port
    nodes = []
    for i in range(2):
        p = ltutil.free_port()
        nodes.append(ltutil.Proc([ltutil.binary("livetally-ingest"), "--event", event_path,
                                  "--backend", backend, "--listen", "127.0.0.1:%d" % p,
                                  "--threads", "1", "--drain-delay", str(delay_s),
                                  "--drain-timeout", "10"], port=p,
                                 log_name="ingest-haproxy-%d" % i))
        ltutil.wait_ready(p)
    hp = ltutil.free_port()
    sock = os.path.join(tmp, "haproxy-%d.sock" % delay_s)
    conf = haproxy_conf(tmp, hp, sock, [("a", nodes[0].port), ("b", nodes[1].port)])
    ha = ltutil.Proc([shutil.which("haproxy"), "-db", "-f", conf], port=hp, log_name="haproxy")
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
                os.path.exists(sock) and server_status(sock, "a") == "UP" and
                server_status(sock, "b") == "UP"):
            time.sleep(0.05)
        chk.eq((server_status(sock, "a"), server_status(sock, "b")), ("UP", "UP"),
               "%s: both nodes UP in haproxy" % what)

        stop = threading.Event()
        senders = [ltutil.AnswerSender(hp, ltutil.endless_feed(ev, 1, 700 + i, stop), conns=1,
                                       depth=1) for i in range(4)]
        for s in senders:
            s.start()
        time.sleep(0.5)
        victim = nodes[0]
        t_term = time.monotonic()
        victim.signal(signal.SIGTERM)
        t_down = t_closed = None
        while time.monotonic() - t_term < delay_s + 5 and (t_down is None or t_closed is None):
            now = time.monotonic() - t_term
            if t_down is None and server_status(sock, "a") not in ("UP", None):
                t_down = now
            if t_closed is None and not accepts(victim.port):
                t_closed = now
            time.sleep(0.01)
        try:
            rc = victim.wait(15)
        except Exception:
            rc = None
        time.sleep(0.3)  # answers go on through the other node
        stop.set()
        for s in senders:
            s.join(30)
        outs, kinds, errors = ltutil.sender_outcomes(senders)
        print("%s: haproxy marked the node DOWN at +%s s, it stopped accepting at +%s s, "
              "exit %s; replies %s; connect errors %d" %
              (what, "%.2f" % t_down if t_down is not None else "never",
               "%.2f" % t_closed if t_closed is not None else "never", rc, dict(kinds),
               len(errors)), flush=True)
        chk.eq(rc, 0, "%s: the node exits 0" % what)
        order_ok = t_down is not None and t_closed is not None and t_down < t_closed
        if delay_s > 0:
            chk.true(order_ok, "%s: marked DOWN before the listener closed" % what)
            chk.eq(dict(kinds), {"202": len(outs)}, "%s: every answer a 202" % what)
            chk.eq(errors, [], "%s: no client connection failed" % what)
        else:
            # The order this test tells apart: no delay, the listener closes
            # with the signal, before any check can see it.
            chk.true(not order_ok, "%s: the listener closed before haproxy knew" % what)
        tally = ltutil.AnswerTally(ev)
        for o in outs:
            if o.status == 202:
                tally.add(o.a)
        chk.true(tally.n > 0, "%s: answers acknowledged (%d)" % (what, tally.n))
        got, anomalies = ltutil.counter_summary(ev, ltutil.store_counters([mem.port], ev))
        chk.eq(anomalies, [], "%s: no stray counter keys" % what)
        ltutil.compare_summaries(chk, got, tally.summary(), "%s: store" % what)
    finally:
        ha.stop()
        for n in nodes:
            n.stop()
        if chk.failed:
            print(nodes[0].output()[-2000:])
            print(ha.output()[-2000:])


def shipped_config(chk, tmp, mem):
    """deploy/haproxy.cfg as shipped, only its addresses moved to loopback:
    it starts (no limit it cannot meet), its checks see the nodes, its
    runtime API answers, and an answer goes through."""
    event_path, ev = ltutil.write_event(tmp, n_questions=1, name="lt-haproxy-shipped")
    backend = "memcached://127.0.0.1:%d" % mem.port
    nodes = []
    for i in range(2):
        p = ltutil.free_port()
        nodes.append(ltutil.Proc([ltutil.binary("livetally-ingest"), "--event", event_path,
                                  "--backend", backend, "--listen", "127.0.0.1:%d" % p,
                                  "--threads", "1"], port=p, log_name="ingest-shipped-%d" % i))
        ltutil.wait_ready(p)
    with open(os.path.join(ltutil.SRC, "deploy", "haproxy.cfg")) as f:
        text = f.read()
    hp, api, closed = ltutil.free_port(), ltutil.free_port(), ltutil.free_port()
    text = text.replace("bind :80", "bind 127.0.0.1:%d" % hp)
    text = text.replace("ipv4@127.0.0.1:9999", "ipv4@127.0.0.1:%d" % api)
    text = text.replace("10.0.0.11:8080", "127.0.0.1:%d" % nodes[0].port)
    text = text.replace("10.0.0.12:8080", "127.0.0.1:%d" % nodes[1].port)
    for addr in ("10.0.0.13:8080", "10.0.0.21:8081", "10.0.0.22:8081"):
        text = text.replace(addr, "127.0.0.1:%d" % closed)
    chk.true("127.0.0.1:%d" % hp in text and "127.0.0.1:%d" % api in text,
             "shipped haproxy.cfg: its addresses found where the test expects them")
    conf = os.path.join(tmp, "haproxy-shipped.cfg")
    with open(conf, "w") as f:
        f.write(text)
    ha = ltutil.Proc([shutil.which("haproxy"), "-db", "-f", conf], port=hp,
                     log_name="haproxy-shipped")
    try:
        deadline = time.monotonic() + 10
        states = None
        while time.monotonic() < deadline:
            states = (server_status(api, "ingest1"), server_status(api, "ingest2"))
            if states == ("UP", "UP"):
                break
            time.sleep(0.1)
        chk.eq(states, ("UP", "UP"), "shipped haproxy.cfg: both nodes UP by their checks")
        c = ltutil.RawConn(hp)
        c.send(ltutil.answer_bytes(ltutil.random_answer(random.Random(3), ev, 1)))
        chk.eq(c.response()[0], 202, "shipped haproxy.cfg: an answer through it gets its 202")
        c.close()
    finally:
        ha.stop()
        for n in nodes:
            n.stop()
        if chk.failed:
            print(ha.output()[-2000:])


def main():
    chk = ltutil.Checker("test_drain_haproxy")
    if shutil.which("haproxy") is None:
        print("SKIP: haproxy is not installed (scripts/setup.sh installs it)")
        sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="lt-drain-haproxy-")
    mem = ltutil.memcached()
    try:
        shipped_config(chk, tmp, mem)
    finally:
        mem.stop()
    for delay in (DRAIN_DELAY_S, 0):
        mem = ltutil.memcached()
        try:
            scenario(chk, tmp, mem, delay)
        finally:
            mem.stop()
    chk.finish()


if __name__ == "__main__":
    main()
