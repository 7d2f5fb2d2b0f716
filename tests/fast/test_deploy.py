"""The deployment files, each checked by the real tool where one exists here.

HAProxy (`haproxy -c`), Prometheus (`promtool check config`, `promtool test
rules`), systemd (`systemd-analyze verify`), Kubernetes (the API schemas,
offline, via kubernetes-validate), the Dockerfile (BuildKit's parser; no
Docker daemon here, so no build), and the Grafana dashboard against the
metrics a live app really exports. `make test-deps` installs the tools.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import yaml
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "ops" / "deploy"
PROMETHEUS = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "allinone-dashboard.json"
OUR_METRIC = re.compile(r"\b(?:allinone|process)_[a-z_]+\b")


def tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: run `make test-deps` (scripts/install-system-deps.sh)"
    return path


def run(*command: str, cwd: Path = REPO, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=120, env=env)


def test_haproxy_accepts_the_shipped_config():
    result = run(tool("haproxy"), "-c", "-f", str(DEPLOY / "haproxy.cfg"))
    assert result.returncode == 0, result.stdout + result.stderr
    cfg = (DEPLOY / "haproxy.cfg").read_text()
    # What the failover relies on, so an edit cannot drop it unnoticed.
    for needed in ("option httpchk GET /ready", "fall 3", "rise 2", "backup", "option redispatch",
                   "stick match url_param(session_hash)", "timeout server 5m"):
        assert needed in cfg, needed


def test_haproxy_rejects_a_broken_config(tmp_path):
    """The check above can fail: the same file with a typo in a server line is refused."""
    broken = tmp_path / "haproxy.cfg"
    broken.write_text((DEPLOY / "haproxy.cfg").read_text().replace("fall 3", "fall three"))
    assert run(tool("haproxy"), "-c", "-f", str(broken)).returncode != 0


def test_prometheus_config_and_rules_are_valid():
    result = run(tool("promtool"), "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_alert_rules_pass_their_unit_tests():
    result = run(tool("promtool"), "test", "rules", "alerts.test.yml", cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = set(re.findall(r"alertname: (\w+)", (PROMETHEUS / "alerts.test.yml").read_text()))
    defined = set(re.findall(r"- alert: (\w+)", (PROMETHEUS / "alerts.yml").read_text()))
    assert defined <= tested, f"alerts without a unit test: {defined - tested}"


def test_systemd_unit_verifies(tmp_path):
    """`systemd-analyze verify` on the template unit, with /opt/allinone pointed at a stand-in checkout."""
    checkout = tmp_path / "allinone"
    (checkout / ".venv" / "bin").mkdir(parents=True)
    (checkout / ".venv" / "bin" / "python").symlink_to(sys.executable)
    unit = (DEPLOY / "systemd" / "allinone@.service").read_text().replace("/opt/allinone", str(checkout))
    instance = tmp_path / "allinone@primary.service"
    instance.write_text(unit)
    result = run(tool("systemd-analyze"), "verify", "--man=no", str(instance))
    assert result.returncode == 0, result.stdout + result.stderr
    for needed in ("Restart=always", "StartLimitBurst=", "MemoryMax=", "User=allinone", "ReadOnlyPaths=/opt/allinone"):
        assert needed in unit.replace(str(checkout), "/opt/allinone"), needed


def test_kubernetes_manifests_match_the_api_schemas():
    manifest = DEPLOY / "k8s" / "allinone.yaml"
    result = run(str(Path(sys.executable).parent / "kubernetes-validate"), "--strict", "--quiet", str(manifest))
    assert result.returncode == 0, result.stdout + result.stderr
    docs = {d["kind"]: d for d in yaml.safe_load_all(manifest.read_text())}
    deployment = docs["Deployment"]["spec"]
    assert deployment["replicas"] == 2
    app = deployment["template"]["spec"]["containers"][0]
    assert app["livenessProbe"]["httpGet"]["path"] == "/health"
    assert app["startupProbe"]["httpGet"]["path"] == "/health"
    assert app["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert {"requests", "limits"} <= set(app["resources"])
    models = next(m for m in app["volumeMounts"] if m["name"] == "models")
    assert models["readOnly"] is True
    assert deployment["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    assert docs["Service"]["spec"]["selector"] == deployment["selector"]["matchLabels"]


def test_dockerfile_parses_and_copies_only_what_exists():
    import dockerfile

    commands = dockerfile.parse_file(str(REPO / "Dockerfile"))
    by_cmd = lambda name: [c for c in commands if c.cmd == name]  # noqa: E731
    for copy in by_cmd("COPY"):
        if not any(f.startswith("--from") for f in copy.flags):
            for source in copy.value[:-1]:
                assert (REPO / source).exists(), f"COPY {source}: no such file"
    assert any("ops.models install-default" in r.value[0] for r in by_cmd("RUN"))  # the model is baked in
    assert by_cmd("USER")[-1].value[0] not in ("root", "0")
    assert by_cmd("HEALTHCHECK") and "/health" in " ".join(by_cmd("HEALTHCHECK")[0].value)
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"models", ".venv", ".git"} <= set(ignored)


def exported_names(metrics_text: str) -> set[str]:
    """Every series name the exposition can produce, histograms' and counters' suffixes included."""
    names = set()
    for family in text_string_to_metric_families(metrics_text):
        names.add(family.name)
        suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
        names.update(family.name + s for s in suffixes.get(family.type, ()))
    return names


def promql_of_dashboard() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_dashboard_and_alerts_use_only_metrics_the_app_exports(live_app):
    exported = exported_names(httpx.get(live_app.url + "/metrics", timeout=10).text)
    alerts = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    app_rules = [r["expr"] for g in alerts["groups"] if g["name"] == "allinone" for r in g["rules"]]
    for expr in promql_of_dashboard() + app_rules:
        used = set(OUR_METRIC.findall(expr))
        assert used or "up{" in expr, f"no app metric in {expr!r}"
        assert used <= exported, f"{expr!r} uses {used - exported}, not exported by the app"


def test_dashboard_covers_the_issue_and_its_queries_parse(tmp_path):
    """Every panel query is valid PromQL (checked by promtool as recording rules, Grafana's variables filled in)."""
    dashboard = json.loads(DASHBOARD.read_text())
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("traffic", "errors", "latency percentiles", "state", "reloads", "memory"):
        assert topic in titles, topic
    exprs = [e.replace("$__rate_interval", "1m").replace("$__range", "1h").replace("$instance", ".*")
             for e in promql_of_dashboard()]
    rules = {"groups": [{"name": "dashboard", "rules": [{"record": f"dashboard:query{i}", "expr": e}
                                                        for i, e in enumerate(exprs)]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = run(tool("promtool"), "check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
