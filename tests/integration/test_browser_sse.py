"""The page in a real headless Chromium over its default transport, the
Server-Sent Events stream (issue 15: "not only the polling fallback"),
driven over the DevTools protocol by puppeteer-core (tests/browser/, npm,
installed by scripts/setup.sh) at phone size (390 x 844):
  - the page shows the total livetally counted, in stream mode, the stream
    gzip'd (Chromium sends Accept-Encoding: gzip);
  - more answers arrive: it shows the new total without a reload (the same
    page load, one navigation entry), still over the stream;
  - the burst chart has points, its peak is a rate, the answer-window
    timer runs for the open question;
  - no sideways scroll at 390 px; the favicon is the page's own SVG; no
    request leaves the dashboard's origin (no external resources).

Skipped (exit 77, which ctest counts as skipped and CI as a failure) when
Chromium, node or tests/browser/node_modules is missing."""

import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import ltutil  # noqa: E402

CHECK = ltutil.Checker("test_browser_sse")
DRIVER = os.path.join(ltutil.SRC, "tests", "browser", "sse_page.js")
MODULES = os.path.join(ltutil.SRC, "tests", "browser", "node_modules", "puppeteer-core")


def answers(c, n, qid, seed):
    for i in range(n):
        a = {"question": qid, "answer": (i * seed) % 3, "age": 14 + (i * 7) % 60,
             "country": ("us", "gb", "ie", "de")[i % 4]}
        status, body, _ = c.json("POST", "/v1/answers", a)
        if status != 202:
            raise AssertionError("answer %r: %d %r" % (a, status, body))


def read_line(p, prefix):
    for line in p.stdout:
        if line.startswith(prefix + " "):
            return json.loads(line[len(prefix) + 1:])
        print("driver: " + line.rstrip())
    return {"ok": False, "error": "the driver ended before '%s'" % prefix}


def main():
    exe, node = ltutil.find_chromium(), shutil.which("node")
    if exe is None or node is None or not os.path.isdir(MODULES):
        print("SKIP: needs chromium, node and tests/browser/node_modules (scripts/setup.sh)")
        sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="lt-browser-sse-")
    event_path, _ = ltutil.write_event(tmp, n_questions=2, name="lt-sse-page")
    token_path, _ = ltutil.write_token(tmp)
    port = ltutil.free_port()
    srv = ltutil.Proc([ltutil.binary("livetally"), "--event", event_path, "--listen",
                       "127.0.0.1:%d" % port, "--admin-token-file", token_path,
                       "--interval", "300", "--log-level", "warn"], port=port,
                      log_name="livetally")
    c = ltutil.Client(port)
    drv = None
    try:
        answers(c, 120, 1, 3)
        ltutil.wait_stats(c, lambda s: s["totals"]["answers"] == 120)
        url = "http://127.0.0.1:%d/" % port
        drv = subprocess.Popen([node, DRIVER, exe, url, "120"], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               cwd=os.path.dirname(DRIVER))
        first = read_line(drv, "ready")
        CHECK.true(first.get("ok"), "the page shows 120 over the stream: %s" % first)
        CHECK.eq(first.get("mode"), "stream", "the default transport is the stream")
        CHECK.true(first.get("scrollWidth", 10**6) <= 390,
                   "no sideways scroll at 390 px (%s)" % first.get("scrollWidth"))
        CHECK.true(first.get("icon", "").endswith("/favicon.svg"), "the page's own favicon")

        answers(c, 75, 1, 5)
        drv.stdin.write("expect 195\n")
        drv.stdin.flush()
        done = read_line(drv, "done")
        CHECK.true(done.get("ok"), "the page shows 195 without a reload: %s" %
                   {k: done.get(k) for k in ("total", "mode", "error")})
        CHECK.eq(done.get("loadedAt"), first.get("loadedAt"), "the same page load")
        CHECK.eq(done.get("navigations"), 1, "one navigation entry")
        CHECK.eq(done.get("mode"), "stream", "still on the stream")
        CHECK.eq(done.get("streamEncoding"), "gzip",
                 "Chromium takes the stream gzip'd (one deflate fragment per event)")
        CHECK.true(done.get("burstPoints", 0) >= 1 and int(done.get("burstPeak") or 0) > 0,
                   "the burst chart has points and a peak (%s, %s)" %
                   (done.get("burstPoints"), done.get("burstPeak")))
        CHECK.true(done.get("timer", "").startswith("open for ") and
                   int(done.get("timerOpenMs") or -1) >= 0,
                   "the answer-window timer runs: %r" % done.get("timer"))
        CHECK.eq(done.get("outside"), [], "no request leaves the dashboard's origin")
        CHECK.eq(done.get("iconFetch"), {"status": 200, "type": "image/svg+xml"},
                 "favicon.svg is served")
        CHECK.true(done.get("scrollWidth", 10**6) <= 390, "still no sideways scroll")
        rc = drv.wait(30)
        CHECK.eq(rc, 0, "the driver exits 0")
    finally:
        if drv is not None and drv.poll() is None:
            drv.kill()
            drv.wait()
        c.close()
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    CHECK.finish()


if __name__ == "__main__":
    main()
