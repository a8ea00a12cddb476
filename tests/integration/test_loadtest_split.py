"""livetally-loadtest against the split binaries on two memcached servers:
livetally-ingest takes the answers and the admin calls, livetally-aggregate
sums the shards, livetally-dashboard serves the snapshot that --verify reads.
A concert of 3 questions with a user population verifies (exit 0), and the
dashboard's own totals equal what the tool says was acknowledged."""

import json
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ltutil as lt  # noqa: E402


def main():
    c = lt.Checker("test_loadtest_split")
    tmp = tempfile.mkdtemp(prefix="lt-loadtest-split-")
    token_path, _ = lt.write_token(tmp)
    event = lt.EVENT
    m1, m2 = lt.memcached(), lt.memcached()
    backend = "memcached://127.0.0.1:%d,127.0.0.1:%d" % (m1.port, m2.port)
    ip, dp = lt.free_port(), lt.free_port()
    procs = []
    try:
        procs.append(lt.Proc([lt.binary("livetally-ingest"), "--event", event, "--backend", backend,
                              "--listen", "127.0.0.1:%d" % ip, "--admin-token-file", token_path],
                             port=ip, log_name="ingest"))
        procs.append(lt.Proc([lt.binary("livetally-aggregate"), "--event", event, "--backend",
                              backend, "--interval", "250"], log_name="aggregate"))
        procs.append(lt.Proc([lt.binary("livetally-dashboard"), "--event", event, "--backend",
                              backend, "--listen", "127.0.0.1:%d" % dp, "--interval", "250"],
                             port=dp, log_name="dashboard"))
        report = os.path.join(tmp, "concert.json")
        args = [lt.binary("livetally-loadtest"), "--target", "http://127.0.0.1:%d" % ip,
                "--event", event, "--profile", "concert", "--questions", "2-4", "--rate", "1500",
                "--period", "600s", "--window", "300s", "--speedup", "100", "--users", "30k",
                "--connections", "16", "--admin-token-file", token_path,
                "--verify", "http://127.0.0.1:%d" % dp, "--json", report, "--no-progress"]
        p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           stdin=subprocess.DEVNULL, timeout=180)
        sys.stdout.write(p.stdout + p.stderr)
        c.eq(p.returncode, 0, "split concert with --verify exits 0")
        with open(report) as f:
            rep = json.load(f)
        c.true(rep["sent"] > 1000, "answers were sent")
        c.eq(rep["acknowledged"], rep["sent"], "every answer acknowledged")
        c.eq(rep["verify"]["passed"], True, "verify passed")
        c.eq(rep["verify"]["differences"], [], "no difference")
        client = lt.Client(dp)
        status, stats, _ = client.json("GET", "/v1/stats")
        c.eq(status, 200, "dashboard GET /v1/stats")
        by_id = {q["id"]: q for q in stats["questions"]}
        c.eq(sum(by_id[i]["answers"] for i in (2, 3, 4)), rep["acknowledged"],
             "dashboard answers of questions 2-4 = acknowledged")
        c.eq(stats["totals"]["answers"], rep["acknowledged"], "dashboard totals = acknowledged")
        client.close()
    finally:
        for p in reversed(procs):
            p.stop()
        m1.stop()
        m2.stop()
        if c.failed:
            for p in procs:
                print(p.output()[-2000:])
    c.finish()


if __name__ == "__main__":
    main()
