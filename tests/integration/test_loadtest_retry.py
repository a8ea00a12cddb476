"""livetally-loadtest --retry through faults (issue 14: "it never retries: an
answer that met a 503 or a dropped connection is an error, while the phone
app retries with the same user id; so a run through faults can't say every
fan's answer was counted exactly once").

An ingest on memcached, its aggregator and dashboard; the load tester
sends through faultproxy.py, which delays each way by 20 ms and resets a
connection every ~0.3 s (a reply in flight is lost after the ingest
counted its answer: about half the cut tries), and the ingest is
killed with SIGKILL and restarted on its port mid-run:
  - with --retry --users (every answer has a user): exit 0, no error,
    --verify passes (exactly for the 202s, within the bound of the answers
    a retry found counted after a lost try), and tries were sent again;
  - the same run without --retry ends with errors (the faults did bite):
    the pass above is the retries' doing;
  - the summary and the JSON say how many tries were sent again and how
    many answers were counted by an earlier try."""

import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import ltutil  # noqa: E402

chk = ltutil.Checker("test_loadtest_retry")
PROXY = os.path.join(os.path.dirname(__file__), "faultproxy.py")


def ingest_proc(event_path, backend, port, token_path, name):
    return ltutil.Proc([ltutil.binary("livetally-ingest"), "--event", event_path, "--backend",
                        backend, "--listen", "127.0.0.1:%d" % port, "--admin-token-file",
                        token_path, "--drain-delay", "0"], port=port, log_name=name)


def start_proxy(target):
    p = subprocess.Popen([sys.executable, PROXY, "--target", str(target), "--port", "0",
                          "--cut-every-s", "0.3", "--delay-ms", "20", "--duration", "120"],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = p.stdout.readline()
    if not line.startswith("listening "):
        p.kill()
        raise RuntimeError("faultproxy: %r" % line)
    return p, int(line.split()[1])


def run(tmp, name, retry):
    mc = ltutil.memcached()
    backend = "memcached://127.0.0.1:%d" % mc.port
    event_path, ev = ltutil.write_event(tmp, n_questions=2, name=name)
    token_path, _ = ltutil.write_token(tmp)
    ip, ap, dp = (ltutil.free_port() for _ in range(3))
    ing = ingest_proc(event_path, backend, ip, token_path, name + "-ingest")
    agg = ltutil.Proc([ltutil.binary("livetally-aggregate"), "--event", event_path, "--backend",
                       backend, "--interval", "200"], log_name=name + "-agg")
    dash = ltutil.Proc([ltutil.binary("livetally-dashboard"), "--event", event_path,
                        "--backend", backend, "--listen", "127.0.0.1:%d" % dp,
                        "--interval", "200"], port=dp, log_name=name + "-dash")
    proxy, pp = start_proxy(ip)
    out_json = os.path.join(tmp, name + ".json")
    args = [ltutil.binary("livetally-loadtest"), "--event", event_path,
            "--target", "http://127.0.0.1:%d" % pp, "--rate", "300", "--duration", "8s",
            "--users", "100000", "--connections", "32", "--timeout", "2s",
            "--verify", "http://127.0.0.1:%d" % dp, "--verify-timeout", "20s",
            "--json", out_json, "--no-progress", "--seed", "14"]
    if retry:
        args.append("--retry")
    lt = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    reader = threading.Thread(target=lambda: out.append(lt.stdout.read()), daemon=True)
    reader.start()
    time.sleep(3.0)
    ing.signal(signal.SIGKILL)
    ing.wait(10)
    ing.stop()
    time.sleep(0.8)
    ing = ingest_proc(event_path, backend, ip, token_path, name + "-ingest2")
    try:
        rc = lt.wait(120)
    except subprocess.TimeoutExpired:
        lt.kill()
        rc = lt.wait()
    reader.join(10)
    text = out[0] if out else ""
    print(text)
    try:
        with open(out_json) as f:
            res = json.load(f)
    except (OSError, ValueError):
        res = {}
    proxy.send_signal(signal.SIGTERM)
    proxy.wait(10)
    proxy.stdout.close()
    for p in (dash, agg, ing):
        p.stop()
    mc.stop()
    return rc, text, res


def main():
    with tempfile.TemporaryDirectory(prefix="lt-retry-") as tmp:
        rc, text, res = run(tmp, "lt-retry", retry=True)
        chk.eq(rc, 0, "--retry through resets and an ingest killed: exit 0")
        chk.true("verify         passed" in text, "--verify passes exactly")
        chk.eq(res.get("errors", {}).get("total") if isinstance(res.get("errors"), dict)
               else res.get("errors"), 0, "no answer ends in error")
        chk.true(res.get("retries", 0) > 0, "tries were sent again (%s)" % res.get("retries"))
        # How many retries meet a 409 (a cut that lost a reply after the
        # ingest counted) is chance: 2-7 in most runs, 0 in one CI run; so
        # it is reported, and bounded below, not required.
        print("counted earlier: %s" % res.get("counted_earlier"), flush=True)
        chk.true("retried" in text and "counted earlier" in text,
                 "the summary says what was retried and what was counted earlier")
        chk.eq(res.get("acknowledged", 0) + res.get("counted_earlier", 0), 2400,
               "every answer due was acknowledged or counted earlier")
        v = res.get("verify", {})
        maybe = v.get("maybe_counted")
        chk.true(maybe is not None and 0 <= maybe <= res.get("counted_earlier", 0),
                 "only a retry's 409 after a lost try is maybe counted (%s of %s)" %
                 (maybe, res.get("counted_earlier")))
        chk.true(maybe == 0 or "maybe counted" in text, "and the summary says how many")

        rc, text, res = run(tmp, "lt-noretry", retry=False)
        errors = res.get("errors", {})
        n_err = errors.get("total", 0) if isinstance(errors, dict) else errors
        chk.true(n_err > 0, "without --retry the same faults end answers in error (%s)" % n_err)
    chk.finish()


if __name__ == "__main__":
    main()
