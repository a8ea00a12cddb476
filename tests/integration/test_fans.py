"""One answer per user, and the ultimate fans, across two ingest nodes
(livetally-ingest x2, -aggregate, -dashboard) on each store a live night
runs: two memcached servers (replicas=1), three memcached with replicas=2,
and a 3-master Redis Cluster:

- a user's second answer to a question is 409 duplicate_answer, on the same
  node or on the other one, and counts nothing;
- a population of 10,000 users answers 5 questions, every user's answers
  spread over both nodes; a few users answer first, one at a time, in a
  known order, so their answer times are ordered. The ultimate fans of
  /v1/stats must be exactly the expected top 10: after the first question
  closed, while the second is open (more right answers rank first), and
  at the end;
- every question's count is exact (duplicates counted once);
- every store node dies (the memcached pools): the answer is 503; they
  come back empty, the question is opened again, and the retry of the same
  answer is 202, not a duplicate (its marker never reached the store). The
  cluster case leaves this part out: a cluster back empty is a new cluster
  (redis-cli --cluster create), not a restart.
Each store prints its own checks; the script exits 1 if any failed. Every
process is stopped by PID, also on failure."""

import os
import random
import signal
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))
import ltutil  # noqa: E402

USERS = 10000
QUESTIONS = 5
# The first answers of every question, one at a time, in this order: their
# answer times, and so their totals, are ordered. w-1 is wrong on question
# 2, w-2 on question 5; s-1 skips question 4.
ELITE = ["w-1", "e-01", "w-2", "e-02", "s-1", "e-03", "e-04", "e-05", "e-06", "e-07",
         "e-08", "e-09", "e-10", "e-11", "e-12"]
WRONG = {("w-1", 2), ("w-2", 5)}
SKIP = {("s-1", 4)}
ELITE_GAP_S = 0.004
STATE_SPREAD_S = 0.8  # question states reach the other node within 0.5 s


STORES = ("memcached", "memcached replicas=2", "redis-cluster")


def run(store):
    chk = ltutil.Checker("test_fans on %s" % store)
    print("== %s" % store, flush=True)
    tmp = tempfile.mkdtemp(prefix="lt-fans-")
    event_path, ev = ltutil.write_event(tmp, n_questions=QUESTIONS, name="lt-fans",
                                        open_all=False)
    qs = {q["id"]: q for q in ev["questions"]}
    token_path, token = ltutil.write_token(tmp)
    auth = {"Authorization": "Bearer " + token}

    if store == "redis-cluster":
        mcs = ltutil.redis_cluster(3)
        backend = "redis-cluster://127.0.0.1:%d?timeout_ms=200" % mcs[0].port
    else:
        mcs = [ltutil.memcached() for _ in range(2 if store == "memcached" else 3)]
        backend = "memcached://%s?timeout_ms=200%s" % (
            ",".join("127.0.0.1:%d" % m.port for m in mcs),
            "&replicas=2" if store != "memcached" else "")
    mc_ports = [m.port for m in mcs]
    ports = [ltutil.free_port(), ltutil.free_port()]
    nodes = []
    for i, p in enumerate(ports):
        nodes.append(ltutil.Proc([ltutil.binary("livetally-ingest"), "--event", event_path,
                                  "--backend", backend, "--listen", "127.0.0.1:%d" % p,
                                  "--threads", "2", "--deadline-ms", "400",
                                  "--admin-token-file", token_path, "--log-level", "warn"],
                                 port=p, log_name="ingest%d" % i))
        ltutil.wait_ready(p)
    ltutil.Proc([ltutil.binary("livetally-aggregate"), "--event", event_path, "--backend",
                 backend, "--interval", "200", "--log-level", "warn"], log_name="aggregate")
    dp = ltutil.free_port()
    ltutil.Proc([ltutil.binary("livetally-dashboard"), "--event", event_path, "--backend",
                 backend, "--listen", "127.0.0.1:%d" % dp, "--interval", "200"], port=dp,
                log_name="dashboard")
    clients = [ltutil.Client(p) for p in ports]
    dash = ltutil.Client(dp)
    sent = {q: 0 for q in qs}  # acknowledged answers per question

    def admin(qid, action, node=0, timeout=15.0):
        deadline = time.monotonic() + timeout
        while True:
            st, _, _ = clients[node].request("POST", "/v1/admin/questions/%d/%s" % (qid, action),
                                             headers=auth)
            if st == 204 or time.monotonic() >= deadline:
                chk.eq(st, 204, "admin %s question %d" % (action, qid))
                time.sleep(STATE_SPREAD_S)
                return
            time.sleep(0.1)

    def body(qid, user, right, rng):
        q = qs[qid]
        nopt = len(q["options"])
        ans = q["correct"] if right else (q["correct"] + 1 + rng.randrange(nopt - 1)) % nopt
        a = {"question": qid, "answer": ans, "age": rng.randint(13, 80),
             "country": rng.choice(["us", "gb", "ie", "fr"])}
        if user is not None:
            a["user"] = user
        return a

    def post(node, a):
        st, b, _ = clients[node].json("POST", "/v1/answers", a)
        if st == 202:
            sent[a["question"]] += 1
        return st, (b or {}).get("error")

    def post_retrying(node, a, timeout=15.0):
        """As a client does: again after each 503 (the store's nodes may
        still be in their backoff after coming back)."""
        deadline = time.monotonic() + timeout
        while True:
            r = post(node, a)
            if r[0] != 503 or time.monotonic() >= deadline:
                return r
            time.sleep(0.3)

    def fans_of(stats):
        return [(f["user"], f["right"], f["total_ms"]) for f in stats.get("ultimate_fans", [])]

    def check_fans(what, want_users, want_right, closed):
        """Waits for a snapshot whose questions `closed` are closed and whose
        fans are want_users; then checks rights and the time order."""
        def ready(s):
            states = {q["id"]: q["state"] for q in s["questions"]}
            return (all(states[q] == "closed" for q in closed) and
                    [f[0] for f in fans_of(s)] == want_users)
        try:
            s = ltutil.wait_stats(dash, ready, timeout=15.0)
        except AssertionError:
            st, last, _ = dash.json("GET", "/v1/stats")
            last = last or {}
            chk.true(False, "%s: ultimate fans never %s with questions %s closed; last: "
                     "generation %s, states %s, fans %s" %
                     (what, want_users, closed, last.get("generation"),
                      {q["id"]: q["state"] for q in last.get("questions", [])},
                      fans_of(last)))
            return
        fans = fans_of(s)
        chk.eq([f[0] for f in fans], want_users, "%s: users in order" % what)
        chk.eq([f[1] for f in fans], want_right, "%s: right counts" % what)
        for a, b in zip(fans, fans[1:]):
            if a[1] == b[1]:
                chk.true(a[2] < b[2], "%s: total_ms ascending, %s %d before %s %d" %
                         (what, a[0], a[2], b[0], b[2]))
        chk.eq([f["rank"] for f in s["ultimate_fans"]], list(range(1, len(fans) + 1)),
               "%s: ranks" % what)

    rng = random.Random(6)
    # Every bulk user's answers: right with 0.85, each question on the node
    # (user + question) % 2, so each user's totals come back from both nodes.
    right_of = {}
    for u in range(USERS):
        for q in qs:
            right_of[(u, q)] = rng.random() < 0.85

    t_start = time.monotonic()
    for q in sorted(qs):
        admin(q, "open")
        if q == 1:
            # ---- duplicates, on the same node and across nodes ----
            d1 = body(1, "dup-1", False, rng)
            chk.eq(post(0, d1), (202, None), "dup-1 first answer")
            d1b = body(1, "dup-1", True, rng)
            chk.eq(post(1, d1b), (409, "duplicate_answer"), "dup-1 again, other node")
            chk.eq(post(0, d1b), (409, "duplicate_answer"), "dup-1 again, same node")
            d2 = body(1, "dup-2", False, rng)
            chk.eq(post(1, d2), (202, None), "dup-2 first answer")
            chk.eq(post(0, d2), (409, "duplicate_answer"), "dup-2 again, other node")
            chk.eq(post(0, body(1, "dup-3", False, rng)), (202, None), "dup-3, another user")
        # ---- the elite, one at a time, in order ----
        for i, user in enumerate(ELITE):
            if (user, q) in SKIP:
                continue
            a = body(q, user, (user, q) not in WRONG, rng)
            chk.eq(post((i + q) % 2, a), (202, None), "%s question %d" % (user, q))
            time.sleep(ELITE_GAP_S)
        if q == 2:
            # While question 2 is open: everyone of the elite but w-1 has 2
            # right answers; w-1 (fastest, but wrong) ranks below them.
            check_fans("question 2 open", [u for u in ELITE if u != "w-1"][:10], [2] * 10,
                       closed=[1])
        time.sleep(0.02)
        # ---- everyone else, both nodes at once ----
        per_node = [[], []]
        for u in range(USERS):
            per_node[(u + q) % 2].append(body(q, "fan-%05d" % u, right_of[(u, q)], rng))
        senders = [ltutil.AnswerSender(ports[n], ltutil.answer_feed(per_node[n]), conns=2,
                                       depth=32) for n in (0, 1)]
        for s in senders:
            s.start()
        for s in senders:
            s.join(60)
        statuses = {}
        for s in senders:
            for o in s.outcomes:
                statuses[(o.status, o.error)] = statuses.get((o.status, o.error), 0) + 1
        chk.eq(statuses, {(202, None): USERS}, "question %d: the population's answers" % q)
        sent[q] += statuses.get((202, None), 0)
        admin(q, "close")
        if q == 1:
            check_fans("question 1 closed", ELITE[:10], [1] * 10, closed=[1])
    check_fans("all closed", ["e-%02d" % i for i in range(1, 11)], [5] * 10,
               closed=sorted(qs))
    print("population: %d answers in %.1fs" % (sum(sent.values()), time.monotonic() - t_start),
          flush=True)

    # Every count exact: a duplicate counted nothing.
    def counts_match(s):
        return {q["id"]: q["answers"] for q in s["questions"]} == sent
    try:
        ltutil.wait_stats(dash, counts_match, timeout=15.0)
        chk.true(True, "answers per question")
    except AssertionError as e:
        chk.true(False, "answers per question %s: %s" % (sent, str(e)[:400]))
    m = [ltutil.metrics(p) for p in ports]
    chk.eq(sum(x.get("livetally_ingest_answers_duplicate_total", 0) for x in m), 3,
           "duplicates counted by the ingest nodes")
    chk.true(all(x.get("livetally_ingest_fans_publishes_total", 0) > 0 for x in m),
             "both nodes published their lists")

    # ---- a retry after the store failed is not a duplicate ----
    if store == "redis-cluster":
        return finish(chk, clients + [dash], nodes, t_start)
    admin(1, "open")
    for mc in mcs:
        mc.signal(signal.SIGKILL)
        mc.wait(10)
    retry = body(1, "retry-1", True, rng)
    chk.eq(post(0, retry), (503, "backend_unavailable"), "answer while the store is down")
    mcs = [ltutil.memcached_on(p) for p in mc_ports]  # back, empty
    admin(1, "open")  # the question state went with the store
    chk.eq(post_retrying(0, retry), (202, None), "the retry counts")
    chk.eq(post(1, retry), (409, "duplicate_answer"), "then it is a duplicate, other node")
    chk.eq(post(0, retry), (409, "duplicate_answer"), "and on the same node")
    return finish(chk, clients + [dash], nodes, t_start)


def finish(chk, clients, nodes, t_start):
    """Stops this store's processes (every one still running, by PID) and
    prints its summary line; True when its checks passed."""
    for c in clients:
        c.close()
    for n in nodes:
        chk.eq(n.stop(), 0, "ingest exits 0 on SIGTERM")
    if chk.failed:
        for p in list(ltutil._started) + list(nodes):
            lines = [l for l in p.output().splitlines() if "WARN" in l or "ERROR" in l or
                     "fans" in l]
            print("%s:\n  %s" % (os.path.basename(p.log.name), "\n  ".join(lines[-20:])))
    for p in list(ltutil._started):
        p.stop()
    print("total %.1fs" % (time.monotonic() - t_start), flush=True)
    print("%s: %d passed, %d failed" % (chk.name, chk.passed, chk.failed), flush=True)
    return chk.failed == 0 and chk.passed > 0


def main():
    results = [(store, run(store)) for store in STORES]
    failed = [store for store, ok in results if not ok]
    print("test_fans: %d of %d stores passed%s" %
          (len(results) - len(failed), len(results),
           "; failed: " + ", ".join(failed) if failed else ""), flush=True)
    ltutil._cleanup()
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
