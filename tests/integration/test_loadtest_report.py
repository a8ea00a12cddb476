"""livetally-loadtest --report: one self-contained HTML file, opened in
headless Chromium from file:// with the network off.

A steady run against a real `livetally` (embedded store), 4 s at 400/s with
a burst of bad requests in it (an unknown question: 409s), then
`--report FILE` beside `--json`: the DOM Chromium builds must hold three
SVG plots (answers and errors per second, latency percentiles per second,
the latency distribution), two polylines in the first and four in the
second with one point per second of the series, bars in the third whose
counts add up to the replies, and the summary's acknowledged count equal
to the JSON's. Nothing in the file may load from elsewhere (no script, no
src=, no link, no url()): Chromium runs with the network disabled and its
log must show no failed load. `--report -` writes to stdout with the
summary moved to stderr; a report path in a missing directory is a clear
error before the run, exit 2.

Skipped (exit 77) only when Chromium is not installed."""

import html.parser
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import ltutil as lt  # noqa: E402

CHECK = lt.Checker("test_loadtest_report")
LOADTEST = lt.binary("livetally-loadtest")


class Svg(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.svgs = []  # per <svg>: {"polylines": [points...], "bars": [titles], "title": str}
        self.in_title = False
        self.cur = None
        self.tags = []
        self.attrs_all = []
        self.summary = {}
        self.row = []
        self.in_cell = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        self.attrs_all.append((tag, a))
        if tag == "svg":
            self.cur = {"polylines": [], "bars": 0, "bar_titles": [], "label": a.get("aria-label")}
            self.svgs.append(self.cur)
        elif tag == "polyline" and self.cur is not None:
            self.cur["polylines"].append((a.get("data-name"), a.get("points", "")))
        elif tag == "rect" and self.cur is not None and a.get("class") == "bar":
            self.cur["bars"] += 1
        elif tag == "title" and self.cur is not None:
            self.in_title = True
        elif tag in ("th", "td"):
            self.in_cell = True
            self.row.append("")
        elif tag == "tr":
            self.row = []

    def handle_endtag(self, tag):
        if tag == "svg":
            self.cur = None
        elif tag == "title":
            self.in_title = False
        elif tag in ("th", "td"):
            self.in_cell = False
        elif tag == "tr" and len(self.row) == 2:
            self.summary[self.row[0]] = self.row[1]

    def handle_data(self, data):
        if self.in_title and self.cur is not None and self.cur["bars"] > 0:
            self.cur["bar_titles"].append(data)
        if self.in_cell and self.row:
            self.row[-1] += data


def dom_of(exe, path):
    profile = tempfile.mkdtemp(prefix="lt-chromium-")
    args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--disable-extensions", "--user-data-dir=" + profile,
            "--proxy-server=127.0.0.1:9", "--enable-logging=stderr", "--v=0",
            "--virtual-time-budget=1000", "--dump-dom", "file://" + path]
    try:
        p = subprocess.run(args, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    CHECK.eq(p.returncode, 0, "chromium exit status")
    err = p.stderr.decode("utf-8", "replace")
    CHECK.true("net::ERR" not in err and "Failed to load" not in err,
               "nothing loaded from elsewhere: %s" % [l for l in err.splitlines()
                                                       if "ERR" in l][:3])
    return p.stdout.decode("utf-8", "replace")


def main():
    exe = lt.find_chromium()
    if exe is None:
        print("skipped: chromium is not installed (scripts/setup.sh installs it)", flush=True)
        sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="lt-report-")
    token_path, _ = lt.write_token(tmp)
    port = lt.free_port()
    srv = lt.Proc([lt.binary("livetally"), "--event", lt.EVENT, "--listen",
                   "127.0.0.1:%d" % port, "--admin-token-file", token_path, "--interval", "250"],
                  port=port, log_name="livetally")
    url = "http://127.0.0.1:%d" % port
    try:
        report, js = os.path.join(tmp, "run.html"), os.path.join(tmp, "run.json")
        p = subprocess.run([LOADTEST, "--target", url, "--event", lt.EVENT, "--rate", "400",
                            "--duration", "4s", "--connections", "4", "--questions", "1,2",
                            "--report", report, "--json", js, "--no-progress", "--seed", "5"],
                           capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        sys.stdout.write(p.stdout + p.stderr)
        with open(js) as f:
            rep = json.load(f)
        CHECK.true(rep["acknowledged"] > 500, "the run acknowledged answers")
        CHECK.true(rep["errors"]["total"] > 0, "the run met errors too (question 2 is not open)")
        with open(report, encoding="utf-8") as f:
            text = f.read()
        CHECK.true(text.startswith("<!DOCTYPE html>"), "an HTML document")
        low = text.lower()
        for bad in ("<script", " src=", "<link", "url(", "@import", "http://", "https://"):
            CHECK.true(bad not in low.replace(url.lower(), ""),
                       "the file refers to nothing elsewhere (%r)" % bad)

        d = Svg()
        d.feed(dom_of(exe, report))
        CHECK.eq(len(d.svgs), 3, "three plots in the DOM")
        n = len(rep["series"])
        if len(d.svgs) == 3:
            rate, lat, hist = d.svgs
            CHECK.eq([name for name, _ in rate["polylines"]], ["acknowledged", "errors"],
                     "answers per second: acknowledged and errors")
            CHECK.eq([name for name, _ in lat["polylines"]], ["p50", "p90", "p99", "p99.9"],
                     "latency per second: four percentiles")
            for name, pts in rate["polylines"] + lat["polylines"]:
                CHECK.eq(len(pts.split()), n, "%s: one point per second of the series" % name)
            CHECK.true(hist["bars"] > 0, "the distribution has bars")
            counts = [int(t.rsplit(": ", 1)[1]) for t in hist["bar_titles"] if ": " in t]
            CHECK.eq(sum(counts), rep["latency_ms"]["count"], "the bars add up to the replies")
        CHECK.eq(d.summary.get("acknowledged (202)"), str(rep["acknowledged"]),
                 "the summary's acknowledged count is the JSON's")
        CHECK.true(re.match(r"p50 [0-9.]+ +p75", d.summary.get("latency", "")) is not None,
                   "the summary gives the percentiles: %r" % d.summary.get("latency"))

        # to stdout: the summary goes to stderr
        p = subprocess.run([LOADTEST, "--target", url, "--event", lt.EVENT, "--rate", "100",
                            "--duration", "1s", "--connections", "2", "--report", "-",
                            "--no-progress", "--seed", "6"],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        CHECK.eq(p.returncode, 0, "--report - exits 0")
        CHECK.true(p.stdout.startswith("<!DOCTYPE html>") and p.stdout.count("<svg") == 3,
                   "--report - writes the report to stdout")
        CHECK.true("acknowledged" in p.stderr, "and the summary to stderr")
        p = subprocess.run([LOADTEST, "--target", url, "--event", lt.EVENT, "--rate", "100",
                            "--duration", "1s", "--report", os.path.join(tmp, "no", "r.html"),
                            "--no-progress"],
                           capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
        CHECK.eq(p.returncode, 2, "a report that cannot be written: exit 2 before the run")
        CHECK.true("--report" in p.stderr and "No such file or directory" in p.stderr,
                   "and says why: %r" % p.stderr.strip()[-200:])
    finally:
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    CHECK.finish()


if __name__ == "__main__":
    main()
