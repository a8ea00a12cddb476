"""livetally-ingest at its file descriptor limit.

The ingest runs under a hard limit of 64 descriptors (prlimit), and idle
clients take them all. accept() then fails with EMFILE: the listener must
pause (not retry at once in a loop, logging every failure), so over 3 s at
the limit the process spends little CPU and writes a handful of lines; once
the clients go, new connections are accepted again and answers counted.
"""

import os
import random
import socket
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import ltutil  # noqa: E402

LIMIT = 64
HOLD_S = 3.0


def cpu_s(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    chk = ltutil.Checker("test_fd_limit")
    ltutil.raise_nofile(4096)
    tmp = tempfile.mkdtemp(prefix="lt-fd-limit-")
    event_path, ev = ltutil.write_event(tmp, n_questions=1, name="lt-fd-limit")
    mem = ltutil.memcached()
    ip = ltutil.free_port()
    ing = ltutil.Proc(["prlimit", "--nofile=%d:%d" % (LIMIT, LIMIT), "--",
                       ltutil.binary("livetally-ingest"), "--event", event_path, "--backend",
                       "memcached://127.0.0.1:%d" % mem.port, "--listen", "127.0.0.1:%d" % ip,
                       "--threads", "1", "--http-timeout", "30", "--drain-delay", "0"],
                      port=ip, log_name="ingest-fd-limit")
    held = []
    try:
        ltutil.wait_ready(ip)
        # More idle clients than the process has descriptors: the kernel
        # completes the handshakes (backlog), the process cannot accept them.
        for _ in range(3 * LIMIT):
            s = socket.socket()
            s.settimeout(2)
            try:
                s.connect(("127.0.0.1", ip))
            except OSError:
                s.close()
                break
            held.append(s)
        time.sleep(0.5)  # the accept failures begin
        log0 = ing.output().count("accept failed")
        c0, t0 = cpu_s(ing.pid), time.monotonic()
        time.sleep(HOLD_S)
        used = cpu_s(ing.pid) - c0
        wall = time.monotonic() - t0
        lines = ing.output().count("accept failed") - log0
        print("at the limit for %.1f s with %d clients holding connections: %.2f s of CPU, "
              "%d log lines about accept" % (wall, len(held), used, lines), flush=True)
        chk.true(len(held) > LIMIT, "more clients connected than the limit (%d)" % len(held))
        chk.true(used < 0.3 * wall, "no busy loop at the limit: %.2f s CPU in %.1f s" %
                 (used, wall))
        chk.true(lines <= HOLD_S + 2, "at most a line a second about it (%d)" % lines)
        chk.true(ing.p.poll() is None, "the ingest still runs")

        for s in held:
            s.close()
        held = []
        status = None
        deadline = time.monotonic() + 10
        a = ltutil.random_answer(random.Random(5), ev, 1)
        while time.monotonic() < deadline and status != 202:
            try:
                c = ltutil.RawConn(ip, timeout=2)
                c.send(ltutil.answer_bytes(a))
                status = c.response()[0]
                c.close()
            except (OSError, ltutil.Closed):
                time.sleep(0.2)
        chk.eq(status, 202, "once the clients are gone, a new connection's answer is a 202")
    finally:
        for s in held:
            s.close()
        rc = ing.stop()
        if chk.failed:
            print(ing.output()[-2000:])
        mem.stop()
    chk.eq(rc, 0, "the ingest exits 0 on SIGTERM")
    chk.finish()


if __name__ == "__main__":
    main()
