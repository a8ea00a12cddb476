"""deploy/nginx-stats-cache.conf, as shipped (only its addresses and cache
directory moved to the test's), in front of a real livetally-dashboard:
an audience polling /v1/stats through nginx reaches the dashboard as about
one request per aggregation interval per representation (issue 15: "N
polls/s reach the dashboard as ~1 request per interval"), every poll gets
the snapshot, a new snapshot is served within the cache's max-age of its
publication, and the Server-Sent Events stream passes through unbuffered.

The dashboard's own /metrics (livetally_dashboard_requests_total of
/v1/stats) counts what reached it."""

import gzip
import json
import os
import re
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(__file__))
import ltutil  # noqa: E402
import test_stats_caching  # noqa: E402

CHECK = ltutil.Checker("test_nginx_cache")
EV = ltutil.load_event()
INTERVAL_MS = 1000
POLL_SECONDS = 4.0
CLIENTS = 6


def dashboard_stats_requests(port):
    m = ltutil.metrics(port)
    return sum(v for k, v in m.items()
               if k.startswith('livetally_dashboard_requests_total{path="/v1/stats"'))


def start_nginx(tmp, nginx_port, dash_port):
    with open(os.path.join(ltutil.SRC, "deploy", "nginx-stats-cache.conf")) as f:
        text = f.read()
    cache = os.path.join(tmp, "cache")
    for old, new in (("/var/cache/nginx/livetally", cache),
                     ("server 127.0.0.1:8081;", "server 127.0.0.1:%d;" % dash_port),
                     ("listen 80;", "listen 127.0.0.1:%d;" % nginx_port)):
        CHECK.true(old in text, "the shipped file has %r" % old)
        text = text.replace(old, new)
    site = os.path.join(tmp, "livetally.conf")
    with open(site, "w") as f:
        f.write(text)
    prefix = os.path.join(tmp, "nginx")
    os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
    user = "user root;" if os.getuid() == 0 else ""
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write("""daemon off; worker_processes 2; pid {p}/nginx.pid; error_log stderr error; {u}
events {{ worker_connections 1024; }}
http {{ access_log off; client_body_temp_path {p}/body; proxy_temp_path {p}/proxy;
  fastcgi_temp_path {p}/fastcgi; uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;
  include {site}; }}
""".format(p=prefix, u=user, site=site))
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    return ltutil.Proc([exe, "-p", prefix, "-c", conf], port=nginx_port, log_name="nginx")


def poll(port, until, gzip_ok, out, lock):
    c = ltutil.Client(port)
    n, bad, gens, hits = 0, [], set(), 0
    hdrs = {"Accept-Encoding": "gzip"} if gzip_ok else {}
    while time.monotonic() < until:
        status, h, body = c.request("GET", "/v1/stats", headers=hdrs)
        n += 1
        if status != 200:
            bad.append(status)
            continue
        if h.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        gens.add(json.loads(body)["generation"])
        hits += h.get("x-cache-status") == "HIT"
        time.sleep(0.005)
    c.close()
    with lock:
        out.append((n, bad, gens, hits))


def main():
    if shutil.which("nginx") is None and not os.path.exists("/usr/sbin/nginx"):
        print("skipped: nginx is not installed (scripts/setup.sh installs it)", flush=True)
        sys.exit(77)
    tmp = tempfile.mkdtemp(prefix="lt-nginx-cache-")
    mc = ltutil.memcached()
    dport, nport = ltutil.free_port(), ltutil.free_port()
    dash = ltutil.Proc([ltutil.binary("livetally-dashboard"), "--event", ltutil.EVENT, "--backend",
                        "memcached://127.0.0.1:%d" % mc.port, "--listen", "127.0.0.1:%d" % dport,
                        "--interval", str(INTERVAL_MS), "--log-level", "warn"], port=dport,
                       log_name="dashboard")
    ng = None
    try:
        ltutil.publish_snapshot(mc.port, EV["event"], 5, test_stats_caching.big_snapshot(5))
        c = ltutil.Client(dport)
        ltutil.wait_stats(c, lambda s: s["generation"] == 5)
        c.close()
        ng = start_nginx(tmp, nport, dport)

        before = dashboard_stats_requests(dport)
        out, lock = [], threading.Lock()
        until = time.monotonic() + POLL_SECONDS
        threads = [threading.Thread(target=poll, args=(nport, until, i % 2 == 0, out, lock))
                   for i in range(CLIENTS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        reached = dashboard_stats_requests(dport) - before
        polls = sum(o[0] for o in out)
        hits = sum(o[3] for o in out)
        print("%d polls through nginx in %.0f s (%d HIT), %d reached the dashboard" %
              (polls, POLL_SECONDS, hits, reached), flush=True)
        CHECK.eq([b for o in out for b in o[1]], [], "every poll through nginx: 200")
        CHECK.eq(set().union(*[o[2] for o in out]), {5}, "every poll got the snapshot")
        CHECK.true(polls >= 200, "the audience polled (%d)" % polls)
        # max-age=1: per representation (plain, gzip) about one request a
        # second upstream, a revalidation at most; the rest are HITs
        bound = 2 * (POLL_SECONDS / (INTERVAL_MS / 1000.0) + 2)
        CHECK.true(0 < reached <= bound,
                   "%d polls reach the dashboard as %d requests (at most %d)" %
                   (polls, reached, bound))
        CHECK.true(hits * 10 >= polls * 9, "at least 90%% of the polls are HITs (%d)" % hits)

        # a new snapshot is served through the cache within max-age, plus
        # the dashboard's poll of the store (interval/4), plus slack
        ltutil.publish_snapshot(mc.port, EV["event"], 6, test_stats_caching.big_snapshot(6))
        t0 = time.monotonic()
        cn = ltutil.Client(nport)
        seen = None
        while time.monotonic() - t0 < 10:
            status, _, body = cn.request("GET", "/v1/stats")
            if status == 200 and json.loads(body)["generation"] == 6:
                seen = time.monotonic() - t0
                break
            time.sleep(0.05)
        cn.close()
        print("a new snapshot through nginx after %s s" % ("%.2f" % seen if seen else "never"))
        CHECK.true(seen is not None and seen <= 3.0,
                   "a new snapshot is served through nginx within 3 s (%s)" % seen)

        s = ltutil.SseStream(nport)
        CHECK.eq(s.status, 200, "the stream through nginx: 200")
        ev = s.next_event(timeout=5)
        CHECK.true(ev is not None and ev["id"] == "6", "the stream's first event passes through")
        ltutil.publish_snapshot(mc.port, EV["event"], 7, test_stats_caching.big_snapshot(7))
        ev = s.next_event(timeout=5)
        CHECK.true(ev is not None and ev["id"] == "7", "and the next one, unbuffered")
        s.close()
    finally:
        if ng is not None:
            ng.stop()
        dash.stop()
        mc.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    CHECK.finish()


if __name__ == "__main__":
    main()
