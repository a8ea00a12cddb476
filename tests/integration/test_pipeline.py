"""End to end over real HTTP: every status code of the ingest API, admin
open/close, and every count of /v1/stats against a tally kept here, in the
all-in-one mode (embedded store) and in the split mode (livetally-ingest,
-aggregate and -dashboard on two real memcached servers)."""

import collections
import json
import os
import random
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import ltutil  # noqa: E402

EV = ltutil.load_event()
QUESTIONS = {q["id"]: q for q in EV["questions"]}
BUCKETS = EV["age_buckets"]
ISO_SAMPLE = ["us", "gb", "ie", "fr", "de", "br", "jp"]


def bucket_of(age):
    for i, b in enumerate(BUCKETS):
        if age <= b["max"]:
            return i
    raise ValueError(age)


def normalise_country(c):
    if c is None:
        return "unknown"
    c = c.lower()
    if c == "uk":
        return "gb"
    return c if c in ISO_SAMPLE else "unknown"


class Tally:
    def __init__(self):
        self.lock = threading.Lock()
        self.q = collections.defaultdict(lambda: {
            "right": 0, "wrong": 0,
            "by_answer": collections.Counter(),
            "by_age": collections.defaultdict(lambda: [0, 0]),
            "by_country": collections.defaultdict(lambda: [0, 0]),
        })

    def add(self, a):
        qid = a["question"]
        right = a["answer"] == QUESTIONS[qid]["correct"]
        with self.lock:
            t = self.q[qid]
            t["right" if right else "wrong"] += 1
            t["by_answer"][a["answer"]] += 1
            t["by_age"][bucket_of(a["age"])][0 if right else 1] += 1
            t["by_country"][normalise_country(a.get("country"))][0 if right else 1] += 1

    def total(self):
        return sum(t["right"] + t["wrong"] for t in self.q.values())


def make_answers(rng, qid, n, ie_right=False):
    out = []
    nopt = len(QUESTIONS[qid]["options"])
    for i in range(n):
        a = {"question": qid, "answer": rng.randrange(nopt), "age": rng.randint(1, 130)}
        r = rng.random()
        if r < 0.3:
            a["country"] = rng.choice(["us", "US", "Us"])
        elif r < 0.45:
            a["country"] = rng.choice(["gb", "uk", "UK"])
        elif r < 0.55:
            a["country"] = rng.choice(["zz", "usa", ""])  # counted as unknown
        elif r < 0.6:
            a["country"] = None
        elif r < 0.9:
            a["country"] = rng.choice(["fr", "de", "br", "jp"])
        # else: no country field at all
        if rng.random() < 0.2:
            a["user"] = "fan-%d" % i
        out.append(a)
    if ie_right:  # a small country that answers well: the best country
        for _ in range(120):
            out.append({"question": qid, "answer": QUESTIONS[qid]["correct"], "age": 30,
                        "country": "ie"})
        for _ in range(10):
            out.append({"question": qid, "answer": (QUESTIONS[qid]["correct"] + 1) % nopt,
                        "age": 30, "country": "ie"})
    rng.shuffle(out)
    return out


def send_all(port, answers, tally, chk, threads=4):
    """Sends over several keep-alive connections; tallies only 202s."""
    chunks = [answers[i::threads] for i in range(threads)]
    statuses = collections.Counter()
    lock = threading.Lock()

    def run(chunk):
        c = ltutil.Client(port)
        for a in chunk:
            body = {k: v for k, v in a.items()}
            status, resp, _ = c.json("POST", "/v1/answers", body)
            with lock:
                statuses[status] += 1
            if status == 202:
                tally.add(a)
        c.close()

    ts = [threading.Thread(target=run, args=(ch,)) for ch in chunks]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    chk.eq(dict(statuses), {202: len(answers)}, "every valid answer acknowledged")


def check_errors(c, chk, token):
    def post(body, headers=None, raw=False):
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        data = body if raw else json.dumps(body)
        return c.request("POST", "/v1/answers", data, h)

    def expect(resp, status, error, field=None, what=""):
        st, hdrs, data = resp
        chk.eq(st, status, "%s: status" % what)
        try:
            body = json.loads(data)
        except ValueError:
            body = None
        chk.eq(body and body.get("error"), error, "%s: error" % what)
        if field:
            chk.eq(body and body.get("field"), field, "%s: field" % what)
        chk.true(hdrs.get("content-type", "").startswith("application/json"), "%s: json" % what)

    expect(c.request("GET", "/v1/answers"), 405, "method_not_allowed", what="GET answers")
    expect(c.request("POST", "/v1/answers", '{"question":1,"answer":0,"age":20}',
                     {"Content-Type": "text/plain"}), 415, "unsupported_media_type",
           what="text/plain")
    expect(c.request("POST", "/v1/answers", '{"question":1,"answer":0,"age":20}'), 415,
           "unsupported_media_type", what="no content type")
    big = json.dumps({"question": 1, "answer": 0, "age": 20, "pad": "x" * 5000})
    expect(post(big, raw=True), 413, "body_too_large", what="5 KB body")
    for bad in ['{"question":1,', "[1,2]", "", "nul", '{"question":1}{', '"str"',
                '{"question":1,"question":1,"answer":0,"age":20}']:
        expect(post(bad, raw=True), 400, "invalid_json", what="bad json %r" % bad)
    cases = [
        ({"answer": 0, "age": 20}, "question"),
        ({"question": "1", "answer": 0, "age": 20}, "question"),
        ({"question": 1.0, "answer": 0, "age": 20}, "question"),
        ({"question": -1, "answer": 0, "age": 20}, "question"),
        ({"question": 1, "age": 20}, "answer"),
        ({"question": 1, "answer": 4, "age": 20}, "answer"),
        ({"question": 1, "answer": -1, "age": 20}, "answer"),
        ({"question": 1, "answer": True, "age": 20}, "answer"),
        ({"question": 1, "answer": 0}, "age"),
        ({"question": 1, "answer": 0, "age": 0}, "age"),
        ({"question": 1, "answer": 0, "age": 131}, "age"),
        ({"question": 1, "answer": 0, "age": 20.5}, "age"),
        ({"question": 1, "answer": 0, "age": 20, "country": 44}, "country"),
        ({"question": 1, "answer": 0, "age": 20, "user": "bad user"}, "user"),
        ({"question": 1, "answer": 0, "age": 20, "user": ""}, "user"),
        ({"question": 1, "answer": 0, "age": 20, "user": "u" * 65}, "user"),
        ({"question": 1, "answer": 0, "age": 20, "user": 7}, "user"),
    ]
    for body, field in cases:
        expect(post(body), 400, "invalid_field", field, what="invalid %s %r" % (field, body))
    expect(post({"question": 99, "answer": 0, "age": 20}), 404, "unknown_question",
           what="unknown question")
    expect(post({"question": 2, "answer": 0, "age": 20}), 409, "question_not_open",
           what="question not open")

    # admin
    expect(c.request("POST", "/v1/admin/questions/2/open"), 401, "unauthorized",
           what="admin without token")
    expect(c.request("POST", "/v1/admin/questions/2/open", "",
                     {"Authorization": "Bearer wrong"}), 401, "unauthorized",
           what="admin wrong token")
    auth = {"Authorization": "Bearer " + token}
    expect(c.request("GET", "/v1/admin/questions/2/open", None, auth), 405,
           "method_not_allowed", what="admin GET")
    expect(c.request("POST", "/v1/admin/questions/99/open", "", auth), 404, "unknown_question",
           what="admin unknown question")
    expect(c.request("POST", "/v1/admin/questions/2/close", "", auth), 409, "question_not_open",
           what="close a question never opened")
    st, _, _ = c.request("GET", "/healthz")
    chk.eq(st, 200, "healthz")
    st, _, _ = c.request("GET", "/nope")
    chk.eq(st, 404, "unknown path")


def admin(c, chk, token, qid, action):
    st, _, data = c.request("POST", "/v1/admin/questions/%d/%s" % (qid, action), "",
                            {"Authorization": "Bearer " + token})
    chk.eq(st, 204, "admin %s q%d (%s)" % (action, qid, data[:100]))


def check_stats(stats, tally, states, chk, mode):
    chk.eq(stats["event"], EV["event"], "%s: event" % mode)
    total = tally.total()
    right = sum(t["right"] for t in tally.q.values())
    chk.eq(stats["totals"], {"answers": total, "right": right, "wrong": total - right},
           "%s: totals" % mode)
    country_all = collections.defaultdict(lambda: [0, 0])
    by_id = {q["id"]: q for q in stats["questions"]}
    chk.eq([q["id"] for q in stats["questions"]], sorted(QUESTIONS), "%s: question ids" % mode)
    for qid, qdef in QUESTIONS.items():
        q = by_id[qid]
        t = tally.q[qid] if qid in tally.q else None
        r = t["right"] if t else 0
        w = t["wrong"] if t else 0
        what = "%s: q%d" % (mode, qid)
        chk.eq(q["state"], states.get(qid, "not_open"), what + " state")
        chk.eq((q["answers"], q["right"], q["wrong"]), (r + w, r, w), what + " counts")
        ratio = r / (r + w) if r + w else 0
        chk.true(abs(q["right_ratio"] - ratio) <= 0.00005 + 1e-12,
                 what + " right_ratio %s ~ %s" % (q["right_ratio"], ratio))
        chk.eq(q["by_answer"], [t["by_answer"][i] if t else 0 for i in range(len(qdef["options"]))],
               what + " by_answer")
        chk.eq([(a["bucket"], a["label"], a["right"], a["wrong"], a["answers"]) for a in q["by_age"]],
               [(i + 1, b["label"], t["by_age"][i][0] if t else 0, t["by_age"][i][1] if t else 0,
                 sum(t["by_age"][i]) if t else 0) for i, b in enumerate(BUCKETS)],
               what + " by_age")
        want_c = {}
        if t:
            for cc, (cr, cw) in t["by_country"].items():
                if cr + cw:
                    want_c[cc] = (cr, cw)
                    country_all[cc][0] += cr
                    country_all[cc][1] += cw
        chk.eq({c["country"]: (c["right"], c["wrong"]) for c in q["by_country"]}, want_c,
               what + " by_country")
        chk.true(all(c["answers"] == c["right"] + c["wrong"] for c in q["by_country"]),
                 what + " by_country answers")
        if q["state"] == "closed":
            chk.eq(q.get("correct"), qdef["correct"], what + " correct shown when closed")
        else:
            chk.true("correct" not in q, what + " correct hidden while open")
        # best country: highest ratio among countries with >= min answers, not unknown
        cands = [(cr / (cr + cw), cr + cw, cc) for cc, (cr, cw) in want_c.items()
                 if cc != "unknown" and cr + cw >= EV["min_country_answers"]]
        if cands:
            best = sorted(cands, key=lambda x: (-x[0], -x[1], x[2]))[0]
            chk.eq(q["best_country"] and q["best_country"]["country"], best[2],
                   what + " best_country")
        else:
            chk.eq(q["best_country"], None, what + " no best_country")
    ranked = [(cr / (cr + cw), cr + cw, cc) for cc, (cr, cw) in country_all.items()
              if cc != "unknown" and cr + cw >= EV["min_country_answers"]]
    ranked.sort(key=lambda x: (-x[0], -x[1], x[2]))
    chk.eq([c["country"] for c in stats["countries"]], [x[2] for x in ranked],
           "%s: countries ranking" % mode)
    chk.eq(stats.get("ultimate_fans"), [], "%s: ultimate_fans present" % mode)


def scenario(ingest_port, dash_port, token, chk, mode):
    rng = random.Random(42)
    c = ltutil.Client(ingest_port)
    d = ltutil.Client(dash_port)
    check_errors(c, chk, token)
    tally = Tally()
    states = {1: "open"}

    send_all(ingest_port, make_answers(rng, 1, 1200, ie_right=True), tally, chk)
    admin(c, chk, token, 2, "open")
    admin(c, chk, token, 2, "open")  # idempotent
    states[2] = "open"
    send_all(ingest_port, make_answers(rng, 2, 800), tally, chk)
    admin(c, chk, token, 2, "close")
    admin(c, chk, token, 2, "close")  # idempotent
    states[2] = "closed"
    st, body, _ = c.json("POST", "/v1/answers", {"question": 2, "answer": 0, "age": 20})
    chk.eq((st, body and body.get("error")), (409, "question_closed"), "%s: closed" % mode)
    admin(c, chk, token, 1, "close")
    states[1] = "closed"
    admin(c, chk, token, 3, "open")
    states[3] = "open"
    send_all(ingest_port, make_answers(rng, 3, 600), tally, chk)

    want = tally.total()
    stats = ltutil.wait_stats(
        d, lambda s: s["totals"]["answers"] >= want and
        all(q["state"] == states.get(q["id"], "not_open") for q in s["questions"]))
    check_stats(stats, tally, states, chk, mode)

    st, q2, _ = d.json("GET", "/v1/stats/questions/2")
    chk.eq(st, 200, "%s: question endpoint" % mode)
    chk.eq(q2, [q for q in stats["questions"] if q["id"] == 2][0], "%s: question entry" % mode)
    st, body, _ = d.json("GET", "/v1/stats/questions/99")
    chk.eq((st, body and body.get("error")), (404, "unknown_question"), "%s: q99" % mode)
    st, body, _ = d.json("GET", "/v1/stats/questions/abc")
    chk.eq(st, 404, "%s: question id not a number" % mode)
    st, _, _ = d.json("POST", "/v1/stats")
    chk.eq(st, 405, "%s: POST stats" % mode)
    gen1 = stats["generation"]
    later = ltutil.wait_stats(d, lambda s: s["generation"] > gen1)
    chk.eq(later["totals"], stats["totals"], "%s: totals stable once the load ends" % mode)
    st, hdrs, page = d.request("GET", "/")
    chk.eq(st, 200, "%s: page" % mode)
    chk.true(b"<html" in page and hdrs.get("content-type", "").startswith("text/html"),
             "%s: page is html" % mode)
    # One keep-alive connection that posts an answer, then reads the stats
    # (a phone page does that): the answer thread passes it on with the request.
    mixed = ltutil.Client(ingest_port)
    st, body, _ = mixed.json("POST", "/v1/answers", {"question": 3, "answer": 0, "age": 30})
    chk.eq(st, 202, "%s: answer on a fresh connection" % mode)
    tally.add({"question": 3, "answer": 0, "age": 30})
    want += 1
    if ingest_port == dash_port:
        st, body, _ = mixed.json("GET", "/v1/stats")
        chk.eq((st, body and body.get("event")), (200, EV["event"]),
               "%s: stats on the same connection after an answer" % mode)
    st, body, _ = mixed.json("GET", "/healthz")
    body = body or {}
    chk.eq((st, body.get("status"), body.get("store")), (200, "ok", "reachable"),
           "%s: healthz on the same connection (%s)" % (mode, body))
    if "store_nodes" in body:
        chk.eq(body.get("store_nodes_down"), 0, "%s: healthz: no store node down" % mode)
    st, body, _ = mixed.json("POST", "/v1/answers", {"question": 3, "answer": 1, "age": 31})
    chk.eq(st, 202, "%s: an answer after the connection moved" % mode)
    tally.add({"question": 3, "answer": 1, "age": 31})
    want += 1
    mixed.close()
    ltutil.wait_stats(d, lambda s: s["totals"]["answers"] == want)

    # Each thread publishes its figures every 250 ms: wait for the last ones.
    wanted = b'livetally_ingest_requests_total{code="202"} %d' % want
    deadline = time.monotonic() + 5
    while True:
        st, _, metrics = c.request("GET", "/metrics")
        if wanted in metrics or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    chk.eq(st, 200, "%s: metrics" % mode)
    chk.true(wanted in metrics, "%s: metrics count the 202s" % mode)
    c.close()
    d.close()


def aggregator_http(chk, port):
    """livetally-aggregate --listen: its health and metrics for a monitor."""
    status, _, body = ltutil.http_get(port, "/healthz")
    chk.eq((status, json.loads(body)), (200, {"status": "ok"}), "aggregate: /healthz")
    m = ltutil.metrics(port)
    chk.true(m.get("livetally_aggregate_passes_total", 0) >= 1,
             "aggregate: /metrics counts its passes (%s)" % m.get("livetally_aggregate_passes_total"))
    chk.true(m.get("livetally_aggregate_generation", 0) >= 1, "aggregate: /metrics has the generation")
    status, _, body = ltutil.http_get(port, "/v1/stats")
    chk.eq((status, json.loads(body).get("error")), (404, "not_found"), "aggregate: other paths 404")


def main():
    chk = ltutil.Checker("test_pipeline")
    tmp = tempfile.mkdtemp(prefix="lt-pipeline-")
    token_path, token = ltutil.write_token(tmp)

    # all-in-one on the embedded store
    port = ltutil.free_port()
    lt = ltutil.Proc([ltutil.binary("livetally"), "--event", ltutil.EVENT, "--listen",
                      "127.0.0.1:%d" % port, "--admin-token-file", token_path, "--interval",
                      "200"], port=port, log_name="livetally")
    try:
        scenario(port, port, token, chk, "all-in-one")
        ltutil.check_process_metrics(chk, port, "livetally", lt.pid)
    finally:
        chk.eq(lt.stop(), 0, "all-in-one: exit 0 on SIGTERM")
    if chk.failed:
        print(lt.output()[-3000:])

    # split binaries on two memcached servers
    m1, m2 = ltutil.memcached(), ltutil.memcached()
    backend = "memcached://127.0.0.1:%d,127.0.0.1:%d" % (m1.port, m2.port)
    ip, dp, ap = ltutil.free_port(), ltutil.free_port(), ltutil.free_port()
    ing = ltutil.Proc([ltutil.binary("livetally-ingest"), "--event", ltutil.EVENT, "--backend",
                       backend, "--listen", "127.0.0.1:%d" % ip, "--admin-token-file",
                       token_path], port=ip, log_name="ingest")
    agg = ltutil.Proc([ltutil.binary("livetally-aggregate"), "--event", ltutil.EVENT,
                       "--backend", backend, "--interval", "200", "--listen",
                       "127.0.0.1:%d" % ap], port=ap, log_name="aggregate")
    dash = ltutil.Proc([ltutil.binary("livetally-dashboard"), "--event", ltutil.EVENT,
                        "--backend", backend, "--listen", "127.0.0.1:%d" % dp, "--interval",
                        "200"], port=dp, log_name="dashboard")
    try:
        scenario(ip, dp, token, chk, "split/memcached")
        aggregator_http(chk, ap)
        for p, binary, pid in ((ip, "livetally-ingest", ing.pid), (ap, "livetally-aggregate", agg.pid),
                               (dp, "livetally-dashboard", dash.pid)):
            ltutil.check_process_metrics(chk, p, binary, pid)
            # the ingest's rule for a transfer coding on every server
            c = ltutil.RawConn(p, timeout=5)
            c.send(b"POST /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n"
                   b"3\r\nabc\r\n0\r\n\r\n")
            st, _, body = c.response()
            c.close()
            chk.eq((st, body), (501, b'{"error":"unsupported_transfer_encoding"}'),
                   "%s: Transfer-Encoding gzip is 501" % binary)
    finally:
        chk.eq(ing.stop(), 0, "ingest: exit 0 on SIGTERM")
        chk.eq(agg.stop(), 0, "aggregate: exit 0 on SIGTERM")
        chk.eq(dash.stop(), 0, "dashboard: exit 0 on SIGTERM")
        if chk.failed:
            for p in (ing, agg, dash):
                print(p.output()[-2000:])
    chk.finish()


if __name__ == "__main__":
    main()
