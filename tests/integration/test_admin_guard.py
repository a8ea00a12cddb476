"""Admin token guesses are slowed per client address (README, "Admin").

Clients on different loopback addresses (127.0.0.x: every one is the
loopback here) against one livetally-ingest with a token:
1. 127.0.0.2 sends 5 wrong tokens (401), the 6th (401) locks it out: then
   even the right token is 429 too_many_attempts with Retry-After 1, the
   question stays closed, and the refusals are counted and logged with the
   client, never the token.
2. Another address is not slowed: the right token from 127.0.0.3 is 204.
3. After Retry-After the right token from 127.0.0.2 is 204 and forgets its
   failures: 5 more wrong ones are plain 401s.
4. A trusted proxy (--trusted-proxy 127.0.0.9): the last X-Forwarded-For
   names the client. The guesser behind it is locked out, another client
   behind the same proxy is not, and a forged first element does not help.
   An untrusted peer's X-Forwarded-For is ignored: rotating it, the peer is
   locked out all the same.
5. The fast path (admin requests after an answer on one keep-alive
   connection) is slowed alike.
6. Through a real haproxy with `option forwardfor` (deploy/haproxy.cfg):
   the guesser behind it is locked out, the operator's own request through
   the same haproxy from another address opens the question.
7. --trusted-proxy with a bad value: exit 2 with one clear line.
"""

import os
import shutil
import subprocess
import sys
import random
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import ltutil  # noqa: E402
from test_drain_haproxy import haproxy_conf  # noqa: E402

PROXY = "127.0.0.9"


def request(port, src, method, path, token=None, xff=None, body=b"", prefix=b""):
    """One request from source address src (after the request prefix, if
    any, on the same connection); (status, headers dict, body)."""
    headers = ["%s %s HTTP/1.1" % (method, path), "Host: x", "Connection: close",
               "Content-Length: %d" % len(body)]
    if token is not None:
        headers.append("Authorization: Bearer %s" % token)
    for v in (xff or []):
        headers.append("X-Forwarded-For: %s" % v)  # repeated headers: no dict
    c = ltutil.RawConn(port, src=src)
    try:
        c.send(prefix + ("\r\n".join(headers) + "\r\n\r\n").encode() + body)
        if prefix:
            c.response()
        return c.response()
    finally:
        c.close()


def admin(port, src, token, action="open", qid=1, xff=None, prefix=b""):
    return request(port, src, "POST", "/v1/admin/questions/%d/%s" % (qid, action), token, xff,
                   prefix=prefix)


def lock_out(chk, port, src, label, xff_of=lambda i: None, prefix=b""):
    codes = [admin(port, src, "guess-%d" % i, xff=xff_of(i), prefix=prefix)[0]
             for i in range(6)]
    chk.eq(codes, [401] * 6, "%s: six wrong tokens, 401 each" % label)


def main():
    chk = ltutil.Checker("test_admin_guard")
    tmp = tempfile.mkdtemp(prefix="lt-guard-")
    event_path, ev = ltutil.write_event(tmp, n_questions=3, name="lt-guard", open_all=False)
    token_path, token = ltutil.write_token(tmp)
    mem = ltutil.memcached()
    procs = []
    try:
        port = ltutil.free_port()
        ing = ltutil.Proc([ltutil.binary("livetally-ingest"), "--event", event_path,
                           "--backend", "memcached://127.0.0.1:%d" % mem.port, "--listen",
                           "127.0.0.1:%d" % port, "--threads", "2", "--admin-token-file",
                           token_path, "--trusted-proxy", "%s,::1" % PROXY,
                           "--drain-delay", "0"], port=port, log_name="ingest-guard")
        procs.append(ing)
        ltutil.wait_ready(port)

        # 1. locked out after the free failures, the right token too
        lock_out(chk, port, "127.0.0.2", "127.0.0.2")
        st, hdrs, body = admin(port, "127.0.0.2", token)
        chk.eq((st, hdrs.get("retry-after")), (429, "1"),
               "locked out: the right token is 429 with Retry-After 1")
        chk.true(b"too_many_attempts" in body, "429's body says too_many_attempts")
        a = ltutil.random_answer(random.Random(3), ev, 1)
        c = ltutil.RawConn(port)
        c.send(ltutil.answer_bytes(a))
        r = c.response()
        c.close()
        chk.eq(r[0], 409, "the locked-out open did not open question 1")
        m = ltutil.wait_metrics(port, lambda m: m.get("livetally_ingest_admin_throttled_total") == 1)
        chk.eq((m.get("livetally_ingest_admin_refused_total"),
                m.get("livetally_ingest_admin_throttled_total"),
                m.get('livetally_ingest_requests_total{code="429"}')), (6.0, 1.0, 1.0),
               "refusals and the throttled request counted")
        log = ing.output()
        chk.true("client=127.0.0.2" in log and "guess-" not in log and token not in log,
                 "refusals logged with the client, never a token")

        # 2. another address is not slowed
        chk.eq(admin(port, "127.0.0.3", token, "open", qid=1)[0], 204, "127.0.0.3: 204")

        # 3. the lock ends; the right token forgets the failures
        time.sleep(1.1)
        chk.eq(admin(port, "127.0.0.2", token, "close", qid=1)[0], 204, "after Retry-After: 204")
        codes = [admin(port, "127.0.0.2", "again-%d" % i)[0] for i in range(5)]
        chk.eq(codes, [401] * 5, "failures forgotten: five plain 401s")
        chk.eq(admin(port, "127.0.0.2", token, "open", qid=2)[0], 204,
               "still among the free failures: 204")

        # 4. a trusted proxy names its clients; an untrusted peer does not
        lock_out(chk, port, PROXY, "behind the proxy", lambda i: ["10.9.9.9"])
        chk.eq(admin(port, PROXY, token, xff=["10.9.9.9"])[0], 429,
               "the guesser behind the trusted proxy: 429")
        chk.eq(admin(port, PROXY, token, "close", qid=2, xff=["10.9.9.8"])[0], 204,
               "another client behind the same proxy: 204")
        chk.eq(admin(port, PROXY, token, xff=["10.9.9.8", "10.9.9.9"])[0], 429,
               "a forged earlier X-Forwarded-For: still the proxy's (the last) counts")
        chk.eq(admin(port, PROXY, token, xff=["10.9.9.8, 10.9.9.9"])[0], 429,
               "a forged earlier element in one header: still the last counts")
        lock_out(chk, port, "127.0.0.4", "untrusted peer", lambda i: ["10.7.0.%d" % i])
        chk.eq(admin(port, "127.0.0.4", token, xff=["10.7.0.99"])[0], 429,
               "an untrusted peer's X-Forwarded-For is ignored: 429")

        # 5. the fast path: admin after an answer on the same connection
        rng = random.Random(5)
        prefix = ltutil.answer_bytes(ltutil.random_answer(rng, ev, 2), keep_alive=True)
        lock_out(chk, port, "127.0.0.5", "fast path", prefix=prefix)
        chk.eq(admin(port, "127.0.0.5", token, "close", prefix=prefix)[0], 429,
               "fast path: locked out alike")

        # 6. a real haproxy with option forwardfor in front
        if shutil.which("haproxy") is None:
            chk.true(os.environ.get("CI") != "true", "haproxy installed (CI installs it)")
            print("skipping the haproxy part: haproxy not installed", flush=True)
        else:
            hport = ltutil.free_port()
            sock = os.path.join(tmp, "haproxy.sock")
            with open(os.path.join(ltutil.SRC, "deploy", "haproxy.cfg")) as f:
                chk.true("option forwardfor" in f.read(),
                         "deploy/haproxy.cfg sends X-Forwarded-For")
            ing2_port = ltutil.free_port()
            ing2 = ltutil.Proc([ltutil.binary("livetally-ingest"), "--event", event_path,
                                "--backend", "memcached://127.0.0.1:%d" % mem.port, "--listen",
                                "127.0.0.1:%d" % ing2_port, "--threads", "2",
                                "--admin-token-file", token_path, "--trusted-proxy",
                                "127.0.0.1", "--drain-delay", "0"], port=ing2_port,
                               log_name="ingest-guard-2")
            procs.append(ing2)
            ltutil.wait_ready(ing2_port)
            cfg = haproxy_conf(tmp, hport, sock, [("ingest1", ing2_port)])
            with open(cfg) as f:
                text = f.read().replace("    mode http\n", "    mode http\n    option forwardfor\n")
            with open(cfg, "w") as f:
                f.write(text)
            hap = ltutil.Proc(["haproxy", "-f", cfg, "-db"], port=hport, log_name="haproxy")
            procs.append(hap)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    if request(hport, "127.0.0.1", "GET", "/healthz")[0] == 200:
                        break
                except OSError:
                    pass
                time.sleep(0.1)
            lock_out(chk, hport, "127.0.0.6", "through haproxy")
            chk.eq(admin(hport, "127.0.0.6", token, qid=3)[0], 429,
                   "the guesser behind haproxy: 429")
            chk.eq(admin(hport, "127.0.0.7", token, qid=3)[0], 204,
                   "the operator through the same haproxy: 204")
            chk.eq(admin(hport, "127.0.0.7", token, "close", qid=3)[0], 204,
                   "and closes it: 204")

        # 7. a bad --trusted-proxy
        for binary in ("livetally-ingest", "livetally"):
            out = subprocess.run([ltutil.binary(binary), "--event", event_path, "--backend",
                                  "memcached://127.0.0.1:%d" % mem.port, "--trusted-proxy",
                                  "haproxy.local"], stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, timeout=10,
                                 stdin=subprocess.DEVNULL)
            chk.eq(out.returncode, 2, "%s --trusted-proxy haproxy.local: exit 2" % binary)
            chk.true("haproxy.local" in out.stdout and "numeric" in out.stdout,
                     "%s: the message names the value: %s" % (binary, out.stdout.strip()))
    finally:
        for p in reversed(procs):
            p.stop()
        mem.stop()
    return chk.finish()


if __name__ == "__main__":
    sys.exit(main())
