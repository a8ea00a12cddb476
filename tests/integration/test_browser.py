"""The page in a real browser: headless Chromium loads the dashboard of a
livetally fed with known answers, and every number rendered in the DOM (the
data-* attributes, and the text people read) must equal /v1/stats. Then the
same against livetally-dashboard serving a hand-made snapshot with ultimate
fans, an unknown country and hostile texts (rendered as text, never as
markup). Screenshots at 1920x1080 (big-screen mode) and at phone size are
saved under $LIVETALLY_BIN/artifacts/.

Chromium runs with --virtual-time-budget so the page's scripts have run
before the DOM is dumped; virtual time waits for pending requests, which an
open Server-Sent Events stream never finishes, so the page is loaded with
?transport=poll (the polling fallback; the stream itself is tested at the
protocol level by test_dashboard.py).

Skipped (exit 77, which ctest counts as skipped and CI as a failure) only
when Chromium is not installed."""

import html.parser
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import ltutil  # noqa: E402

CHECK = ltutil.Checker("test_browser")
EV = ltutil.load_event()
ARTIFACTS = os.path.join(ltutil.BIN, "artifacts")


def chromium(exe, url, out_args, window="1920,1080", budget_ms=1000):
    """Runs headless Chromium once; returns (stdout, stderr)."""
    profile = tempfile.mkdtemp(prefix="lt-chromium-")
    args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--disable-extensions", "--user-data-dir=" + profile,
            "--window-size=" + window, "--virtual-time-budget=%d" % budget_ms,
            "--enable-logging=stderr", "--v=0"] + out_args + [url]
    try:
        p = subprocess.run(args, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    out = p.stdout.decode("utf-8", "replace")
    err = p.stderr.decode("utf-8", "replace")
    CHECK.eq(p.returncode, 0, "chromium exit status for %s" % url)
    # Console errors of the page (an exception in app.js) show up here.
    CHECK.true("Uncaught" not in err, "no script error on %s: %s" % (
        url, [l for l in err.splitlines() if "Uncaught" in l][:3]))
    return out, err


class Dom(html.parser.HTMLParser):
    """Every element with its attributes, its text and its parent chain."""

    def __init__(self):
        super().__init__()
        self.elements = []
        self.stack = []

    def handle_starttag(self, tag, attrs):
        el = {"tag": tag, "attrs": dict(attrs), "text": "", "parents": list(self.stack)}
        self.elements.append(el)
        if tag not in ("meta", "link", "br", "img", "input", "hr"):
            self.stack.append(el)

    def handle_endtag(self, tag):
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i]["tag"] == tag:
                del self.stack[i:]
                return

    def handle_data(self, data):
        for el in self.stack:
            el["text"] += data

    def by_id(self, ident):
        for el in self.elements:
            if el["attrs"].get("id") == ident:
                return el
        return None

    def under(self, ident, tag, cls=None):
        parent = self.by_id(ident)
        out = []
        for el in self.elements:
            if el["tag"] == tag and any(p is parent for p in el["parents"]):
                if cls is None or cls in (el["attrs"].get("class") or "").split():
                    out.append(el)
        return out


def dump(exe, port, query):
    out, _ = chromium(exe, "http://127.0.0.1:%d/%s" % (port, query), ["--dump-dom"])
    d = Dom()
    d.feed(out)
    return d


def num_text(el):
    return el["text"].strip().replace(",", "")


def check_value(d, ident, want, what):
    el = d.by_id(ident)
    CHECK.true(el is not None, "%s: #%s exists" % (what, ident))
    if el is None:
        return
    CHECK.eq(el["attrs"].get("data-value"), str(want), "%s: #%s data-value" % (what, ident))
    CHECK.eq(num_text(el), str(want), "%s: #%s text" % (what, ident))


def pct(r):
    return "%.1f%%" % (round(r * 1000) / 10)


def check_against_stats(d, stats, want_current, who, stale=False):
    body = d.by_id("current")
    CHECK.true(d.elements and d.elements[0]["tag"] == "html", "%s: a DOM was dumped" % who)
    b = [el for el in d.elements if el["tag"] == "body"]
    CHECK.eq(b and b[0]["attrs"].get("data-ready"), "1", "%s: the page rendered a snapshot" % who)
    CHECK.eq(b and b[0]["attrs"].get("data-mode"), "polling", "%s: polling transport" % who)
    CHECK.eq(d.by_id("event")["text"], stats["event"], "%s: event name" % who)
    t = stats["totals"]
    check_value(d, "total-answers", t["answers"], who)
    check_value(d, "total-right", t["right"], who)
    check_value(d, "total-wrong", t["wrong"], who)
    fresh = d.by_id("freshness")
    CHECK.eq(fresh["attrs"].get("data-stale"), "1" if stale else "0",
             "%s: data is %s" % (who, "stale" if stale else "fresh"))
    CHECK.true(fresh["text"].startswith("updated"), "%s: freshness text %r" % (who, fresh["text"]))
    CHECK.eq("no new data" in fresh["text"], stale, "%s: stale warning text" % who)

    q = next(x for x in stats["questions"] if x["id"] == want_current)
    CHECK.eq(body["attrs"].get("data-qid"), str(want_current), "%s: current question" % who)
    CHECK.eq(body["attrs"].get("data-state"), q["state"], "%s: current state" % who)
    CHECK.eq(d.by_id("current-text")["text"], q["text"], "%s: current text" % who)
    check_value(d, "current-answers", q["answers"], who)
    check_value(d, "current-right", q["right"], who)
    check_value(d, "current-wrong", q["wrong"], who)
    ratio = d.by_id("current-ratio")
    CHECK.eq(float(ratio["attrs"]["data-value"]), q["right_ratio"], "%s: current ratio" % who)
    CHECK.eq(ratio["text"].strip(), pct(q["right_ratio"]), "%s: current ratio text" % who)

    options = d.under("options", "li")
    CHECK.eq([int(o["attrs"]["data-count"]) for o in options], q["by_answer"],
             "%s: answer distribution" % who)
    CHECK.eq([o["attrs"]["data-correct"] for o in options],
             ["1" if q.get("correct") == k else "0" for k in range(len(q["by_answer"]))],
             "%s: correct option marked only once known" % who)
    labels = [el["text"] for el in d.under("options", "span", "label")]
    CHECK.eq(labels, q["options"], "%s: option texts" % who)

    ages = d.under("ages", "li")
    CHECK.eq([(a["attrs"]["data-bucket"], a["attrs"]["data-answers"], a["attrs"]["data-right"],
               a["attrs"]["data-wrong"]) for a in ages],
             [(str(a["bucket"]), str(a["answers"]), str(a["right"]), str(a["wrong"]))
              for a in q["by_age"]], "%s: age breakdown" % who)

    best = d.by_id("best-country")
    if q.get("best_country"):
        CHECK.eq(best["attrs"].get("data-country"), q["best_country"]["country"],
                 "%s: best country" % who)
        CHECK.eq(best["attrs"].get("data-answers"), str(q["best_country"]["answers"]),
                 "%s: best country answers" % who)
    else:
        CHECK.eq(best["attrs"].get("data-country"), "", "%s: no best country" % who)

    ranking = d.under("countries", "li", "country-row")
    want = stats["countries"][:10]
    CHECK.eq([(r["attrs"]["data-country"], r["attrs"]["data-answers"], r["attrs"]["data-ratio"])
              for r in ranking],
             [(c["country"], str(c["answers"]), repr_ratio(c["right_ratio"])) for c in want],
             "%s: country ranking" % who)
    codes = [el["text"] for el in d.under("countries", "span", "code")]
    CHECK.eq(codes, ["?" if c["country"] == "unknown" else c["country"] for c in want],
             "%s: country codes shown" % who)

    rows = d.under("questions", "tr")
    CHECK.eq([(r["attrs"]["data-qid"], r["attrs"]["data-state"], r["attrs"]["data-answers"],
               r["attrs"]["data-right"], r["attrs"]["data-ratio"]) for r in rows],
             [(str(x["id"]), x["state"], str(x["answers"]), str(x["right"]),
               repr_ratio(x["right_ratio"])) for x in stats["questions"]],
             "%s: questions list" % who)
    shown = [num_text(el) for el in d.under("questions", "td", "answers")]
    CHECK.eq(shown, [str(x["answers"]) for x in stats["questions"]],
             "%s: questions list answer texts" % who)

    fans_card = d.by_id("fans-card")
    fans = d.under("fans", "li")
    CHECK.eq("hidden" in fans_card["attrs"], not stats["ultimate_fans"],
             "%s: fans card shown only with fans" % who)
    CHECK.eq([(f["attrs"]["data-rank"], f["attrs"]["data-user"], f["attrs"]["data-right"],
               f["attrs"]["data-total-ms"]) for f in fans],
             [(str(f["rank"]), f["user"], str(f["right"]), str(f["total_ms"]))
              for f in stats["ultimate_fans"]], "%s: ultimate fans" % who)
    check_value(d, "generation", int(d.by_id("generation")["attrs"]["data-value"]), who)
    CHECK.true(int(d.by_id("generation")["attrs"]["data-value"]) <= stats["generation"],
               "%s: generation shown is not from the future" % who)


def repr_ratio(r):
    """How JavaScript's String() prints the ratio JSON.parse read."""
    text = repr(float(r))
    return text[:-2] if text.endswith(".0") else text


def png_size(path):
    with open(path, "rb") as f:
        head = f.read(24)
    if head[:8] != b"\x89PNG\r\n\x1a\n":
        return None
    return struct.unpack(">II", head[16:24])


def screenshot(exe, port, query, name, window):
    os.makedirs(ARTIFACTS, exist_ok=True)
    path = os.path.join(ARTIFACTS, name)
    if os.path.exists(path):
        os.remove(path)
    chromium(exe, "http://127.0.0.1:%d/%s" % (port, query), ["--screenshot=" + path], window)
    w, h = (int(x) for x in window.split(","))
    CHECK.eq(png_size(path), (w, h), "screenshot %s is a %dx%d PNG" % (name, w, h))
    print("screenshot: %s" % path, flush=True)


def feed(c, token):
    """Known answers: question 1 (open from start-up) then closed; question
    2 opened and answered: the current one."""
    countries = ["us"] * 5 + ["gb"] * 4 + ["ie"] * 3 + [None]
    answers = []
    for i in range(390):
        answers.append({"question": 1, "answer": (i * 7) % 4 if i % 3 else 2,
                        "age": 12 + (i * 13) % 60, "country": countries[i % len(countries)]})
    for i in range(120):
        answers.append({"question": 2, "answer": i % 3, "age": 16 + i % 40,
                        "country": countries[(i * 5) % len(countries)]})
    auth = {"Authorization": "Bearer " + token}
    for i, a in enumerate(answers):
        if i == 390:
            CHECK.eq(c.request("POST", "/v1/admin/questions/1/close", b"", auth)[0], 204,
                     "close question 1")
            CHECK.eq(c.request("POST", "/v1/admin/questions/2/open", b"", auth)[0], 204,
                     "open question 2")
        status, body, _ = c.json("POST", "/v1/answers", a)
        if status != 202:
            raise AssertionError("answer %r: %d %r" % (a, status, body))
    return len(answers)


def all_in_one(exe):
    tmp = tempfile.mkdtemp(prefix="lt-browser-")
    token_path, token = ltutil.write_token(tmp)
    port = ltutil.free_port()
    p = ltutil.Proc([ltutil.binary("livetally"), "--event", ltutil.EVENT, "--listen",
                     "127.0.0.1:%d" % port, "--admin-token-file", token_path, "--interval", "1000",
                     "--log-level", "warn"], port=port, log_name="livetally")
    c = ltutil.Client(port)
    try:
        n = feed(c, token)
        stats = ltutil.wait_stats(c, lambda s: s["totals"]["answers"] == n and
                                  s["questions"][0]["state"] == "closed" and
                                  s["questions"][1]["state"] == "open")
        CHECK.true(len(stats["countries"]) >= 2, "the feed ranks countries")
        for query in ("?transport=poll", "?screen=1&transport=poll"):
            d = dump(exe, port, query)
            status, stats, _ = c.json("GET", "/v1/stats")
            check_against_stats(d, stats, 2, "livetally %s" % query)
            CHECK.true("hidden" in d.by_id("alerts")["attrs"],
                       "livetally %s: no warnings, no banner" % query)
        screenshot(exe, port, "?screen=1&transport=poll", "dashboard.png", "1920,1080")
        screenshot(exe, port, "?transport=poll", "dashboard-phone.png", "390,844")
    finally:
        c.close()
        p.stop()


def crafted(generation, age_s=0):
    q1 = {"id": 1, "text": "<img src=x onerror=alert(1)> & \"quotes\"", "state": "closed",
          "correct": 0, "options": ["<b>bold</b>", "a,b", "Ünïcødé ✓", "x"],
          "answers": 1234567, "right": 1000000, "wrong": 234567, "right_ratio": 0.81,
          "by_answer": [1000000, 200000, 30000, 4567],
          "by_age": [{"bucket": 1, "label": "<i>kids</i>", "answers": 1234567, "right": 1000000,
                      "wrong": 234567}],
          "by_country": [{"country": "unknown", "answers": 1234567, "right": 1000000,
                          "wrong": 234567, "right_ratio": 0.81}],
          "best_country": {"country": "ie", "answers": 500, "right_ratio": 0.9}}
    return {
        "event": EV["event"], "generation": generation,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(time.time() - age_s)),
        "totals": {"answers": 1234567, "right": 1000000, "wrong": 234567},
        "questions": [q1],
        "countries": [{"country": "ie", "answers": 500, "right": 450, "wrong": 50,
                       "right_ratio": 0.9},
                      {"country": "unknown", "answers": 400, "right": 200, "wrong": 200,
                       "right_ratio": 0.5}],
        "warnings": ["store node 127.0.0.1:11211 was reset (it came back empty) at "
                     "2026-12-06T20:00:00.000Z: <b>3</b> counters restored",
                     "store node 127.0.0.1:11212 unreachable since 2026-12-06T20:01:00.000Z"],
        "ultimate_fans": [{"rank": 1, "user": "fan-<script>", "right": 5, "total_ms": 10432},
                          {"rank": 2, "user": "fan-8812", "right": 5, "total_ms": 12000}],
    }


def hand_made(exe):
    mc = ltutil.memcached()
    port = ltutil.free_port()
    p = ltutil.Proc([ltutil.binary("livetally-dashboard"), "--event", ltutil.EVENT, "--backend",
                     "memcached://127.0.0.1:%d" % mc.port, "--listen", "127.0.0.1:%d" % port,
                     "--interval", "1000", "--log-level", "warn"], port=port, log_name="dashboard")
    c = ltutil.Client(port)
    try:
        # Generated a minute ago and never replaced: the aggregator has
        # stopped, and the page must say so.
        snap = crafted(7, age_s=60)
        ltutil.publish_snapshot(mc.port, EV["event"], 7, snap)
        stats = ltutil.wait_stats(c, lambda s: s["generation"] == 7)
        d = dump(exe, port, "?transport=poll")
        check_against_stats(d, stats, 1, "hand-made", stale=True)
        age = int(d.by_id("freshness")["attrs"]["data-age-ms"])
        CHECK.true(60000 <= age < 120000, "hand-made: age of a minute-old snapshot (%d ms)" % age)
        CHECK.eq([el["tag"] for el in d.elements if el["tag"] in ("img", "b", "i", "script")
                  and not el["attrs"].get("src", "").endswith("app.js")], [],
                 "snapshot texts are rendered as text, never as markup")
        CHECK.eq(d.by_id("current-text")["text"], snap["questions"][0]["text"],
                 "hostile question text shown as is")
        # The store's warnings are a banner, as text.
        alerts = d.by_id("alerts")
        CHECK.true("hidden" not in alerts["attrs"], "hand-made: the warnings banner is shown")
        CHECK.eq(alerts["attrs"].get("data-count"), "2", "hand-made: both warnings in the banner")
        CHECK.true(snap["warnings"][0] in alerts["text"] and snap["warnings"][1] in alerts["text"],
                   "hand-made: the banner reads the warnings as they are")
        # 1234567 is shown with separators for people.
        CHECK.eq(d.by_id("total-answers")["text"].strip(), "1,234,567", "thousands separators")
        screenshot(exe, port, "?transport=poll", "dashboard-fans.png", "1280,900")
    finally:
        c.close()
        p.stop()
        mc.stop()


def main():
    exe = ltutil.find_chromium()
    if exe is None:
        print("skipped: chromium is not installed (scripts/setup.sh installs it)", flush=True)
        sys.exit(77)
    all_in_one(exe)
    hand_made(exe)
    CHECK.finish()


if __name__ == "__main__":
    main()
