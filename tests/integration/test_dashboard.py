"""The dashboard over real HTTP.

All-in-one (`livetally --interval 200`, embedded store): the page and its
assets, the page's config, a Server-Sent Events client gets a snapshot with
new answers within two intervals, 200 concurrent streams while /v1/stats is
queried, /metrics through a strict Prometheus text-format parser, the CSV
report against /v1/stats.

Split (`livetally-dashboard` on a real memcached, snapshots published by
hand so every generation is known): no snapshot yet, Last-Event-ID,
heartbeats, the stream limit (503), a client that does not read is dropped
while the others go on, CSV quoting of hostile texts, and --describe-metrics
of every binary against what /metrics serves."""

import csv
import io
import json
import math
import os
import re
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import ltutil  # noqa: E402

CHECK = ltutil.Checker("test_dashboard")
EV = ltutil.load_event()
INTERVAL_MS = 200


# ---- a strict parser of the Prometheus text format (0.0.4) ------------------

NAME_RE = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def parse_value(text, where):
    if text in ("NaN", "+Inf", "-Inf"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.fullmatch(r"[-+]?(\d+\.?\d*([eE][-+]?\d+)?|\.\d+([eE][-+]?\d+)?)", text):
        raise AssertionError("%s: bad value %r" % (where, text))
    return float(text)


def parse_labels(text, where):
    labels = {}
    pos = 0
    while pos < len(text):
        m = LABEL_RE.match(text, pos)
        if not m:
            raise AssertionError("%s: bad labels %r" % (where, text))
        if m.group(1) in labels:
            raise AssertionError("%s: label %s twice" % (where, m.group(1)))
        labels[m.group(1)] = m.group(2)
        pos = m.end()
        if pos < len(text):
            if text[pos] != ",":
                raise AssertionError("%s: bad labels %r" % (where, text))
            pos += 1
    return labels


def family_of(name, types):
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and types.get(name[:-len(suffix)]) == "histogram":
            return name[:-len(suffix)]
    return name


def parse_prometheus(text):
    """Returns {family: {"type", "help", "samples": [(name, labels, value)]}};
    raises AssertionError on anything the format does not allow."""
    if text and not text.endswith("\n"):
        raise AssertionError("the exposition does not end with a newline")
    fams = {}
    types = {}
    order = []
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = "line %d" % n
        if line == "":
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                if not NAME_RE.match(name):
                    raise AssertionError("%s: bad name %r" % (where, name))
                fam = fams.setdefault(name, {"type": None, "help": None, "samples": []})
                if fam["samples"]:
                    raise AssertionError("%s: %s after samples of %s" % (where, parts[1], name))
                key = parts[1].lower()
                if fam[key] is not None:
                    raise AssertionError("%s: second %s for %s" % (where, parts[1], name))
                value = parts[3] if len(parts) > 3 else ""
                if key == "type":
                    if value not in TYPES:
                        raise AssertionError("%s: unknown type %r" % (where, value))
                    types[name] = value
                fam[key] = value
                if not order or order[-1] != name:
                    if name in order:
                        raise AssertionError("%s: family %s is split" % (where, name))
                    order.append(name)
            continue
        m = re.fullmatch(r"([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)( -?\d+)?", line)
        if not m:
            raise AssertionError("%s: not a sample: %r" % (where, line))
        name = m.group(1)
        labels = parse_labels(m.group(3) or "", where)
        value = parse_value(m.group(4), where)
        fam_name = family_of(name, types)
        fam = fams.setdefault(fam_name, {"type": None, "help": None, "samples": []})
        if not order or order[-1] != fam_name:
            if fam_name in order:
                raise AssertionError("%s: family %s is split" % (where, fam_name))
            order.append(fam_name)
        fam["samples"].append((name, labels, value))
    for name, fam in fams.items():
        series = set()
        for sname, labels, _ in fam["samples"]:
            key = (sname, tuple(sorted(labels.items())))
            if key in series:
                raise AssertionError("%s: series %r twice" % (name, key))
            series.add(key)
        if fam["type"] == "counter":
            for sname, labels, value in fam["samples"]:
                if value < 0 or math.isnan(value):
                    raise AssertionError("counter %s is %r" % (name, value))
        if fam["type"] == "histogram":
            check_histogram(name, fam["samples"])
    return fams


def check_histogram(name, samples):
    groups = {}
    for sname, labels, value in samples:
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        g = groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        if sname == name + "_bucket":
            if "le" not in labels:
                raise AssertionError("%s: bucket without le" % name)
            g["buckets"].append((parse_value(labels["le"], name), value))
        elif sname == name + "_sum":
            g["sum"] = value
        elif sname == name + "_count":
            g["count"] = value
        else:
            raise AssertionError("%s: stray sample %s" % (name, sname))
    for rest, g in groups.items():
        les = [le for le, _ in g["buckets"]]
        if not les or les[-1] != float("inf"):
            raise AssertionError("%s%s: no +Inf bucket last" % (name, rest))
        if les != sorted(les) or len(set(les)) != len(les):
            raise AssertionError("%s%s: le not increasing" % (name, rest))
        counts = [v for _, v in g["buckets"]]
        if any(b < a for a, b in zip(counts, counts[1:])):
            raise AssertionError("%s%s: buckets not cumulative" % (name, rest))
        if g["count"] is None or g["sum"] is None:
            raise AssertionError("%s%s: _sum or _count missing" % (name, rest))
        if counts[-1] != g["count"]:
            raise AssertionError("%s%s: +Inf bucket %r != _count %r" % (name, rest, counts[-1],
                                                                         g["count"]))
        if g["sum"] < 0:
            raise AssertionError("%s%s: negative _sum" % (name, rest))


def self_test_parser():
    """The parser must be able to fail: bad inputs are refused."""
    good = ("# HELP a_total A\n# TYPE a_total counter\na_total{x=\"1\"} 3\n"
            "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_bucket{le=\"+Inf\"} 2\nh_sum 0.5\n"
            "h_count 2\n")
    parse_prometheus(good)
    bad = [
        good.replace("h_count 2", "h_count 3"),                      # +Inf != count
        good.replace('h_bucket{le="1"} 1', 'h_bucket{le="1"} 5'),    # not cumulative
        good.replace('h_bucket{le="+Inf"} 2\n', ""),                  # no +Inf
        good.replace("a_total{x=\"1\"} 3", "a_total{x=1} 3"),          # unquoted label
        good.replace("a_total{x=\"1\"} 3", "a_total{x=\"1\"} three"),  # bad value
        good.replace("a_total{x=\"1\"} 3", "a_total{x=\"1\"} -3"),     # negative counter
        good + "a_total{x=\"2\"} 1\n",                                 # family split
        good + "# TYPE z wat\n",                                       # unknown type
        good.rstrip("\n"),                                             # no final newline
        good + "a_total{x=\"1\"} 3\n".replace("a_total", "h_sum"),     # duplicate series
    ]
    for i, text in enumerate(bad):
        try:
            parse_prometheus(text)
        except AssertionError:
            CHECK.true(True, "parser refuses bad input %d" % i)
        else:
            CHECK.true(False, "parser refuses bad input %d" % i)


def metrics(c):
    status, hdrs, body = c.request("GET", "/metrics")
    CHECK.eq(status, 200, "/metrics status")
    CHECK.true(hdrs.get("content-type", "").startswith("text/plain; version=0.0.4"),
               "/metrics content type")
    try:
        return parse_prometheus(body.decode())
    except AssertionError as e:
        CHECK.true(False, "/metrics parses: %s" % e)
        return {}


def value_of(fams, name, labels=None):
    for fam in fams.values():
        for sname, l, v in fam["samples"]:
            if sname == name and (labels is None or l == labels):
                return v
    return None


def describe(binary):
    p = subprocess.run([ltutil.binary(binary), "--describe-metrics"], capture_output=True,
                       text=True, timeout=10)
    CHECK.eq(p.returncode, 0, "%s --describe-metrics exit" % binary)
    out = {}
    for line in p.stdout.splitlines():
        parts = line.split("\t")
        CHECK.eq(len(parts), 3, "%s describe line %r has name, type, help" % (binary, line))
        if len(parts) != 3:
            continue
        name, typ, help_text = parts
        CHECK.true(NAME_RE.match(name), "%s describes a valid name %r" % (binary, name))
        CHECK.true(typ in ("counter", "gauge", "histogram"), "%s type of %s" % (binary, name))
        CHECK.true(help_text.strip() != "", "%s help of %s" % (binary, name))
        CHECK.true(name not in out, "%s describes %s once" % (binary, name))
        if typ == "counter":
            CHECK.true(name.endswith("_total"), "counter %s ends in _total" % name)
        out[name] = typ
    return out


def check_described(fams, described, prefixes, who):
    served = {n: f["type"] for n, f in fams.items() if n.startswith(prefixes)}
    CHECK.eq(sorted(served), sorted(n for n in described if n.startswith(prefixes)),
             "%s: /metrics families == --describe-metrics" % who)
    for n, t in served.items():
        CHECK.eq(t, described.get(n), "%s: type of %s" % (who, n))


# ---- all-in-one ------------------------------------------------------------

def check_page(c):
    for path in ("/", "/?screen=1", "/index.html", "/?screen=1&transport=poll"):
        status, hdrs, body = c.request("GET", path)
        CHECK.eq(status, 200, "GET %s" % path)
        CHECK.eq(hdrs.get("content-type"), "text/html; charset=utf-8", "%s content type" % path)
        text = body.decode()
        CHECK.true('<script src="app.js" defer></script>' in text, "%s loads app.js" % path)
        CHECK.true('<link rel="stylesheet" href="style.css">' in text, "%s loads style.css" % path)
        CHECK.true('id="current"' in text and 'id="freshness"' in text, "%s has the cards" % path)
        CHECK.true("http://" not in text and "https://" not in text,
                   "%s fetches nothing from elsewhere" % path)
        CHECK.true("default-src 'none'" in hdrs.get("content-security-policy", ""),
                   "%s CSP keeps the page self-contained" % path)
    status, hdrs, _ = c.request("GET", "/")
    etag = hdrs.get("etag")
    CHECK.true(etag and etag.startswith('"'), "page has an ETag")
    status, _, body = c.request("GET", "/", headers={"If-None-Match": etag})
    CHECK.eq((status, body), (304, b""), "unchanged page: 304")
    status, _, body = c.request("GET", "/", headers={"If-None-Match": '"other"'})
    CHECK.eq(status, 200, "changed page: 200")
    for path, ctype, marker in (("/app.js", "text/javascript; charset=utf-8", "EventSource"),
                                ("/style.css", "text/css; charset=utf-8", "--right")):
        status, hdrs, body = c.request("GET", path)
        CHECK.eq(status, 200, "GET %s" % path)
        CHECK.eq(hdrs.get("content-type"), ctype, "%s content type" % path)
        CHECK.eq(hdrs.get("x-content-type-options"), "nosniff", "%s nosniff" % path)
        CHECK.true(marker.encode() in body, "%s content" % path)
        CHECK.true(b"http://" not in body and b"https://" not in body, "%s is self-contained" % path)
    status, hdrs, _ = c.request("HEAD", "/app.js")
    CHECK.eq(status, 200, "HEAD /app.js")
    for path in ("/", "/app.js", "/v1/stats/stream", "/v1/stats.csv", "/v1/dashboard/config"):
        status, hdrs, body = c.request("POST", path, body=b"{}",
                                       headers={"Content-Type": "application/json"})
        CHECK.eq((status, json.loads(body).get("error")), (405, "method_not_allowed"),
                 "POST %s" % path)
    status, _, _ = c.request("GET", "/app.js.map")
    CHECK.eq(status, 404, "unknown asset")


def check_config(c):
    before = time.time() * 1000
    status, body, _ = c.json("GET", "/v1/dashboard/config")
    after = time.time() * 1000
    CHECK.eq(status, 200, "config status")
    CHECK.eq(body.get("interval_ms"), INTERVAL_MS, "config interval_ms")
    CHECK.eq(body.get("stale_after_ms"), 3 * INTERVAL_MS, "config stale_after_ms")
    CHECK.eq(body.get("event"), EV["event"], "config event")
    CHECK.eq(body.get("stream"), "v1/stats/stream", "config stream path")
    CHECK.true(before - 1000 <= body.get("server_time_ms", 0) <= after + 1000,
               "config server_time_ms is now")


def post(c, answers):
    for a in answers:
        status, body, _ = c.json("POST", "/v1/answers", a)
        if status != 202:
            raise AssertionError("answer %r: %d %r" % (a, status, body))


def answer(q, k, age=30, country="us"):
    return {"question": q, "answer": k, "age": age, "country": country}


def check_sse_latency(port, c, gzip=False):
    s = ltutil.SseStream(port, headers={"Accept-Encoding": "gzip, deflate"} if gzip else None)
    CHECK.eq(s.headers.get("content-encoding"), "gzip" if gzip else None,
             "stream gzip'd only when the client takes gzip (%s)" % gzip)
    CHECK.eq(s.headers.get("vary"), "Accept-Encoding", "stream varies on Accept-Encoding")
    CHECK.eq(s.status, 200, "stream status")
    CHECK.eq(s.headers.get("content-type"), "text/event-stream", "stream content type")
    CHECK.eq(s.headers.get("cache-control"), "no-store", "stream not cached")
    ev = s.next_event(timeout=5)
    CHECK.true(ev is not None, "a stream starts with the latest snapshot")
    if ev is None:
        return
    CHECK.eq(s.retry, 1000, "stream tells EventSource its retry delay")
    CHECK.eq(ev["event"], "stats", "event name")
    snap = json.loads(ev["data"])
    CHECK.eq(ev["id"], str(snap["generation"]), "event id is the generation")
    CHECK.eq(ev["data_lines"], 1, "snapshot on one data line")
    last_id = int(ev["id"])
    total = snap["totals"]["answers"]
    worst = 0.0
    for trial in range(3):
        batch = [answer(1, (trial + i) % 4, 20 + i) for i in range(5)]
        post(c, batch)
        acked = time.monotonic()
        want = total + len(batch)
        got = None
        while True:
            ev = s.next_event(timeout=3)
            if ev is None:
                break
            CHECK.true(int(ev["id"]) > last_id, "event ids increase")
            last_id = int(ev["id"])
            snap = json.loads(ev["data"])
            if snap["totals"]["answers"] >= want:
                got = time.monotonic()
                break
        CHECK.true(got is not None, "trial %d: the new answers arrive on the stream" % trial)
        if got is None:
            break
        CHECK.eq(snap["totals"]["answers"], want, "trial %d: stream total" % trial)
        took = got - acked
        worst = max(worst, took)
        CHECK.true(took <= 2 * INTERVAL_MS / 1000.0,
                   "trial %d: event within two intervals (%.0f ms)" % (trial, took * 1000))
        total = want
    print("sse%s: new answers on the stream within %.0f ms at most (interval %d ms)" %
          (" gzip" if gzip else "", worst * 1000, INTERVAL_MS), flush=True)
    s.close()
    if gzip:
        return
    # HTTP/1.0: no chunking, the stream still works.
    s10 = ltutil.SseStream(port, http10=True)
    ev = s10.next_event(timeout=5)
    CHECK.true(ev is not None and ev["event"] == "stats", "HTTP/1.0 stream gets events")
    CHECK.true(not s10.chunked, "HTTP/1.0 stream is not chunked")
    s10.close()
    # HEAD: headers only.
    status, hdrs, body = c.request("HEAD", "/v1/stats/stream")
    CHECK.eq((status, hdrs.get("content-type"), body), (200, "text/event-stream", b""),
             "HEAD /v1/stats/stream")


def check_many_streams(port, c, n=200):
    streams = []
    try:
        for _ in range(n):
            streams.append(ltutil.SseStream(port, timeout=15))
        CHECK.eq(sum(s.status == 200 for s in streams), n, "%d streams accepted" % n)
        first = [s.next_event(timeout=10) for s in streams]
        CHECK.eq(sum(e is not None for e in first), n, "every stream got the snapshot")
        # The other endpoints keep answering while the streams are open.
        ok = 0
        for _ in range(100):
            status, body, _ = c.json("GET", "/v1/stats")
            ok += status == 200 and "totals" in body
        CHECK.eq(ok, 100, "/v1/stats answers with %d streams open" % n)
        fams = metrics(c)
        CHECK.eq(value_of(fams, "livetally_dashboard_streams"), float(n), "streams gauge")
        status, body, _ = c.json("GET", "/v1/stats")
        want = body["totals"]["answers"] + 1
        post(c, [answer(1, 2)])
        got = 0
        for s in streams:
            while True:
                ev = s.next_event(timeout=5)
                if ev is None:
                    break
                if json.loads(ev["data"])["totals"]["answers"] >= want:
                    got += 1
                    break
        CHECK.eq(got, n, "every one of %d streams got the new answer" % n)
    finally:
        for s in streams:
            s.close()
    deadline = time.monotonic() + 10
    gauge = None
    while time.monotonic() < deadline:
        gauge = value_of(metrics(c), "livetally_dashboard_streams")
        if gauge == 0:
            break
        time.sleep(0.1)
    CHECK.eq(gauge, 0.0, "closed streams are noticed and freed")


def check_csv_matches(c):
    # The snapshot changes every interval: take a CSV and a JSON of the same generation.
    for _ in range(50):
        status, hdrs, body = c.request("GET", "/v1/stats.csv")
        gen_csv = hdrs.get("x-livetally-generation")
        st2, h2, jbody = c.request("GET", "/v1/stats")
        if status == 200 and st2 == 200 and gen_csv == h2.get("x-livetally-generation"):
            break
    CHECK.eq(status, 200, "CSV status")
    CHECK.eq(hdrs.get("content-type"), "text/csv; charset=utf-8; header=present", "CSV type")
    CHECK.eq(hdrs.get("content-disposition"),
             'attachment; filename="%s-stats-%s.csv"' % (EV["event"], gen_csv),
             "CSV is an attachment named after the event and generation")
    stats = json.loads(jbody)
    CHECK.eq(str(stats["generation"]), gen_csv, "CSV and JSON of the same generation")
    compare_csv(body.decode("utf-8"), stats, "all-in-one")


def compare_csv(text, stats, who):
    rows = list(csv.reader(io.StringIO(text, newline="")))
    CHECK.eq(rows[0], ["question", "state", "dimension", "key", "label", "answers", "right",
                       "wrong"], "%s: CSV header" % who)
    got = {}
    for r in rows[1:]:
        CHECK.eq(len(r), 8, "%s: CSV row width %r" % (who, r))
        got[(int(r[0]), r[2], r[3])] = r
    want = {}
    for q in stats["questions"]:
        qid = q["id"]
        want[(qid, "total", "")] = [str(qid), q["state"], "total", "", q.get("text", ""),
                                    str(q["answers"]), str(q["right"]), str(q["wrong"])]
        for a in q["by_age"]:
            want[(qid, "age", str(a["bucket"]))] = [
                str(qid), q["state"], "age", str(a["bucket"]), a["label"], str(a["answers"]),
                str(a["right"]), str(a["wrong"])]
        for ct in q["by_country"]:
            want[(qid, "country", ct["country"])] = [
                str(qid), q["state"], "country", ct["country"], "", str(ct["answers"]),
                str(ct["right"]), str(ct["wrong"])]
        for k, n in enumerate(q["by_answer"]):
            if "correct" in q:
                right, wrong = (str(n), "0") if k == q["correct"] else ("0", str(n))
            else:
                right, wrong = "", ""
            want[(qid, "option", str(k))] = [str(qid), q["state"], "option", str(k),
                                             q["options"][k], str(n), right, wrong]
    CHECK.eq(len(rows) - 1, len(want), "%s: CSV row count" % who)
    for key, w in want.items():
        CHECK.eq(got.get(key), w, "%s: CSV row %r" % (who, key))


def check_describe_and_metrics_all_in_one(c):
    fams = metrics(c)
    CHECK.true(len(fams) > 10, "livetally /metrics has families")
    status, body, _ = c.json("GET", "/v1/stats")
    gen = body["generation"]
    served = value_of(fams, "livetally_dashboard_snapshot_generation")
    CHECK.true(served is not None and gen - 3 <= served <= gen + 3,
               "generation metric follows the snapshot")
    age = value_of(fams, "livetally_dashboard_snapshot_age_seconds")
    CHECK.true(age is not None and 0 <= age < 2, "snapshot age metric is small (%r)" % age)
    CHECK.true(value_of(fams, "livetally_aggregate_keys_read") > 0, "keys read metric")
    hist = fams.get("livetally_dashboard_request_duration_seconds", {})
    CHECK.eq(hist.get("type"), "histogram", "request duration is a histogram")
    CHECK.true(value_of(fams, "livetally_dashboard_request_duration_seconds_count",
                        {"path": "/v1/stats"}) >= 100, "duration histogram counts /v1/stats")
    CHECK.true(value_of(fams, "livetally_dashboard_requests_total",
                        {"path": "/v1/stats", "code": "200"}) >= 100, "requests by path and code")
    CHECK.true(value_of(fams, "livetally_aggregate_pass_duration_seconds_count") > 0,
               "pass duration histogram")
    CHECK.true(value_of(fams, "livetally_dashboard_streams_closed_total") >= 200,
               "closed streams counted")
    described = describe("livetally")
    check_described(fams, described, ("livetally_dashboard_", "livetally_aggregate_"), "livetally")


def all_in_one():
    tmp = tempfile.mkdtemp(prefix="lt-dash-")
    token_path, token = ltutil.write_token(tmp)
    port = ltutil.free_port()
    p = ltutil.Proc([ltutil.binary("livetally"), "--event", ltutil.EVENT, "--listen",
                     "127.0.0.1:%d" % port, "--admin-token-file", token_path, "--interval",
                     str(INTERVAL_MS), "--log-level", "warn"], port=port, log_name="livetally")
    c = ltutil.Client(port)
    try:
        ltutil.wait_stats(c, lambda s: s["generation"] >= 1)
        check_page(c)
        check_config(c)
        post(c, [answer(1, k % 4, 10 + k, ["us", "gb", "ie", None][k % 4]) for k in range(40)])
        ltutil.wait_stats(c, lambda s: s["totals"]["answers"] == 40)
        check_sse_latency(port, c)
        check_sse_latency(port, c, gzip=True)
        check_many_streams(port, c)
        # Close question 1 so that the CSV carries the per-option split.
        status, _, _ = c.request("POST", "/v1/admin/questions/1/close", body=b"",
                                 headers={"Authorization": "Bearer " + token})
        CHECK.eq(status, 204, "close question 1")
        ltutil.wait_stats(c, lambda s: s["questions"][0]["state"] == "closed")
        check_csv_matches(c)
        check_describe_and_metrics_all_in_one(c)
    finally:
        c.close()
        code = p.stop()
        CHECK.eq(code, 0, "livetally exits 0 on SIGTERM with streams served")
        if code != 0:
            print("livetally's output, last lines:\n" + "\n".join(p.output().splitlines()[-60:]),
                  flush=True)


# ---- split, hand-made snapshots ---------------------------------------------

def crafted(generation, padding=0):
    """A snapshot with everything the page and the report must survive."""
    q1 = {
        "id": 1, "text": 'Say "hi", <b>then</b>\nleave', "state": "closed", "correct": 1,
        "options": ["a,b", "<script>alert(1)</script>", 'quote "q"', "Ünïcødé ✓"],
        "answers": 100 + generation, "right": 60, "wrong": 40 + generation,
        "right_ratio": 0.6, "by_answer": [10, 60, 20, 10 + generation],
        "by_age": [{"bucket": 1, "label": "under 18", "answers": 30, "right": 20, "wrong": 10},
                   {"bucket": 2, "label": "18-24", "answers": 30, "right": 20, "wrong": 10},
                   {"bucket": 3, "label": "25+", "answers": 40 + generation, "right": 20,
                    "wrong": 20 + generation}],
        "by_country": [{"country": "us", "answers": 70 + generation, "right": 40,
                        "wrong": 30 + generation, "right_ratio": 0.5},
                       {"country": "unknown", "answers": 30, "right": 20, "wrong": 10,
                        "right_ratio": 0.6667}],
        "best_country": {"country": "us", "answers": 70 + generation, "right_ratio": 0.5},
    }
    q2 = {"id": 2, "text": "Open one", "state": "open", "options": ["x", "y", "z"],
          "answers": 3, "right": 1, "wrong": 2, "right_ratio": 0.3333, "by_answer": [1, 1, 1],
          "by_age": [], "by_country": [], "best_country": None}
    snap = {
        "event": EV["event"], "generation": generation,
        "generated_at": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "totals": {"answers": q1["answers"] + 3, "right": 61, "wrong": q1["wrong"] + 2},
        "questions": [q1, q2],
        "countries": [{"country": "us", "answers": 70 + generation, "right": 40,
                       "wrong": 30 + generation, "right_ratio": 0.5}],
        "ultimate_fans": [{"rank": 1, "user": "fan-<1>", "right": 2, "total_ms": 5000}],
        "warnings": [], "checks": {"ok": True, "mismatch_count": 0, "mismatches": []},
    }
    if padding:
        snap["padding"] = "p" * padding
    return snap


def wait_generation(c, gen, timeout=10):
    return ltutil.wait_stats(c, lambda s: s["generation"] >= gen, timeout=timeout)


def check_slow_client_dropped(port, c, mc_port, first_gen):
    # A client that never reads, with a tiny receive window: once the kernel
    # buffers are full its unsent bytes grow in the server until the bound.
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.connect(("127.0.0.1", port))
    slow.sendall(b"GET /v1/stats/stream HTTP/1.1\r\nHost: x\r\n\r\n")
    reader = ltutil.SseStream(port)
    gen = first_gen
    dropped = 0
    big = 2 * 1024 * 1024
    try:
        for _ in range(30):
            gen += 1
            ltutil.publish_snapshot(mc_port, EV["event"], gen, crafted(gen, padding=big))
            # The reading client keeps up with every big snapshot.
            while True:
                ev = reader.next_event(timeout=10)
                if ev is None or int(ev["id"]) >= gen:
                    break
            dropped = value_of(metrics(c), "livetally_dashboard_streams_dropped_total") or 0
            if dropped >= 1:
                break
        CHECK.eq(dropped, 1.0, "a client that does not read is dropped")
        gen += 1
        ltutil.publish_snapshot(mc_port, EV["event"], gen, crafted(gen))
        ev = reader.next_event(timeout=10)
        while ev is not None and int(ev["id"]) < gen:
            ev = reader.next_event(timeout=10)
        CHECK.true(ev is not None and int(ev["id"]) == gen,
                   "the reading client goes on after the slow one was dropped")
        t0 = time.monotonic()
        status, _, _ = c.request("GET", "/v1/stats")
        CHECK.eq(status, 200, "/v1/stats after the drop")
        CHECK.true(time.monotonic() - t0 < 1.0, "/v1/stats is fast after the drop")
    finally:
        slow.close()
        reader.close()
    return gen


def split():
    mc = ltutil.memcached()
    port = ltutil.free_port()
    p = ltutil.Proc([ltutil.binary("livetally-dashboard"), "--event", ltutil.EVENT, "--backend",
                     "memcached://127.0.0.1:%d" % mc.port, "--listen", "127.0.0.1:%d" % port,
                     "--interval", str(INTERVAL_MS), "--max-streams", "5", "--heartbeat-ms",
                     "300", "--log-level", "warn"], port=port, log_name="dashboard")
    c = ltutil.Client(port)
    streams = []
    try:
        status, body, _ = c.json("GET", "/v1/stats")
        CHECK.eq((status, body), (503, {"error": "no_snapshot_yet"}), "no snapshot yet")
        status, body, _ = c.json("GET", "/v1/stats.csv")
        CHECK.eq((status, body), (503, {"error": "no_snapshot_yet"}), "no CSV yet")
        status, body, _ = c.json("GET", "/healthz")
        CHECK.eq((status, body), (503, {"status": "no_snapshot"}),
                 "/healthz before the first snapshot: 503, and why")
        early = ltutil.SseStream(port)
        streams.append(early)
        CHECK.eq(early.status, 200, "a stream opens before the first snapshot")
        CHECK.eq(early.next_event(timeout=0.5), None, "no event before the first snapshot")

        ltutil.publish_snapshot(mc.port, EV["event"], 100, crafted(100))
        ev = early.next_event(timeout=5)
        CHECK.true(ev is not None and ev["id"] == "100", "the first snapshot is pushed")
        wait_generation(c, 100)
        status, body, _ = c.json("GET", "/healthz")
        CHECK.eq((status, body), (200, {"status": "ok"}), "/healthz with a fresh snapshot")

        resumed = ltutil.SseStream(port, headers={"Last-Event-ID": "100"})
        streams.append(resumed)
        CHECK.eq(resumed.next_event(timeout=1.0), None,
                 "Last-Event-ID = current generation: nothing resent")
        CHECK.true("heartbeat" in resumed.comments, "heartbeat comments every --heartbeat-ms")
        behind = ltutil.SseStream(port, headers={"Last-Event-ID": "99"})
        streams.append(behind)
        ev = behind.next_event(timeout=2)
        CHECK.true(ev is not None and ev["id"] == "100", "Last-Event-ID behind: current sent")
        junk = ltutil.SseStream(port, headers={"Last-Event-ID": "x100"})
        streams.append(junk)
        ev = junk.next_event(timeout=2)
        CHECK.true(ev is not None and ev["id"] == "100", "bad Last-Event-ID: current sent")

        ltutil.publish_snapshot(mc.port, EV["event"], 101, crafted(101))
        for name, s in (("resumed", resumed), ("behind", behind), ("early", early)):
            ev = s.next_event(timeout=5)
            CHECK.true(ev is not None and ev["id"] == "101", "%s stream gets generation 101" % name)
        wait_generation(c, 101)

        # Five are connected (the limit): the sixth is refused.
        streams.append(ltutil.SseStream(port))
        CHECK.eq(streams[-1].status, 200, "fifth stream accepted")
        refused = ltutil.SseStream(port)
        CHECK.eq(refused.status, 503, "past --max-streams: 503")
        CHECK.eq(json.loads(refused.error_body), {"error": "too_many_streams"},
                 "past --max-streams: the error")
        CHECK.true(refused.headers.get("retry-after") is not None, "503 has Retry-After")
        refused.close()
        fams = metrics(c)
        CHECK.eq(value_of(fams, "livetally_dashboard_streams_rejected_total"), 1.0,
                 "rejected stream counted")
        CHECK.eq(value_of(fams, "livetally_dashboard_streams"), 5.0, "five streams connected")
        CHECK.eq(value_of(fams, "livetally_dashboard_snapshot_generation"), 101.0,
                 "generation metric")
        for s in streams:
            s.close()
        streams = []

        # The report of hostile texts, and the question entries.
        status, hdrs, body = c.request("GET", "/v1/stats.csv")
        stats = ltutil.wait_stats(c, lambda s: s["generation"] == 101)
        compare_csv(body.decode("utf-8"), stats, "crafted")
        CHECK.true(body.startswith(b"question,") and b"\r\n" in body, "CSV lines end in CRLF")
        status, q, _ = c.json("GET", "/v1/stats/questions/1")
        CHECK.eq(q, stats["questions"][0], "question entry equals the snapshot's")
        status, body, _ = c.json("GET", "/v1/stats/questions/9")
        CHECK.eq(status, 404, "a question of the event missing from the snapshot: 404")

        # A snapshot that does not parse is not served; the last good one stays.
        ltutil.publish_snapshot(mc.port, EV["event"], 102, b"{not json")
        deadline = time.monotonic() + 5
        errors = 0
        while time.monotonic() < deadline and not errors:
            errors = value_of(metrics(c), "livetally_dashboard_store_errors_total")
            time.sleep(0.05)
        CHECK.true(errors >= 1, "an invalid snapshot counts as a store error")
        status, body, _ = c.json("GET", "/v1/stats")
        CHECK.eq(body.get("generation"), 101, "the last good snapshot is still served")
        # No new generation for 3 intervals (what the page warns at): no
        # aggregator publishes, so the statistics served are not live.
        time.sleep(3 * INTERVAL_MS / 1000.0 + 0.3)
        status, body, _ = c.json("GET", "/healthz")
        CHECK.true(status == 503 and body.get("status") == "stale" and
                   body.get("unchanged_ms", 0) > 3 * INTERVAL_MS and
                   body.get("stale_after_ms") == 3 * INTERVAL_MS,
                   "/healthz 503 stale, with how long unchanged (%s %s)" % (status, body))

        # A client that does not read cannot hold the server's memory.
        check_slow_client_dropped(port, c, mc.port, 102)
        status, body, _ = c.json("GET", "/healthz")
        CHECK.eq((status, body), (200, {"status": "ok"}),
                 "/healthz 200 again once snapshots arrive")

        fams = metrics(c)
        check_described(fams, describe("livetally-dashboard"), ("livetally_",),
                        "livetally-dashboard")
        CHECK.true(value_of(fams, "livetally_dashboard_requests_total",
                            {"path": "/metrics", "code": "200"}) >= 1, "/metrics counts itself")
        status, _, _ = c.request("GET", "/no/such/path")
        CHECK.eq(status, 404, "unknown path")
        CHECK.true(value_of(metrics(c), "livetally_dashboard_requests_total",
                            {"path": "other", "code": "404"}) >= 1, "404s counted as other")

        # An older head (a replica that missed writes) is not served at once;
        # one that stays (the store started over) is taken, not ignored forever.
        ltutil.publish_snapshot(mc.port, EV["event"], 50, crafted(50))
        ltutil.wait_stats(c, lambda s: s["generation"] == 50, timeout=10)
        CHECK.eq(c.json("GET", "/v1/stats")[1]["generation"], 50,
                 "a store that started over is followed")
    finally:
        for s in streams:
            s.close()
        c.close()
        CHECK.eq(p.stop(), 0, "livetally-dashboard exits 0 on SIGTERM")
        mc.stop()


def flags():
    described = describe("livetally-aggregate")
    CHECK.true("livetally_aggregate_pass_duration_seconds" in described,
               "livetally-aggregate describes its pass histogram")
    for binary, args in (("livetally-dashboard", ["--max-streams", "0"]),
                         ("livetally-dashboard", ["--heartbeat-ms", "5"]),
                         ("livetally", ["--max-streams", "x"]),
                         ("livetally", ["--heartbeat-ms", "700000"])):
        p = subprocess.run([ltutil.binary(binary)] + args, capture_output=True, text=True,
                           timeout=10)
        CHECK.eq(p.returncode, 2, "%s %s exits 2" % (binary, " ".join(args)))
        CHECK.eq(len(p.stderr.strip().splitlines()), 1, "%s %s: one line" % (binary, args))


def main():
    self_test_parser()
    flags()
    all_in_one()
    split()
    CHECK.finish()


if __name__ == "__main__":
    main()
