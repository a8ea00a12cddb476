"""deploy/ as shipped (issue 17, finding 5): `cmake --install` installed
nothing while the systemd units pointed at /usr/local/bin, and the units
carried the store's addresses three times over.

`cmake --install` of this build into a temporary prefix: the binaries (each
answers --version), the units where systemd looks under the prefix, and in
share/livetally the units' environment file, haproxy.cfg, nginx-stats-cache.conf and the example
event. Every unit takes the event and the store from that one environment
file, and `systemd-analyze verify` accepts each (on a copy whose paths point
into the temporary prefix: the shipped ones name /usr/local and /etc)."""

import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import ltutil  # noqa: E402

BINARIES = ["livetally", "livetally-ingest", "livetally-aggregate", "livetally-dashboard",
            "livetally-loadtest"]
UNITS = ["livetally-ingest.service", "livetally-aggregate.service",
         "livetally-dashboard.service"]
SHARED = ["livetally.env", "haproxy.cfg", "nginx-stats-cache.conf", "prometheus-alerts.yml", "grafana-dashboard.json", "1d-live.json"]


def main():
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        print("skipped: systemd-analyze not installed (scripts/setup.sh installs systemd)")
        sys.exit(77)
    chk = ltutil.Checker("test_install")
    prefix = tempfile.mkdtemp(prefix="lt-install-")
    try:
        r = subprocess.run(["cmake", "--install", ltutil.BIN, "--prefix", prefix],
                           capture_output=True, text=True, timeout=120)
        chk.eq(r.returncode, 0, "cmake --install exits 0 (%s)" % r.stderr.strip()[-300:])
        version = None
        for b in BINARIES:
            path = os.path.join(prefix, "bin", b)
            chk.true(os.access(path, os.X_OK), "bin/%s installed, executable" % b)
            if os.access(path, os.X_OK):
                out = subprocess.run([path, "--version"], capture_output=True, text=True,
                                     timeout=10).stdout.split()
                chk.eq(out[:1], [b], "bin/%s --version names itself" % b)
                version = version or (out[1] if len(out) > 1 else None)
                chk.eq(out[1:], [version], "bin/%s --version: one version for all" % b)
        for f in SHARED:
            chk.true(os.path.isfile(os.path.join(prefix, "share", "livetally", f)),
                     "share/livetally/%s installed" % f)
        env = {}
        with open(os.path.join(prefix, "share", "livetally", "livetally.env")) as f:
            for line in f:
                line = line.strip()
                if line and not line.startswith("#"):
                    k, _, v = line.partition("=")
                    env[k] = v
        chk.eq(sorted(env), ["LIVETALLY_BACKEND", "LIVETALLY_EVENT", "LIVETALLY_TRUSTED_PROXY"],
               "the environment file sets the event, the store and the load balancer")
        verify_dir = os.path.join(prefix, "verify")
        os.makedirs(verify_dir)
        for u in UNITS:
            path = os.path.join(prefix, "lib", "systemd", "system", u)
            chk.true(os.path.isfile(path), "lib/systemd/system/%s installed" % u)
            if not os.path.isfile(path):
                continue
            text = open(path).read()
            chk.true("EnvironmentFile=/etc/livetally/livetally.env" in text,
                     "%s reads /etc/livetally/livetally.env" % u)
            chk.true("--backend ${LIVETALLY_BACKEND}" in text and
                     "--event ${LIVETALLY_EVENT}" in text,
                     "%s takes the store and the event from it" % u)
            chk.true("memcached://" not in text and "redis://" not in text,
                     "%s names no store address of its own" % u)
            chk.true("DynamicUser=yes" in text, "%s never serves as root" % u)
            if u == "livetally-ingest.service":
                chk.true("LoadCredential=admin.token:/etc/livetally/admin.token" in text and
                         "--admin-token-file ${CREDENTIALS_DIRECTORY}/admin.token" in text,
                         "%s gets the admin token as a credential (the file stays 0600)" % u)
                chk.true("--trusted-proxy ${LIVETALLY_TRUSTED_PROXY}" in text,
                         "%s trusts the load balancer's X-Forwarded-For" % u)
            moved = text.replace("/usr/local/bin", os.path.join(prefix, "bin")).replace(
                "/etc/livetally/livetally.env",
                os.path.join(prefix, "share", "livetally", "livetally.env"))
            with open(os.path.join(verify_dir, u), "w") as f:
                f.write(moved)
        units = [os.path.join(verify_dir, u) for u in UNITS
                 if os.path.isfile(os.path.join(verify_dir, u))]
        r = subprocess.run([analyze, "verify"] + units, capture_output=True, text=True,
                           timeout=60)
        chk.eq((r.returncode, r.stdout + r.stderr), (0, ""),
               "systemd-analyze verify accepts every unit")
    finally:
        shutil.rmtree(prefix, ignore_errors=True)
    chk.finish()


if __name__ == "__main__":
    main()
