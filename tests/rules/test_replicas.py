"""Every rule aggregates across exporter replicas: each promtool case of prometheus/tests/, replayed with
every exporter series served by two replicas at once (`instance` a and b, identical values), must
give exactly the same alerts and recording-rule samples. A rule that kept `instance`, or counted a
guest once per replica, would change a label set or a value and fail here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.helpers.promtool import ROOT, TEST_FILES, run

REPLICAS = ('instance="a:9747",job="vmhealth-exporter"', 'instance="b:9747",job="vmhealth-exporter"')
# Series of the exporter only: `up` is per target by design (VMHealthExporterDown names each), and
# the webhook's series come from another job.
_EXPORTER_SERIES = re.compile(r"^(vmhealth_(?!remediation_|webhook_)\w+)\{(.*)\}$")


def as_two_replicas(case: dict) -> tuple[dict, int]:
    """The case with each exporter series that names no instance doubled; and how many were doubled."""
    series, doubled = [], 0
    for item in case["input_series"]:
        match = _EXPORTER_SERIES.match(item["series"])
        if not match or "instance=" in match.group(2):
            series.append(item)
            continue
        doubled += 1
        name, labels = match.groups()
        series += [{**item, "series": f"{name}{{{labels + ',' if labels else ''}{replica}}}"} for replica in REPLICAS]
    return {**case, "input_series": series}, doubled


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda p: p.name)
def test_every_case_gives_the_same_result_from_two_replicas(promtool: str, path: Path, tmp_path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    cases = [as_two_replicas(case) for case in document["tests"]]
    document["tests"] = [case for case, _ in cases]
    document["rule_files"] = [str((path.parent / name).resolve()) for name in document["rule_files"]]
    replayed = tmp_path / path.name
    replayed.write_text(yaml.safe_dump(document, sort_keys=False))
    result = run(promtool, "test", "rules", replayed.name, cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert sum(doubled for _, doubled in cases) > 0 or path.name == "replicas.yml"


def test_a_rule_that_keeps_the_instance_label_is_caught(promtool: str, tmp_path: Path) -> None:
    """The replay can fail: with the heartbeat age computed per replica, VMHung's cases change."""
    rules = (ROOT / "prometheus" / "rules" / "vmhealth-recording.yml").read_text()
    broken = rules.replace("max by (cluster, vmid) (max_over_time(vmhealth_heartbeat_timestamp_seconds[5m]))",
                           "max by (cluster, vmid, instance) (max_over_time(vmhealth_heartbeat_timestamp_seconds[5m]))")
    assert broken != rules
    (tmp_path / "recording.yml").write_text(broken)
    document = yaml.safe_load((ROOT / "prometheus" / "tests" / "hung.yml").read_text())
    alerts = ROOT / "prometheus" / "rules" / "vmhealth-alerts.yml"
    document["rule_files"] = [str(tmp_path / "recording.yml"), str(alerts)]
    document["tests"] = [as_two_replicas(case)[0] for case in document["tests"]]
    (tmp_path / "hung.yml").write_text(yaml.safe_dump(document, sort_keys=False))
    result = run(promtool, "test", "rules", "hung.yml", cwd=tmp_path)
    assert result.returncode != 0 and "FAILED" in result.stdout + result.stderr
