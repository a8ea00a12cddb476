"""The configurations a live night runs, in one run, against nginx
`return 204` (bench/livenight.sh; issue 13's table).

Each row is one livetally-ingest (--threads 2) on its own store, all
started at once on free 127.0.0.1 ports, and nginx (2 workers). wrk
(-t1 -cCONNECTIONS -dDURATION, keep-alive) drives one row at a time; rows
alternate round by round (A B C ... A B C ...) so drift of the machine hits
all alike. Rows whose name starts with "users" send answers each with a user
id never used before (one marker per answer). Requests are formatted once
in wrk's init (bench/fans.sh's script): no Lua runs per request.

Per row: requests/s, p99, non-2xx, the ratio to nginx and to the anonymous
replicas=1 row of the same round, store operations per acknowledged answer
(increments written + markers added, from the ingest's /metrics, times the
replicas: every replica gets each), answers per batch, and the CPU
microseconds per acknowledged answer of the ingest and of its store servers
(utime + stime from /proc/PID/stat over the run). Then each row once more,
open loop at half its mean rate (livetally-loadtest --rate, HALF_DURATION
seconds, every answer with a new user on "users" rows): the p99 there.

The processes are stopped by PID at the end, also on failure
(tests/integration/ltutil.py)."""

import argparse
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
import tempfile

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(here, "..", "tests", "integration"))
import ltutil  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")

# name, store kind, nodes, replicas, users
ROWS = [
    ("anon r=1 memcached", "memcached", 2, 1, False),
    ("users r=1 memcached", "memcached", 2, 1, True),
    ("anon r=2 memcached", "memcached", 3, 2, False),
    ("users r=2 memcached", "memcached", 3, 2, True),
    ("users r=2 redis", "redis", 3, 2, True),
    ("users cluster", "cluster", 3, 1, True),
]


def cpu_ticks(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)


def ingest_metrics(port):
    m = ltutil.metrics(port)
    return (m.get("livetally_ingest_answers_acknowledged_total", 0),
            m.get("livetally_ingest_batch_keys_total", 0),
            m.get("livetally_ingest_user_markers_total", 0),
            m.get("livetally_ingest_batches_total", 0))


class Row:
    def __init__(self, name, kind, nodes, replicas, users, event, build):
        self.name, self.kind, self.replicas, self.users = name, kind, replicas, users
        if kind == "cluster":
            self.servers = ltutil.redis_cluster(nodes)
            backend = "redis-cluster://127.0.0.1:%d" % self.servers[0].port
        else:
            start = ltutil.memcached if kind == "memcached" else ltutil.redis
            self.servers = [start() for _ in range(nodes)]
            backend = "%s://%s?replicas=%d" % (
                kind, ",".join("127.0.0.1:%d" % s.port for s in self.servers), replicas)
        self.port = ltutil.free_port()
        self.ingest = ltutil.Proc([os.path.join(build, "ingest", "livetally-ingest"), "--event",
                                   event, "--backend", backend, "--listen",
                                   "127.0.0.1:%d" % self.port, "--threads", "2",
                                   "--log-level", "warn"], port=self.port, log_name="ingest")
        ltutil.wait_ready(self.port)

    def cpu(self):
        return cpu_ticks(self.ingest.pid), sum(cpu_ticks(s.pid) for s in self.servers)


def run_wrk(script, port, conns, duration, extra):
    return wrk(["-s", script, "http://127.0.0.1:%d/" % port, "--"] + extra, conns, duration)


def wrk(args, conns, duration):
    """wrk -t1 with args after its own: (requests/s, p99 ms, non-2xx/3xx)."""
    out = subprocess.run(["wrk", "-t1", "-c%d" % conns, "-d%ds" % duration, "--latency"] + args,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         stdin=subprocess.DEVNULL, timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    m = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    p99 = float(m.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[m.group(2)]
    n = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    return rps, p99, int(n.group(1)) if n else 0


def nginx(tmp, server="location / { return 204; }", http_extra=""):
    """nginx, 2 workers, on a free port: its server block holds `server`."""
    exe = shutil.which("nginx") or "/usr/sbin/nginx"
    port = ltutil.free_port()
    prefix = os.path.join(tmp, "nginx")
    os.makedirs(os.path.join(prefix, "logs"), exist_ok=True)
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        # bench/ingest.sh's configuration; workers as the user running this
        # (a temporary docroot is its own)
        user = "user %s;" % pwd.getpwuid(os.getuid()).pw_name if os.getuid() == 0 else ""
        f.write("""daemon off; worker_processes 2; pid {p}/nginx.pid; error_log stderr error; {u}
events {{ worker_connections 16384; }}
http {{ access_log off; client_body_temp_path {p}/body; proxy_temp_path {p}/proxy;
  fastcgi_temp_path {p}/fastcgi; uwsgi_temp_path {p}/uwsgi; scgi_temp_path {p}/scgi;
  keepalive_requests 1000000000; keepalive_timeout 60s; {x}
  server {{ listen 127.0.0.1:{port}; {s} }} }}
""".format(p=prefix, port=port, u=user, x=http_extra, s=server))
    return ltutil.Proc([exe, "-p", prefix, "-c", conf], port=port, log_name="nginx"), port


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", required=True)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--duration", type=int, default=8)
    ap.add_argument("--connections", type=int, default=64)
    ap.add_argument("--rows", default="", help="comma-separated row names (default: all)")
    ap.add_argument("--half-duration", type=int, default=5,
                    help="seconds of the open-loop latency run at half of each row's rate")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="lt-bench-livenight-")
    event = os.path.join(tmp, "event.json")
    ev = json.load(open(os.path.join(here, "..", "examples", "1d-live.json")))
    for q in ev["questions"]:
        q["open"] = True
    json.dump(ev, open(event, "w"))
    script = os.path.join(tmp, "post.lua")
    # bench/fans.sh's request script, extracted: one source for both.
    with open(os.path.join(here, "fans.sh")) as f:
        text = f.read()
    gen = text.split("python3 - \"$event\" >\"$tmp/post.lua\" <<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    with open(script, "w") as f:
        subprocess.run([sys.executable, "-c", gen, event], stdout=f, check=True)

    wanted = [r for r in ROWS if not args.rows or r[0] in args.rows.split(",")]
    ng, ng_port = nginx(tmp)
    rows = [Row(*r, event=event, build=args.build) for r in wanted]
    print("live-night rows: wrk -t1 -c%d -d%ds, %d rounds, %d CPUs, build %s" %
          (args.connections, args.duration, args.rounds, os.cpu_count(), args.build))
    hdr = "%-5s %-20s %9s %8s %7s %8s %8s %8s %8s %9s %9s" % (
        "round", "row", "req/s", "p99 ms", "non2xx", "vs nginx", "vs anon1", "ops/ack",
        "ack/batch", "ingest us", "store us")
    print(hdr, flush=True)
    results = {}
    best_anon = 20000.0
    for r in range(1, args.rounds + 1):
        ng_rps, ng_p99, _ = run_wrk(script, ng_port, args.connections, args.duration, [])
        results.setdefault("nginx return 204", []).append((ng_rps, ng_p99, 0, 0, 0, 0, 0))
        print("%-5d %-20s %9.0f %8.2f %7d" % (r, "nginx return 204", ng_rps, ng_p99, 0),
              flush=True)
        anon1 = None
        for row in rows:
            extra = []
            if row.users:
                count = int(best_anon * args.duration * 1.5)
                extra = ["r%d-" % r, str(count)]
            a0, k0, m0, b0 = ingest_metrics(row.port)
            c0 = row.cpu()
            rps, p99, non2xx = run_wrk(script, row.port, args.connections, args.duration, extra)
            c1 = row.cpu()
            ltutil.time.sleep(0.3)  # the last published figures (every 250 ms)
            a1, k1, m1, b1 = ingest_metrics(row.port)
            acks = max(1, a1 - a0)
            ops = ((k1 - k0) + (m1 - m0)) * row.replicas / acks
            per_batch = (a1 - a0) / max(1, b1 - b0)
            us_ing = (c1[0] - c0[0]) * 1e6 / CLK_TCK / acks
            us_store = (c1[1] - c0[1]) * 1e6 / CLK_TCK / acks
            if row.name == "anon r=1 memcached":
                anon1 = rps
                best_anon = max(best_anon, rps)
            vs_anon = rps / anon1 if anon1 else 0.0
            results.setdefault(row.name, []).append(
                (rps, p99, non2xx, ops, per_batch, us_ing, us_store, rps / ng_rps, vs_anon))
            print("%-5d %-20s %9.0f %8.2f %7d %8.2f %8s %8.2f %9.1f %9.1f %9.1f" %
                  (r, row.name, rps, p99, non2xx, rps / ng_rps,
                   "%.2f" % vs_anon if anon1 else "-", ops, per_batch, us_ing, us_store),
                  flush=True)
    # Latency at half of each row's mean rate, open loop: every request has
    # an intended send time, so a stall shows in the percentiles.
    half_p99 = {}
    loadtest = os.path.join(args.build, "loadtest", "livetally-loadtest")
    if os.path.exists(loadtest):
        for row in rows:
            rate = int(sum(x[0] for x in results[row.name]) / len(results[row.name]) / 2)
            out = os.path.join(tmp, "half.json")
            cmd = [loadtest, "--target", "http://127.0.0.1:%d" % row.port, "--event", event,
                   "--rate", str(rate), "--duration", "%ds" % args.half_duration,
                   "--connections", str(args.connections), "--seed", "7", "--no-progress",
                   "--json", out]
            if row.users:
                cmd += ["--users", str(rate * args.half_duration * 2), "--user-prefix",
                        "half-"]
            subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           stdin=subprocess.DEVNULL, timeout=args.half_duration + 60)
            rep = json.load(open(out))
            half_p99[row.name] = (rate, rep["latency_ms"]["p99"], rep["acknowledged"],
                                  rep["sent"])
            print("half rate %-20s --rate %d: p99 %.2f ms (%d of %d acknowledged)" %
                  ((row.name, rate) + half_p99[row.name][1:]), flush=True)
    print("means over the rounds (ratios per round, then averaged):")
    for name, rs in results.items():
        mean = lambda i: sum(x[i] for x in rs) / len(rs)  # noqa: E731
        if name.startswith("nginx"):
            print("  %-20s %9.0f req/s  p99 %.2f ms" % (name, mean(0), max(x[1] for x in rs)))
            continue
        half = half_p99.get(name)
        print("  %-20s %9.0f req/s  p99 %.2f ms  %.2fx nginx  %.2fx anon r=1  ops/ack %.2f  "
              "ack/batch %.1f  CPU us/ack ingest %.1f store %.1f%s" %
              (name, mean(0), max(x[1] for x in rs), mean(7), mean(8), mean(3), mean(4),
               mean(5), mean(6),
               "  p99 at half rate %.2f ms" % half[1] if half else ""))
    ng.stop()
    for row in rows:
        row.ingest.stop()
        for s in row.servers:
            s.stop()


if __name__ == "__main__":
    main()
