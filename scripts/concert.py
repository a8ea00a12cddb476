#!/usr/bin/env python3
"""Plays a short scripted concert against a running livetally and prints the
statistics as a table. Used by scripts/demo.sh.

  concert.py --url http://127.0.0.1:8080 --event examples/1d-live.json \
             --token-file admin.token [--answers 1500] [--questions 3]
"""
import argparse
import http.client
import json
import random
import sys
import threading
import time
import urllib.parse

COUNTRIES = ["us"] * 30 + ["gb"] * 20 + ["ie"] * 8 + ["de"] * 6 + ["fr"] * 6 + ["br"] * 5 + \
    ["jp"] * 4 + ["mx"] * 4 + ["it"] * 4 + ["es"] * 4 + ["au"] * 3 + ["ca"] * 3 + [None] * 3


class Conn:
    def __init__(self, host, port):
        self.host, self.port = host, port
        self.c = http.client.HTTPConnection(host, port, timeout=10)

    def req(self, method, path, body=None, headers=None):
        for attempt in (0, 1):
            try:
                self.c.request(method, path, body=body, headers=headers or {})
                r = self.c.getresponse()
                return r.status, r.read()
            except (http.client.HTTPException, OSError):
                self.c.close()
                self.c = http.client.HTTPConnection(self.host, self.port, timeout=10)
                if attempt:
                    raise


def answers_for(q, n, rng, right_ratio):
    nopt = len(q["options"])
    for _ in range(n):
        if rng.random() < right_ratio:
            opt = q["correct"]
        else:
            opt = rng.choice([i for i in range(nopt) if i != q["correct"]])
        a = {"question": q["id"], "answer": opt, "age": min(130, max(1, int(rng.gauss(27, 10))))}
        c = rng.choice(COUNTRIES)
        if c:
            a["country"] = c
        yield a


def send(host, port, answers, results, lock):
    c = Conn(host, port)
    ok = 0
    other = {}
    for a in answers:
        st, _ = c.req("POST", "/v1/answers", json.dumps(a), {"Content-Type": "application/json"})
        if st == 202:
            ok += 1
        else:
            other[st] = other.get(st, 0) + 1
    with lock:
        results["accepted"] += ok
        for k, v in other.items():
            results["other"][k] = results["other"].get(k, 0) + v


def admin(c, token, qid, action):
    st, body = c.req("POST", "/v1/admin/questions/%d/%s" % (qid, action), b"",
                     {"Authorization": "Bearer " + token})
    if st != 204:
        sys.exit("concert: %s question %d failed: %d %s" % (action, qid, st, body[:200]))


def table(stats):
    lines = []
    t = stats["totals"]
    lines.append("event %s, snapshot %d at %s" % (stats["event"], stats["generation"],
                                                   stats["generated_at"]))
    lines.append("total answers %d: right %d, wrong %d" % (t["answers"], t["right"], t["wrong"]))
    lines.append("")
    lines.append("%-4s %-8s %8s %8s %8s %7s  %-14s %s" % ("q", "state", "answers", "right", "wrong",
                                                         "right%", "best country", "by answer"))
    for q in stats["questions"]:
        best = q.get("best_country")
        b = "%s %.0f%%" % (best["country"], best["right_ratio"] * 100) if best else "-"
        lines.append("%-4d %-8s %8d %8d %8d %6.1f%%  %-14s %s" % (
            q["id"], q["state"], q["answers"], q["right"], q["wrong"], q["right_ratio"] * 100, b,
            " ".join(str(x) for x in q["by_answer"])))
    lines.append("")
    lines.append("by age (all questions):")
    ages = {}
    for q in stats["questions"]:
        for a in q["by_age"]:
            e = ages.setdefault(a["bucket"], [a["label"], 0, 0])
            e[1] += a["right"]
            e[2] += a["wrong"]
    for k in sorted(ages):
        label, r, w = ages[k]
        lines.append("  %-10s %7d answers, %5.1f%% right" % (label, r + w,
                                                            100.0 * r / (r + w) if r + w else 0))
    if stats.get("countries"):
        lines.append("")
        lines.append("country ranking (at least the event's min_country_answers):")
        for i, c in enumerate(stats["countries"][:10], 1):
            lines.append("  %2d. %-8s %7d answers, %5.1f%% right" % (i, c["country"], c["answers"],
                                                                    c["right_ratio"] * 100))
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--event", required=True)
    ap.add_argument("--token-file", required=True)
    ap.add_argument("--answers", type=int, default=1500, help="answers per question")
    ap.add_argument("--questions", type=int, default=3)
    ap.add_argument("--connections", type=int, default=8)
    args = ap.parse_args()

    u = urllib.parse.urlparse(args.url)
    host, port = u.hostname, u.port or 80
    with open(args.event) as f:
        ev = json.load(f)
    with open(args.token_file) as f:
        token = f.read().strip()
    rng = random.Random(2026)
    c = Conn(host, port)
    results = {"accepted": 0, "other": {}}
    lock = threading.Lock()
    qs = ev["questions"][:args.questions]
    for i, q in enumerate(qs):
        admin(c, token, q["id"], "open")
        ratio = [0.72, 0.41, 0.58, 0.66, 0.35][i % 5]
        answers = list(answers_for(q, args.answers, rng, ratio))
        t0 = time.monotonic()
        chunks = [answers[k::args.connections] for k in range(args.connections)]
        ts = [threading.Thread(target=send, args=(host, port, ch, results, lock)) for ch in chunks]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        dt = time.monotonic() - t0
        admin(c, token, q["id"], "close")
        print("question %d: %d answers in %.2fs (%.0f/s), closed" % (q["id"], len(answers), dt,
                                                                     len(answers) / dt))
    want = results["accepted"]
    deadline = time.monotonic() + 15
    stats = None
    while time.monotonic() < deadline:
        st, body = c.req("GET", "/v1/stats")
        if st == 200:
            stats = json.loads(body)
            closed = all(q["state"] == "closed" for q in stats["questions"][:len(qs)])
            if stats["totals"]["answers"] >= want and closed:
                break
        time.sleep(0.2)
    if stats is None:
        sys.exit("concert: no statistics from %s/v1/stats" % args.url)
    print()
    print(table(stats))
    print()
    counted = stats["totals"]["answers"]
    print("acknowledged %d answers, the statistics count %d: %s" % (
        want, counted, "exact" if counted == want else "MISMATCH"))
    if results["other"]:
        print("non-202 responses: %s" % results["other"])
    return 0 if counted == want and not results["other"] else 1


if __name__ == "__main__":
    sys.exit(main())
