"""livetally-loadtest against a real `livetally` (embedded store):

- a concert of 3 questions compressed to ~20 s (admin open/close, bursts, a
  user population) verifies: exit 0, every figure in --json, and the
  dashboard's own totals agree with what the tool says was acknowledged;
- a recorded run replays with its bodies; both verify with --verify-delta on
  a server that already counted, while plain --verify (totals) fails there;
- a stub dashboard that passes the real stats through verifies (the
  control), and the same stub with one count altered makes --verify exit 1
  and name the count;
- --stages ramps and holds: each second sends its share, the run verifies;
- `--json -` writes the JSON to stdout (the summary to stderr); a run whose
  replies are mostly 409 question_not_open (or _closed) exits 1 and says so;
- --threshold sets the exit status: held (exit 0, the summary and --json
  say so), one that does not hold (exit 1, named), a malformed one (exit 2);
- usage errors exit 2, --help exits 0, a non-loopback target is refused.
"""

import http.server
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import ltutil as lt  # noqa: E402

LOADTEST = lt.binary("livetally-loadtest")


def run_loadtest(args, timeout=120, cwd=None):
    p = subprocess.run([LOADTEST] + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       stdin=subprocess.DEVNULL, timeout=timeout, text=True, cwd=cwd)
    sys.stdout.write(p.stdout)
    if p.stderr:
        sys.stdout.write("[stderr] " + p.stderr)
    return p


class StubDashboard:
    """GET /v1/stats: the real dashboard's stats, optionally with one count
    raised by one (the first non-empty by_country entry's "right")."""

    def __init__(self, real_url):
        self.real_url = real_url
        self.alter = False
        self.altered = None
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path != "/v1/stats":
                    self.send_error(404)
                    return
                with urllib.request.urlopen(stub.real_url + "/v1/stats", timeout=5) as r:
                    stats = json.loads(r.read())
                if stub.alter:
                    for q in stats["questions"]:
                        if q["by_country"]:
                            q["by_country"][0]["right"] += 1
                            stub.altered = (q["id"], q["by_country"][0]["country"])
                            break
                body = json.dumps(stats).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.port = lt.free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def start_livetally(event, token_path):
    port = lt.free_port()
    srv = lt.Proc([lt.binary("livetally"), "--event", event, "--listen", "127.0.0.1:%d" % port,
                   "--admin-token-file", token_path, "--interval", "250"],
                  port=port, log_name="livetally")
    return srv, port, "http://127.0.0.1:%d" % port


def main():
    c = lt.Checker("test_loadtest")
    tmp = tempfile.mkdtemp(prefix="lt-loadtest-")
    token_path, _ = lt.write_token(tmp)
    event = lt.EVENT
    stub = None
    try:
        # 1. The concert on a fresh server: questions 2, 3, 4 open in turn,
        # 600 s / 300 s compressed 100x; the totals must match exactly.
        srv, port, url = start_livetally(event, token_path)
        report = os.path.join(tmp, "concert.json")
        concert_rec = os.path.join(tmp, "concert.jsonl")
        p = run_loadtest(["--target", url, "--event", event, "--profile", "concert",
                          "--questions", "2-4", "--rate", "1500", "--period", "600s",
                          "--window", "300s", "--speedup", "100", "--users", "50k",
                          "--connections", "16", "--admin-token-file", token_path,
                          "--verify", url, "--json", report, "--no-progress", "--seed", "42",
                          "--record", concert_rec])
        c.eq(p.returncode, 0, "concert with --verify exits 0")
        c.true("verify         passed" in p.stdout, "the summary says verify passed")
        c.true("window 3s every 6s (5m00s every 10m00s at speedup 100)" in p.stdout,
               "the header gives the times as they ran, the show's beside them")
        with open(report) as f:
            rep = json.load(f)
        c.true(rep["sent"] > 1000, "the concert sent answers")
        c.eq(rep["acknowledged"], rep["sent"], "every answer acknowledged")
        c.eq(rep["errors"]["total"], 0, "no errors")
        c.eq(rep["verify"]["passed"], True, "json verify.passed")
        c.eq(rep["verify"]["mode"], "totals", "json verify.mode")
        c.eq(rep["verify"]["differences"], [], "json verify.differences")
        for k in ("p50", "p75", "p90", "p95", "p99", "p999", "max"):
            c.true(k in rep["latency_ms"] and rep["latency_ms"][k] >= 0, "latency_ms." + k)
        c.true(rep["latency_ms"]["p50"] <= rep["latency_ms"]["p99"] <= rep["latency_ms"]["max"],
               "percentiles are ordered")
        c.true(rep["achieved_rps"] > 0, "achieved_rps")
        # a concert is mostly gaps: the rate over the seconds with replies
        # is the one that says how hard the target was pushed
        c.true(0 < rep["active_seconds"] < rep["elapsed_s"] and
               rep["active_rps"] > rep["achieved_rps"],
               "active_rps %.0f over %d s > achieved_rps %.0f" % (
                   rep["active_rps"], rep["active_seconds"], rep["achieved_rps"]))
        c.true("s with replies" in p.stdout, "the summary gives the rate over the active seconds")
        c.eq(sum(s["sent"] for s in rep["series"]), rep["sent"], "the series adds up to sent")
        busy = [s for s in rep["series"] if s["replies"] > 0]
        c.true(busy and all(s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["p999_ms"]
                            for s in busy), "per second: p50 <= p90 <= p99 <= p999")
        c.true(all(s["p50_ms"] is None for s in rep["series"] if s["replies"] == 0),
               "per second: no percentiles without replies")
        c.eq(sum(s["acknowledged"] for s in rep["series"]), rep["acknowledged"],
             "the series adds up to acknowledged")
        c.true(15 <= rep["elapsed_s"] <= 40, "compressed to ~20 s (%.1f)" % rep["elapsed_s"])
        # Independently of the tool: the dashboard's totals are what it reported.
        client = lt.Client(port)
        status, stats, _ = client.json("GET", "/v1/stats")
        c.eq(status, 200, "GET /v1/stats")
        by_id = {q["id"]: q for q in stats["questions"]}
        c.eq(sum(by_id[i]["answers"] for i in (2, 3, 4)), rep["acknowledged"],
             "dashboard answers of questions 2-4 = acknowledged")
        c.true(all(by_id[i]["answers"] > 0 for i in (2, 3, 4)), "every question got answers")
        c.eq([by_id[i]["state"] for i in (2, 3, 4)], ["closed"] * 3, "the concert closed them")
        client.close()

        # 1b. The concert's recording keeps its opens and closes; replayed
        # on a fresh server with the token it verifies exactly, and without
        # the token it is refused before anything is sent.
        with open(concert_rec) as f:
            lines = [json.loads(line) for line in f]
        admin = [(line["admin"]["question"], line["admin"]["action"]) for line in lines
                 if "admin" in line]
        c.eq(admin, [(2, "open"), (2, "close"), (3, "open"), (3, "close"), (4, "open"),
                     (4, "close")], "the recording holds the concert's opens and closes in order")
        c.eq(len(lines) - len(admin), rep["sent"], "and every answer sent")
        c.true(all(a["t_us"] <= b["t_us"] for a, b in zip(lines, lines[1:])),
               "admin events and answers sorted by time together")
        srv2, port2, url2 = start_livetally(event, token_path)
        p = run_loadtest(["--target", url2, "--event", event, "--replay", concert_rec,
                          "--no-progress"])
        c.eq(p.returncode, 2, "replay of a concert without a token: exit 2")
        c.true("admin events" in p.stderr and "--admin-token-file" in p.stderr,
               "and says what is missing: %r" % p.stderr.strip()[-200:])
        p = run_loadtest(["--target", url2, "--event", event, "--replay", concert_rec,
                          "--speedup", "2", "--admin-token-file", token_path, "--verify", url2,
                          "--no-progress"])
        c.eq(p.returncode, 0, "replay of the concert with the token verifies exactly")
        c.true("verify         passed" in p.stdout, "the summary says verify passed")
        c.true("6 admin events" in p.stdout, "the header counts the admin events")
        client = lt.Client(port2)
        status, stats2, _ = client.json("GET", "/v1/stats")
        client.close()
        by_id2 = {q["id"]: q for q in stats2["questions"]}
        c.eq([by_id2[i]["answers"] for i in (2, 3, 4)], [by_id[i]["answers"] for i in (2, 3, 4)],
             "the replay counted what the concert counted, question by question")
        c.eq([by_id2[i]["state"] for i in (2, 3, 4)], ["closed"] * 3, "and closed them again")
        srv2.stop()

        # 2. Same server, already counted: record a run, then replay it twice
        # as fast; --verify-delta checks the change of each.
        rec = os.path.join(tmp, "run.jsonl")
        p = run_loadtest(["--target", url, "--event", event, "--rate", "800", "--requests", "1200",
                          "--record", rec, "--verify", url, "--verify-delta", "--no-progress"])
        c.eq(p.returncode, 0, "recorded run verifies (delta)")
        with open(rec) as f:
            lines = [json.loads(line) for line in f]
        c.eq(len(lines), 1200, "one line per request sent")
        c.true(all(a["t_us"] <= b["t_us"] for a, b in zip(lines, lines[1:])), "lines sorted by time")
        c.true(all(line["body"]["question"] == 1 for line in lines), "bodies answer the open question")
        p = run_loadtest(["--target", url, "--event", event, "--replay", rec, "--speedup", "2",
                          "--verify", url, "--verify-delta", "--no-progress"])
        c.eq(p.returncode, 0, "replay verifies (delta)")
        c.true("sent           1200 " in p.stdout, "replay sent the whole file")
        # --record - is stdout: the recording alone there, the summary on stderr
        p = subprocess.run([LOADTEST, "--target", url, "--event", event, "--rate", "400",
                            "--requests", "60", "--record", "-", "--no-progress"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                           timeout=60, text=True)
        c.eq(p.returncode, 0, "--record - exits 0")
        recorded = [json.loads(line) for line in p.stdout.splitlines()]
        c.eq(len(recorded), 60, "--record - writes one JSON line per request to stdout")
        c.true("sent           60 " in p.stderr, "and the summary to stderr")
        p = run_loadtest(["--target", url, "--event", event, "--requests", "10", "--record", "-",
                          "--json", "-"])
        c.eq(p.returncode, 2, "--record - and --json - cannot share stdout")
        # Totals against a server that had answers before: a difference, and a hint.
        p = run_loadtest(["--target", url, "--event", event, "--rate", "200", "--requests", "100",
                          "--verify", url, "--no-progress"])
        c.eq(p.returncode, 1, "totals differ on a server that already counted")
        c.true("--verify-delta" in p.stderr and "--verify-delta" in p.stdout,
               "the warning and the summary suggest --verify-delta")
        # Thresholds set the exit status: held on the open question, not
        # on one the concert closed (every answer a 409).
        report = os.path.join(tmp, "thresholds.json")
        p = run_loadtest(["--target", url, "--event", event, "--rate", "400", "--requests", "200",
                          "--threshold", "acknowledged>=100%", "--threshold", "p99<10s",
                          "--threshold", "errors<=0%", "--json", report, "--no-progress"])
        c.eq(p.returncode, 0, "thresholds that hold: exit 0")
        c.true("thresholds     3 of 3 held" in p.stdout, "the summary says 3 of 3 held")
        with open(report) as f:
            rep = json.load(f)
        c.eq([(t["threshold"], t["held"], t["unit"]) for t in rep["thresholds"]],
             [("acknowledged>=100%", True, "percent"), ("p99<10s", True, "ms"),
              ("errors<=0%", True, "percent")], "json thresholds")
        c.eq(rep["thresholds"][0]["value"], 100.0, "json: acknowledged 100%")
        p = run_loadtest(["--target", url, "--event", event, "--rate", "400", "--requests", "100",
                          "--questions", "3", "--threshold", "acknowledged>99.9%",
                          "--threshold", "p99<10s", "--no-progress"])
        c.eq(p.returncode, 1, "a threshold that does not hold: exit 1")
        c.true("thresholds     1 of 2 held" in p.stdout and "FAILED" in p.stdout,
               "the summary names the one that failed")
        # --stages: ramp, hold, ramp down; each second gets its share, and
        # every answer is counted
        report = os.path.join(tmp, "stages.json")
        p = run_loadtest(["--target", url, "--event", event, "--stages", "1s:600,2s:600,1s:0",
                          "--verify", url, "--verify-delta", "--json", report, "--no-progress"])
        c.eq(p.returncode, 0, "--stages run verifies (delta)")
        c.true("stages 1s:600,2s:600,1s:0: 1800 requests over 4s" in p.stdout,
               "the header says what the stages come to")
        with open(report) as f:
            rep = json.load(f)
        c.eq(rep["sent"], 1800, "--stages: 300 + 1200 + 300 requests")
        # The series samples the threads' counters once a second from the
        # control loop, so a late sample moves a few requests across a
        # boundary; the schedule itself is exact (1800 in all, above).
        got = [s["sent"] for s in rep["series"]][:4]
        c.true(len(got) == 4 and all(abs(g - w) <= 9 for g, w in zip(got, [300, 600, 600, 300])),
               "--stages: each second sends the curve's integral over it (within a sample's "
               "slip): %s" % got)
        # Answers to a question the concert closed: every reply a 409, and
        # the run fails for it with a clear line, thresholds or not.
        p = run_loadtest(["--target", url, "--event", event, "--rate", "400", "--requests", "60",
                          "--questions", "3", "--no-progress"])
        c.eq(p.returncode, 1, "most replies 409 question_not_open: exit 1")
        c.true("60 of 60 replies were 409 question_not_open or question_closed" in p.stderr,
               "the run says why it failed")
        # --json -: the JSON alone on stdout, the summary on stderr, no file "-"
        p = run_loadtest(["--target", url, "--event", event, "--rate", "400", "--requests", "50",
                          "--json", "-", "--no-progress"], cwd=tmp)
        c.eq(p.returncode, 0, "--json - exits 0")
        try:
            rep = json.loads(p.stdout)
        except ValueError:
            rep = {}
        c.eq(rep.get("sent"), 50, "--json -: stdout is the JSON report")
        c.true("acknowledged   50 (202)" in p.stderr, "--json -: the summary is on stderr")
        c.true(not os.path.exists(os.path.join(tmp, "-")), "--json -: no file named -")
        # --results FILE: one CSV line per request sent
        results = os.path.join(tmp, "results.csv")
        p = run_loadtest(["--target", url, "--event", event, "--rate", "300", "--requests", "120",
                          "--results", results, "--no-progress"])
        c.eq(p.returncode, 0, "--results run exits 0")
        with open(results) as f:
            lines = f.read().splitlines()
        c.eq(lines[:1], ["intended_us,latency_us,status,error,bytes"], "--results: the header")
        rows = [ln.split(",") for ln in lines[1:]]
        c.eq(len(rows), 120, "--results: a line per request")
        c.eq(sorted(set(r[2] for r in rows)), ["202"], "--results: every status 202")
        c.true(all(r[3] == "" and int(r[4]) > 0 and int(r[1]) >= 0 for r in rows),
               "--results: no error code, reply bytes and a latency on each line")
        starts = sorted(int(r[0]) for r in rows)
        c.true(starts[0] < 50000 and 300000 < starts[-1] < 500000,
               "--results: intended times span the run (0 .. 0.4 s at 300/s): %d .. %d" %
               (starts[0], starts[-1]))
        # --results -: the lines on stdout, the summary on stderr; refusals
        # carry their status and code
        p = run_loadtest(["--target", url, "--event", event, "--rate", "400", "--requests", "30",
                          "--questions", "3", "--results", "-", "--no-progress"])
        lines = p.stdout.splitlines()
        c.eq(len(lines), 31, "--results -: header and 30 lines on stdout")
        codes = set(tuple(ln.split(",")[2:4]) for ln in lines[1:])
        c.true(len(codes) == 1 and list(codes)[0] in (("409", "question_not_open"),
                                                       ("409", "question_closed")),
               "--results -: each 409 with its code: %s" % sorted(codes))
        c.true("acknowledged" in p.stderr, "--results -: the summary is on stderr")
        p = run_loadtest(["--target", url, "--event", event, "--rate", "400", "--requests", "5",
                          "--results", "-", "--json", "-", "--no-progress"])
        c.eq(p.returncode, 2, "--results - with --json -: exit 2")
        c.true("share stdout" in p.stderr, "--results - with --json -: says why")
        p = run_loadtest(["--target", url, "--event", event, "--rate", "400", "--requests", "5",
                          "--results", os.path.join(tmp, "no", "such", "dir.csv"),
                          "--no-progress"])
        c.eq(p.returncode, 2, "--results into a missing directory: exit 2")
        c.true("--results" in p.stderr, "--results into a missing directory: names the option")
        srv.stop()

        # 3. A stub dashboard in front of a fresh server: faithful (the
        # control), then on another fresh server with one count off.
        for alter, want in ((False, 0), (True, 1)):
            srv, port, url = start_livetally(event, token_path)
            stub = StubDashboard(url)
            stub.alter = alter
            report = os.path.join(tmp, "stub.json")
            p = run_loadtest(["--target", url, "--event", event, "--rate", "500", "--duration", "2s",
                              "--connections", "4", "--verify", stub.url, "--json", report,
                              "--no-progress"])
            with open(report) as f:
                rep = json.load(f)
            if not alter:
                c.eq(p.returncode, 0, "verify through a faithful stub passes")
                c.eq(rep["verify"]["passed"], True, "faithful stub: json verify.passed")
            else:
                c.eq(p.returncode, 1, "verify against an altered count exits 1")
                c.true(stub.altered is not None, "the stub altered a count")
                if stub.altered:
                    want_line = "question %d by_country[%s].right: dashboard" % stub.altered
                    c.true(want_line in p.stdout, "the difference is printed: " + want_line)
                c.eq(rep["verify"]["passed"], False, "json verify.passed is false")
                c.eq(rep["verify"]["difference_count"], 1, "exactly one difference")
            stub.close()
            stub = None
            srv.stop()

        # 4. Usage.
        c.eq(run_loadtest(["--help"]).returncode, 0, "--help exits 0")
        c.eq(run_loadtest(["--version"]).returncode, 0, "--version exits 0")
        p = run_loadtest(["--event", event, "--duration", "1s", "--bogus"])
        c.eq(p.returncode, 2, "unknown flag exits 2")
        c.eq(len(p.stderr.strip().splitlines()), 1, "one line for a usage error")
        c.eq(run_loadtest(["--event", event]).returncode, 2, "steady without a bound exits 2")
        for args, why in ((["--stages", "10s:1k", "--rate", "5k"], "--stages and --rate"),
                          (["--stages", "10s:1k", "--duration", "5s"], "--stages and --duration"),
                          (["--stages", "10s:1k", "--profile", "burst"], "--stages and a profile"),
                          (["--stages", "10s:1k,"], "a trailing comma"),
                          (["--stages", "10s"], "no rate")):
            p = run_loadtest(["--event", event] + args)
            c.eq(p.returncode, 2, "%s: exit 2" % why)
            c.true(len(p.stderr.strip().splitlines()) == 1 and "--stages" in p.stderr,
                   "%s: one line naming --stages" % why)
        for bad in ("p99<5", "p98<5ms", "errors<5", "acknowledged>101%", "p99", "p99<"):
            p = run_loadtest(["--event", event, "--duration", "1s", "--threshold", bad])
            c.eq(p.returncode, 2, "--threshold %r exits 2" % bad)
            c.true(p.stderr.startswith("livetally-loadtest: --threshold ") and
                   len(p.stderr.strip().splitlines()) == 1,
                   "--threshold %r: one line naming the flag" % bad)
        p = run_loadtest(["--event", event, "--duration", "1s", "--target", "http://192.0.2.1:80"])
        c.eq(p.returncode, 2, "a non-loopback target is refused")
        c.true("--allow-remote" in p.stderr, "the refusal names --allow-remote")
        closed = lt.free_port()
        p = run_loadtest(["--event", event, "--duration", "1s", "--target",
                          "http://127.0.0.1:%d" % closed])
        c.eq(p.returncode, 1, "nothing listening: exit 1")
        c.true("cannot connect" in p.stderr, "says it cannot connect")
    finally:
        if stub is not None:
            stub.close()
    c.finish()


if __name__ == "__main__":
    main()
