"""The deploy kit, checked with the real tools: promtool for the alert rules (and the dashboard's
queries), systemd-analyze for the units, and the metric names the code really exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from mirrord.metrics import Metrics
from tests.harness.images import ImageBuilder
from tests.harness.registry import MakeRegistry
from tests.ops.support import MIRRORD, daemon_config, seed_images, skopeo_source

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "mirrord.rules.yml"
RULE_TESTS = DEPLOY / "prometheus" / "mirrord.rules.test.yml"
DASHBOARD = DEPLOY / "grafana" / "mirrord-dashboard.json"
UNITS = DEPLOY / "systemd"
METRIC = re.compile(r"\bmirrord_[a-z_]+\b")
PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1


def require(binary: str, package: str) -> str:
    """The path of `binary`; in CI (CI=true) its absence fails the test, elsewhere it skips."""
    path = shutil.which(binary)
    if path is None:
        message = f"{binary} is not installed: apt-get install -y {package}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


def exported_names() -> set[str]:
    """Every sample name mirrord's registry can expose (labelled metrics included)."""
    names = set()
    for family in Metrics().registry.collect():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_count", "_sum"),
        }.get(family.type, ("",))
        names |= {family.name + suffix for suffix in suffixes}
    return names


def rule_exprs() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def dashboard_exprs() -> dict[str, str]:
    return {
        f"{panel['title']} {target['refId']}": target["expr"]
        for panel in dashboard()["panels"]
        for target in panel.get("targets", [])
    }


# ------------------------------------------------------------------------------------------
# Prometheus and Grafana
# ------------------------------------------------------------------------------------------


def test_alert_rules_pass_promtool_check_and_their_unit_tests() -> None:
    promtool = require("promtool", "prometheus")
    checked = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tested = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name], capture_output=True, cwd=RULE_TESTS.parent
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = set(rule_exprs())
    covered = set(re.findall(r"alertname: (\w+)", RULE_TESTS.read_text()))
    assert covered == alerts, "every alert has a promtool unit test"


def test_alerts_and_dashboard_use_only_metrics_mirrord_exports() -> None:
    exported = exported_names()
    for where, exprs in (("rule", rule_exprs()), ("panel", dashboard_exprs())):
        for name, expr in exprs.items():
            used = set(METRIC.findall(expr))
            assert used or expr.startswith("up{"), f"{where} {name} uses no mirrord metric: {expr}"
            assert used <= exported, f"{where} {name}: unknown {used - exported}"


def test_dashboard_shows_every_metric_mirrord_exports() -> None:
    shown = {m for expr in dashboard_exprs().values() for m in METRIC.findall(expr)}
    families = {re.sub(r"_(bucket|count|sum)$", "", name) for name in exported_names()}
    missing = {f for f in families if not any(s.startswith(f) for s in shown)}
    assert not missing, f"metrics without a panel: {sorted(missing)}"


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    promtool = require("promtool", "prometheus")
    variables = {"$__rate_interval": "5m", "$instance": ".*"}
    rules = []
    for i, expr in enumerate(dashboard_exprs().values()):
        for variable, value in variables.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"unknown dashboard variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    checked = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_dashboard_layout_is_well_formed() -> None:
    board = dashboard()
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in board["templating"]["list"]}
    assert variables == {"datasource", "instance"}
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"], panel["title"]
            assert panel["description"], panel["title"]
            assert panel["datasource"]["uid"] == "${datasource}"


# ------------------------------------------------------------------------------------------
# systemd
# ------------------------------------------------------------------------------------------


def _units_for_verify(tmp_path: Path) -> list[Path]:
    """The units with ExecStart pointing at this checkout's mirrord (verify wants it to exist)."""
    copies = []
    for unit in sorted(UNITS.glob("mirrord*.service")) + sorted(UNITS.glob("*.timer")):
        text = unit.read_text().replace("/usr/local/bin/mirrord", str(MIRRORD))
        (tmp_path / unit.name).write_text(text)
        copies.append(tmp_path / unit.name)
    return copies


def _systemd_analyze() -> str:
    binary = shutil.which("systemd-analyze")
    if binary is None:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    probe = subprocess.run([binary, "--version"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"systemd-analyze cannot run here: {probe.stderr.decode().strip()}")
    return binary


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = _systemd_analyze()
    units = _units_for_verify(tmp_path)
    assert {u.name for u in units} == {
        "mirrord.service",
        "mirrord-sync.service",
        "mirrord-sync.timer",
    }
    result = subprocess.run([analyze, "verify", *map(str, units)], capture_output=True, text=True)
    # verify exits 0 on unknown keys and only warns: any diagnostic at all is a failure.
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


@pytest.mark.parametrize("unit", ["mirrord.service", "mirrord-sync.service"])
def test_services_are_hardened(tmp_path: Path, unit: str) -> None:
    analyze = _systemd_analyze()
    _units_for_verify(tmp_path)
    result = subprocess.run(
        [analyze, "security", "--offline=yes", "--threshold=20", str(tmp_path / unit)],
        capture_output=True,
        text=True,
    )
    exposure = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert exposure, result.stdout + result.stderr
    assert result.returncode == 0, f"exposure {exposure.group(1)} > 2.0:\n{result.stdout}"
    text = (UNITS / unit).read_text()
    for setting in (
        "User=mirrord",
        "StateDirectory=mirrord",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "MemoryDenyWriteExecute=yes",
    ):
        assert re.search(rf"^{re.escape(setting)}\b", text, re.M), setting


def test_stop_timeout_outlasts_the_drain() -> None:
    text = (UNITS / "mirrord.service").read_text()
    drain = float(re.search(r"^ExecStart=.* --drain (\d+)", text, re.M).group(1))  # type: ignore[union-attr]
    stop = float(re.search(r"^TimeoutStopSec=(\d+)$", text, re.M).group(1))  # type: ignore[union-attr]
    claim_wait = 10  # the daemon waits this long for a claim in flight before draining
    assert drain + claim_wait < stop <= drain + claim_wait + 30


def test_timer_calendar_parses() -> None:
    analyze = _systemd_analyze()
    calendar = re.search(r"^OnCalendar=(.+)$", (UNITS / "mirrord-sync.timer").read_text(), re.M)
    assert calendar
    result = subprocess.run(
        [analyze, "calendar", calendar.group(1)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert "Next elapse" in result.stdout


def _mdwe_available() -> bool:
    probe = f"import ctypes; print(ctypes.CDLL(None).prctl({PR_SET_MDWE}, 1, 0, 0, 0))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    return result.stdout.strip() == "0"


def test_sync_runs_with_memory_deny_write_execute(
    tmp_path: Path, make_registry: MakeRegistry, image_builder: ImageBuilder
) -> None:
    """The units set MemoryDenyWriteExecute=yes: prove mirrord (CPython, its C extensions) never
    needs writable+executable memory, with the kernel's own switch (PR_SET_MDWE, Linux 6.3+),
    which like systemd's refuses W+X mappings and making memory executable later."""
    if not _mdwe_available():
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+)")
    source, mirror = make_registry(), make_registry()
    seed_images(image_builder, source, tmp_path, {"app/one:v1": image_builder.image("one")})
    sources = [skopeo_source(tmp_path, "apps", source.host, {"app/one": ["v1"]})]
    config = daemon_config(tmp_path, destination=mirror.host, sources=sources)
    launcher = (
        "import ctypes, os, sys\n"
        f"assert ctypes.CDLL(None).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0) == 0\n"
        "os.execv(sys.argv[1], sys.argv[1:])\n"
    )
    sync = ["sync", "--config", str(config), "-q", "--metrics-file", str(tmp_path / "m.prom")]
    result = subprocess.run(
        [sys.executable, "-c", launcher, str(MIRRORD), *sync],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "1 copied" in result.stderr


def test_operations_doc_lists_every_metric_and_alert() -> None:
    doc = (DEPLOY.parent / "README.md").read_text()
    table = set(re.findall(r"^\| `(mirrord_\w+)` \| (\w+) \|", doc, re.M))
    families = {(f.name, f.type) for f in Metrics().registry.collect()}
    documented = {(re.sub(r"_total$", "", name), kind) for name, kind in table}
    assert documented == families
    alerts = set(re.findall(r"^\| `(Mirrord\w+)` \|", doc, re.M))
    assert alerts == set(rule_exprs())
