"""The short rehearsal of a live night (issue 17: "a short version runs in
CI"): scripts/rehearse.py --short --no-link-faults on memcached, replicas=2,
haproxy from deploy/ in front of 3 ingest nodes, 2 aggregators, the
dashboard, fans that retry like the app, one fault per phase (an ingest
killed and one restarted, a store node stopped and one back empty, an
aggregator killed). It must end with every count of the dashboard verified
against the fans' 202s (exit 0); the script's own report is printed.

Without the slow and flaky links: with them the nights run since a
replicas>=2 node back empty gets its copies restored were within their
bounds, but one Redis night before that change's last fix was short by 1-2
on 3 counts, unexplained (README, "Rehearsing the whole night"), and a test
must not fail by chance. The links alone are
test_store_slow_replica.py's."""

import os
import shutil
import subprocess
import sys

sys.path.insert(0, os.path.dirname(__file__))
import ltutil  # noqa: E402


def main():
    if shutil.which("haproxy") is None and not os.path.exists("/usr/sbin/haproxy"):
        print("SKIP: haproxy is not installed (scripts/setup.sh installs it)")
        sys.exit(77)
    chk = ltutil.Checker("test_rehearse")
    script = os.path.join(ltutil.SRC, "scripts", "rehearse.py")
    r = subprocess.run([sys.executable, script, "--short", "--no-link-faults", "--build", ltutil.BIN],
                       capture_output=True, text=True, timeout=400,
                       env=dict(os.environ, LIVETALLY_BIN=ltutil.BIN, LIVETALLY_SRC=ltutil.SRC))
    print(r.stdout[-4000:])
    if r.returncode != 0:
        print(r.stderr[-4000:])
    chk.eq(r.returncode, 0, "scripts/rehearse.py --short: every count verified")
    chk.true("verify: every count" in r.stdout, "the rehearsal says what it verified")
    chk.finish()


if __name__ == "__main__":
    main()
