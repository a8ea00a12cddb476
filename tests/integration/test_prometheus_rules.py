"""deploy/prometheus-alerts.yml: `promtool check rules` accepts it, its unit
tests (deploy/prometheus-alerts.test.yml, `promtool test rules`) pass, and
every metric it names is one a livetally binary exports (--describe-metrics),
so a renamed metric cannot leave an alert that never fires. The same for
deploy/grafana-dashboard.json: it loads as JSON, every panel has a query,
every query is valid PromQL (promtool checks them as recording rules) and
names only exported metrics (a histogram's by its _bucket series).

Skipped (exit 77) only when promtool is not installed."""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(__file__))
import ltutil  # noqa: E402

CHECK = ltutil.Checker("test_prometheus_rules")


def main():
    promtool = shutil.which("promtool")
    if promtool is None:
        print("skipped: promtool is not installed (scripts/setup.sh installs prometheus)",
              flush=True)
        sys.exit(77)
    deploy = os.path.join(ltutil.SRC, "deploy")
    tmp = tempfile.mkdtemp(prefix="lt-promtool-")
    try:
        for name in ("prometheus-alerts.yml", "prometheus-alerts.test.yml"):
            shutil.copy(os.path.join(deploy, name), tmp)
        p = subprocess.run([promtool, "check", "rules", "prometheus-alerts.yml"], cwd=tmp,
                           capture_output=True, text=True, timeout=60)
        CHECK.eq(p.returncode, 0, "promtool check rules: %s" % (p.stdout + p.stderr).strip())
        m = re.search(r"SUCCESS: (\d+) rules found", p.stdout + p.stderr)
        CHECK.true(m is not None and int(m.group(1)) >= 8, "at least 8 rules")
        p = subprocess.run([promtool, "test", "rules", "prometheus-alerts.test.yml"], cwd=tmp,
                           capture_output=True, text=True, timeout=60)
        CHECK.eq(p.returncode, 0, "promtool test rules: %s" % (p.stdout + p.stderr).strip()[-600:])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    exported = set()
    for b in ("livetally-ingest", "livetally-aggregate", "livetally-dashboard"):
        out = subprocess.run([ltutil.binary(b), "--describe-metrics"], capture_output=True,
                             text=True, timeout=30).stdout
        exported |= {line.split("\t", 1)[0] for line in out.splitlines() if line}
    with open(os.path.join(deploy, "prometheus-alerts.yml")) as f:
        rules = f.read()
    exprs = " ".join(re.findall(r"expr:\s*(?:>-\s*)?([^\n]+(?:\n\s{10,}[^\n]+)*)", rules))
    used = set(re.findall(r"\b(livetally_[a-z_]+)\b", exprs))
    CHECK.true(len(used) >= 8, "the rules use the binaries' metrics: %s" % sorted(used))
    CHECK.eq(sorted(used - exported), [], "every metric in the rules is exported")
    check_grafana(promtool, deploy, exported)
    CHECK.finish()


def check_grafana(promtool, deploy, exported):
    with open(os.path.join(deploy, "grafana-dashboard.json")) as f:
        dash = json.load(f)
    panels = dash.get("panels", [])
    CHECK.true(len(panels) >= 10, "the Grafana dashboard has panels (%d)" % len(panels))
    exprs = [t.get("expr", "") for p in panels for t in p.get("targets", [])]
    CHECK.true(all(p.get("targets") for p in panels), "every panel has a query")
    CHECK.eq(len({p["id"] for p in panels}), len(panels), "panel ids are unique")
    tmp = tempfile.mkdtemp(prefix="lt-grafana-")
    try:
        lines = ["groups:", "  - name: grafana", "    rules:"]
        for i, e in enumerate(exprs):
            lines.append("      - record: livetally:grafana_%d" % i)
            lines.append("        expr: %s" % json.dumps(e))
        with open(os.path.join(tmp, "grafana.yml"), "w") as f:
            f.write("\n".join(lines) + "\n")
        p = subprocess.run([promtool, "check", "rules", "grafana.yml"], cwd=tmp,
                           capture_output=True, text=True, timeout=60)
        CHECK.eq(p.returncode, 0, "every dashboard query is valid PromQL: %s" %
                 (p.stdout + p.stderr).strip()[-600:])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    used = set()
    for e in exprs:
        for m in re.findall(r"\b(livetally_[a-z_]+)\b", e):
            used.add(re.sub(r"_(bucket|sum|count)$", "", m) if m not in exported else m)
    CHECK.true(len(used) >= 15, "the dashboard shows the binaries' metrics (%d)" % len(used))
    CHECK.eq(sorted(used - exported), [], "every metric on the dashboard is exported")


if __name__ == "__main__":
    main()
