"""The statistics as an audience reads them, through CDNs and proxy caches
(API.md section 4, "Caching"): every stats response (GET /v1/stats,
/v1/stats/questions/{id}, /v1/stats.csv) carries a strong ETag of its
representation, If-None-Match answers 304 with no body, Accept-Encoding:
gzip gets the body gzip'd once per snapshot (Vary: Accept-Encoding, its own
ETag), and Cache-Control is public for about one aggregation interval. The
finding of issue 15: "sent with Cache-Control: no-store, no ETag, no
compression, so no CDN or proxy cache can take the load either".

livetally-dashboard on a real memcached, snapshots published by hand (the
aggregator's layout); real HTTP. Error replies stay no-store."""

import gzip
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(__file__))
import ltutil  # noqa: E402
import test_dashboard  # noqa: E402

CHECK = ltutil.Checker("test_stats_caching")
EV = ltutil.load_event()
INTERVAL_MS = 3000


def big_snapshot(generation):
    """crafted()'s snapshot with 32 countries in every breakdown, so that
    the gzip ratio is that of a real one."""
    snap = test_dashboard.crafted(generation)
    codes = ["us", "gb", "ie", "fr", "de", "br", "jp", "in", "es", "it", "nl", "se", "no", "dk",
             "fi", "pl", "pt", "at", "ch", "be", "cz", "hu", "ro", "gr", "tr", "mx", "ar", "cl",
             "co", "au", "nz", "ca"]
    rows = [{"country": c, "answers": 1000 + 37 * i + generation, "right": 600 + 11 * i,
             "wrong": 400 + 26 * i + generation, "right_ratio": round((600 + 11 * i) /
                                                                       (1000 + 37 * i), 4)}
            for i, c in enumerate(codes)]
    for q in snap["questions"]:
        q["by_country"] = rows
    snap["countries"] = rows
    return snap


def get(c, path, headers=None, method="GET"):
    status, hdrs, data = c.request(method, path, headers=headers or {})
    return status, hdrs, data


def check_resource(c, path, gen, what):
    status, h, raw = get(c, path)
    CHECK.eq(status, 200, "%s: 200" % what)
    etag = h.get("etag", "")
    CHECK.true(re.fullmatch(r'"g%d-[0-9a-f]{16}"' % gen, etag) is not None,
               "%s: a strong ETag of the generation and the bytes: %r" % (what, etag))
    CHECK.eq(h.get("cache-control"), "public, max-age=3, stale-while-revalidate=3",
             "%s: cacheable by a shared cache for one interval" % what)
    CHECK.eq(h.get("vary"), "Accept-Encoding", "%s: Vary" % what)
    CHECK.eq(h.get("content-encoding"), None, "%s: as is without Accept-Encoding" % what)
    CHECK.eq(h.get("x-livetally-generation"), str(gen), "%s: generation header" % what)

    for inm in (etag, "W/" + etag, '"other", ' + etag, "*"):
        status, h2, body = get(c, path, {"If-None-Match": inm})
        CHECK.eq((status, body), (304, b""), "%s: If-None-Match %s -> 304, no body" % (what, inm))
        CHECK.eq(h2.get("etag"), etag, "%s: the 304 carries the ETag" % what)
    status, _, body = get(c, path, {"If-None-Match": '"g1-0000000000000000"'})
    CHECK.eq((status, body), (200, raw), "%s: another ETag -> 200 with the body" % what)

    for ae in ("gzip", "deflate, gzip;q=0.5", "*", "br;q=1.0, gzip", "x-gzip", "GZIP ; Q=1"):
        status, hg, gz = get(c, path, {"Accept-Encoding": ae})
        CHECK.eq((status, hg.get("content-encoding")), (200, "gzip"),
                 "%s: Accept-Encoding %r -> gzip" % (what, ae))
        CHECK.eq(gzip.decompress(gz) if gz else b"", raw,
                 "%s: the gzip body is the same bytes" % what)
        CHECK.eq(hg.get("etag"), etag[:-1] + '-gz"', "%s: the gzip representation's ETag" % what)
    for ae in ("gzip;q=0", "identity", "deflate", "gzip; q=0.0", "gzip;q=0, *", "gzip;Q=0",
               "*;q=0", "br, *;q=0"):
        status, hi, body = get(c, path, {"Accept-Encoding": ae})
        CHECK.eq((status, hi.get("content-encoding"), body), (200, None, raw),
                 "%s: Accept-Encoding %r -> as is" % (what, ae))
    # the identity ETag does not match the gzip representation, and back
    status, _, _ = get(c, path, {"Accept-Encoding": "gzip", "If-None-Match": etag})
    CHECK.eq(status, 200, "%s: the identity ETag does not validate the gzip body" % what)
    status, _, _ = get(c, path, {"Accept-Encoding": "gzip", "If-None-Match": etag[:-1] + '-gz"'})
    CHECK.eq(status, 304, "%s: the gzip ETag validates the gzip body" % what)
    status, hh, body = get(c, path, method="HEAD")
    CHECK.eq((status, hh.get("etag"), body), (200, etag, b""), "%s: HEAD has the ETag" % what)
    return etag, raw, gz


def main():
    mc = ltutil.memcached()
    port = ltutil.free_port()
    p = ltutil.Proc([ltutil.binary("livetally-dashboard"), "--event", ltutil.EVENT, "--backend",
                     "memcached://127.0.0.1:%d" % mc.port, "--listen", "127.0.0.1:%d" % port,
                     "--interval", str(INTERVAL_MS), "--log-level", "warn"], port=port,
                    log_name="dashboard")
    c = ltutil.Client(port)
    try:
        status, h, _ = get(c, "/v1/stats")
        CHECK.eq((status, h.get("cache-control")), (503, "no-store"),
                 "no snapshot yet: 503, not cached")
        ltutil.publish_snapshot(mc.port, EV["event"], 100, big_snapshot(100))
        ltutil.wait_stats(c, lambda s: s["generation"] >= 100, timeout=15)
        etag, raw, gz = check_resource(c, "/v1/stats", 100, "/v1/stats")
        print("/v1/stats: %d bytes as is, %d gzip'd (%.1f%%)" % (len(raw), len(gz),
                                                             100.0 * len(gz) / len(raw)), flush=True)
        CHECK.true(len(gz) * 4 <= len(raw),
                   "gzip'd to at most 25%% of the JSON (%d of %d bytes)" % (len(gz), len(raw)))
        q_etag, _, _ = check_resource(c, "/v1/stats/questions/1", 100, "question 1")
        check_resource(c, "/v1/stats.csv", 100, "CSV")
        status, h, _ = get(c, "/v1/stats/questions/999")
        CHECK.eq((status, h.get("cache-control"), h.get("etag")), (404, "no-store", None),
                 "an unknown question: 404, not cached, no ETag")

        ltutil.publish_snapshot(mc.port, EV["event"], 101, big_snapshot(101))
        ltutil.wait_stats(c, lambda s: s["generation"] >= 101, timeout=15)
        status, h, body = get(c, "/v1/stats", {"If-None-Match": etag})
        CHECK.eq(status, 200, "a new snapshot: the old ETag gets the new body")
        CHECK.true(h.get("etag", "").startswith('"g101-') and json.loads(body)["generation"] == 101,
                   "with the new generation's ETag")
        # the same generation number with other bytes (a store that started
        # its generations again) must not validate the old ETag
        other = big_snapshot(101)
        other["totals"]["answers"] += 1
        ltutil.publish_snapshot(mc.port, EV["event"], 102, other)
        want = other["totals"]["answers"]
        ltutil.wait_stats(c, lambda s: s["totals"]["answers"] == want, timeout=15)
        status, h, _ = get(c, "/v1/stats")
        CHECK.true(h.get("etag") != etag and h.get("etag", "").startswith('"g102-'),
                   "another snapshot, another ETag")
    finally:
        c.close()
        CHECK.eq(p.stop(), 0, "the dashboard exits 0")
        mc.stop()
    CHECK.finish()


if __name__ == "__main__":
    main()
