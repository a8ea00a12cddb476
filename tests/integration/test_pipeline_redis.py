"""The end-to-end scenario of test_pipeline.py (every status code, admin
open/close, every count of /v1/stats against a tally), unchanged, with the
split binaries on Redis: a redis:// pool of two servers, then a
redis-cluster:// of three masters made by redis-cli --cluster create."""

import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import ltutil  # noqa: E402
import test_pipeline  # noqa: E402


def run_split(backend, token_path, token, chk, mode):
    ip, dp = ltutil.free_port(), ltutil.free_port()
    ing = ltutil.Proc([ltutil.binary("livetally-ingest"), "--event", ltutil.EVENT, "--backend",
                       backend, "--listen", "127.0.0.1:%d" % ip, "--admin-token-file",
                       token_path], port=ip, log_name="ingest")
    agg = ltutil.Proc([ltutil.binary("livetally-aggregate"), "--event", ltutil.EVENT,
                       "--backend", backend, "--interval", "200"], log_name="aggregate")
    dash = ltutil.Proc([ltutil.binary("livetally-dashboard"), "--event", ltutil.EVENT,
                        "--backend", backend, "--listen", "127.0.0.1:%d" % dp, "--interval",
                        "200"], port=dp, log_name="dashboard")
    try:
        test_pipeline.scenario(ip, dp, token, chk, mode)
    finally:
        chk.eq(ing.stop(), 0, "%s: ingest exit 0 on SIGTERM" % mode)
        chk.eq(agg.stop(), 0, "%s: aggregate exit 0 on SIGTERM" % mode)
        chk.eq(dash.stop(), 0, "%s: dashboard exit 0 on SIGTERM" % mode)
        if chk.failed:
            for p in (ing, agg, dash):
                print(p.output()[-2000:])


def main():
    chk = ltutil.Checker("test_pipeline_redis")
    tmp = tempfile.mkdtemp(prefix="lt-pipeline-redis-")
    token_path, token = ltutil.write_token(tmp)

    r1, r2 = ltutil.redis(), ltutil.redis()
    pool = "redis://127.0.0.1:%d,127.0.0.1:%d" % (r1.port, r2.port)
    run_split(pool, token_path, token, chk, "split/redis")
    # both servers hold counters: the pool spreads the keys
    for r in (r1, r2):
        n = ltutil.redis_command(r.port, "DBSIZE")
        chk.true(n.startswith(b":") and int(n[1:]) > 100, "redis pool: keys on :%d (%r)" %
                 (r.port, n))
    r1.stop()
    r2.stop()

    nodes = ltutil.redis_cluster(3)
    cluster = "redis-cluster://" + ",".join("127.0.0.1:%d" % n.port for n in nodes)
    run_split(cluster, token_path, token, chk, "split/redis-cluster")
    for n in nodes:
        keys = ltutil.redis_command(n.port, "DBSIZE")
        chk.true(keys.startswith(b":") and int(keys[1:]) > 100,
                 "redis cluster: keys on :%d (%r)" % (n.port, keys))
    chk.finish()


if __name__ == "__main__":
    main()
