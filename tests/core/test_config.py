"""The configuration loader: defaults, environment overrides, secret files, and complete error lists."""

from __future__ import annotations

import logging

import pytest

from vmhealth.config import ConfigError, load, redacted
from vmhealth.durations import format_duration, parse_duration

CLUSTER = {"name": "lab", "host": "pve1:8006", "token_id": "monitor@pve!vmhealth", "token_secret": "s3cret"}


def problems(**kwargs) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(**kwargs)
    return info.value.problems


def test_defaults_of_the_design():
    config = load(raw={"clusters": [CLUSTER]}, environ={})
    assert config.exporter.listen == "127.0.0.1:9747" and config.webhook.listen == "127.0.0.1:9749"
    assert config.agent.listen == "0.0.0.0:9748" and config.agent.mode == "push"
    assert config.thresholds.stale_timeout == 90 and config.thresholds.cpu_percent == 80
    assert config.thresholds.io_window == 60 and config.thresholds.io_idle_bytes_per_second == 1024
    assert config.webhook.policy.max_attempts == 3 and config.webhook.policy.cooldown == 600
    assert config.clusters[0].verify_ssl is True


def test_environment_overrides_keys_and_list_items():
    env = {"VMHEALTH_EXPORTER_LISTEN": "0.0.0.0:9000", "VMHEALTH_CLUSTERS_0_TOKEN_SECRET": "from-env",
           "VMHEALTH_CLUSTERS_1_NAME": "b", "VMHEALTH_CLUSTERS_1_HOST": "pve-b", "VMHEALTH_CLUSTERS_1_USER": "root@pam",
           "VMHEALTH_CLUSTERS_1_PASSWORD": "pw", "VMHEALTH_CLUSTERS_1_VERIFY_SSL": "false",
           "VMHEALTH_THRESHOLDS_STALE_TIMEOUT": "2m", "VMHEALTH_WEBHOOK_POLICY_DENY_VMIDS": "100, 101"}
    config = load(raw={"clusters": [CLUSTER]}, environ=env)
    assert config.exporter.listen == "0.0.0.0:9000"
    assert config.clusters[0].token_secret == "from-env"
    assert config.clusters[1].name == "b" and config.clusters[1].verify_ssl is False
    assert config.thresholds.stale_timeout == 120
    assert config.webhook.policy.deny_vmids == [100, 101]


def test_environment_only_configuration_for_the_agent():
    config = load(raw={}, environ={"VMHEALTH_AGENT_API_KEY": "k" * 16, "VMHEALTH_AGENT_VMID": "104"},
                  components=["agent"])
    assert config.agent.vmid == 104 and config.clusters == []


def test_short_secrets_and_an_admin_token_equal_to_alertmanagers_are_refused():
    raw = {"exporter": {"api_key": "short"}, "agent": {"api_key": "x" * 15},
           "webhook": {"token": "same-secret-for-both", "admin_token": "same-secret-for-both"}}
    with pytest.raises(ConfigError) as caught:
        load(raw=raw, environ={})
    problems = "\n".join(caught.value.problems)
    assert "exporter.api_key: shorter than 16 characters" in problems
    assert "agent.api_key: shorter than 16 characters" in problems
    assert "webhook.admin_token: is the same as webhook.token" in problems
    assert "same-secret-for-both" not in problems and "short" not in problems.replace("shorter", "")
    assert load(raw={"exporter": {"api_key": "x" * 16}}, environ={}).exporter.api_key == "x" * 16


def test_the_read_tokens_are_long_and_their_own(tmp_path):
    """Prometheus' tokens may not be a token that acts, nor the exporter's read token the agents' key."""
    (tmp_path / "metrics-token").write_text("admin-token-0123456789\n")
    raw = {"exporter": {"api_key": "agent-key-0123456789", "read_token": "agent-key-0123456789"},
           "webhook": {"token": "alertmanager-0123456789", "admin_token": "admin-token-0123456789",
                       "metrics_token_file": str(tmp_path / "metrics-token")}}
    with pytest.raises(ConfigError) as caught:
        load(raw=raw, environ={})
    problems = caught.value.problems
    assert "exporter.read_token: is the same as exporter.api_key" in "\n".join(problems)
    assert "webhook.metrics_token: is the same as webhook.admin_token" in "\n".join(problems)
    assert not [p for p in problems if "0123456789" in p]
    short = {"exporter": {"read_token": "short"}, "webhook": {"metrics_token": "short-too"}}
    with pytest.raises(ConfigError) as caught:
        load(raw=short, environ={})
    assert {p.split(":")[0] for p in caught.value.problems} == {"exporter.read_token", "webhook.metrics_token"}
    fine = load(raw={"exporter": {"read_token": "r" * 16}, "webhook": {"metrics_token": "m" * 16}},
                environ={"VMHEALTH_WEBHOOK_PUBLIC_HISTORY": "true"})
    assert fine.webhook.public_history is True and fine.exporter.auth_failures_per_minute == 20
    assert redacted(fine)["exporter"]["read_token"] == "<set>" and redacted(fine)["webhook"]["metrics_token"] == "<set>"


def test_a_secret_file_others_can_read_is_warned_about(tmp_path, caplog):
    secret = tmp_path / "agent-key"
    secret.write_text("a-long-enough-agent-key\n")
    secret.chmod(0o644)
    with caplog.at_level(logging.WARNING, logger="vmhealth.config"):
        load(raw={"exporter": {"api_key_file": str(secret)}}, environ={})
    assert f"exporter.api_key_file: {secret} can be read by group and others (mode 644); chmod 600 it" in caplog.text
    caplog.clear()
    secret.chmod(0o600)
    with caplog.at_level(logging.WARNING, logger="vmhealth.config"):
        load(raw={"exporter": {"api_key_file": str(secret)}}, environ={})
    assert caplog.text == ""


def test_secret_from_file(tmp_path):
    secret = tmp_path / "token"
    secret.write_text("file-secret\n")
    cluster = {**CLUSTER, "token_secret_file": str(secret)}
    del cluster["token_secret"]
    assert load(raw={"clusters": [cluster]}, environ={}).clusters[0].token_secret == "file-secret"
    cluster["token_secret_file"] = str(tmp_path / "missing")
    assert any(p.startswith("clusters[0].token_secret_file: cannot read") for p in problems(raw={"clusters": [cluster]},
                                                                                           environ={}))


def test_every_problem_is_listed_with_its_path():
    raw = {
        "clusters": [{"name": "lab", "host": "h", "tokn_id": "x"}, {"name": "lab", "host": "h", "user": "u"}],
        "thresholds": {"cpu_percent": 120, "stale_timeout": "soon"},
        "exporter": {"listen": "nowhere", "poll_interval": -1},
        "webhook": {"policy": {"max_atempts": 3}},
        "extra": {},
    }
    found = problems(raw=raw, environ={"VMHEALTH_EXPORTER_LISTN": "x"}, components=["exporter", "webhook"])
    for expected in [
        "clusters[0].tokn_id: unknown key (did you mean 'token_id'?)",
        "clusters[0].token_secret: missing (give token_id + token_secret, or user + password)",
        "clusters[1].name: 'lab' is used by another cluster",
        "clusters[1].password: missing",
        "thresholds.cpu_percent: 120.0 is above the maximum 100",
        "exporter.listen: 'nowhere' is not HOST:PORT (for example 127.0.0.1:9747)",
        "exporter.poll_interval: a duration cannot be negative",
        "webhook.policy.max_atempts: unknown key (did you mean 'max_attempts'?)",
        "extra: unknown key",
        "exporter.api_key: missing",
        "webhook.token: missing",
        "webhook.admin_token: missing",
    ]:
        assert expected in found, found
    assert any(p.startswith("thresholds.stale_timeout: 'soon' is not a duration") for p in found)
    assert any(p.startswith("VMHEALTH_EXPORTER_LISTN: unknown environment variable (did you mean") for p in found)


def test_redacted_hides_secrets():
    shown = redacted(load(raw={"clusters": [CLUSTER]}, environ={}))
    assert shown["clusters"][0]["token_secret"] == "<set>" and "s3cret" not in repr(shown)


def test_yaml_errors_name_the_line(tmp_path):
    path = tmp_path / "broken.yml"
    path.write_text("clusters:\n  - name: [unclosed\n")
    found = problems(path=path, environ={})
    assert found[0].startswith(f"{path}: not valid YAML at line")


@pytest.mark.parametrize(("text", "seconds"), [("30s", 30), ("5m", 300), ("1h30m", 5400), ("500ms", 0.5), (15, 15),
                                               ("2.5", 2.5)])
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5 minutes", "m5", "-3s", True, [1]])
def test_bad_durations(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_format_duration():
    assert format_duration(5400) == "1h30m" and format_duration(0.25) == "250ms"


def test_test_suite_switches_are_not_config_keys():
    env = {"VMHEALTH_REQUIRE_POSTGRES": "1", "VMHEALTH_REQUIRE_BINARIES": "1", "VMHEALTH_TEST_POSTGRES_URL": "x"}
    assert load(raw={"clusters": [CLUSTER]}, environ=env).clusters[0].name == "lab"


def test_incident_expiry_defaults_to_three_repeat_intervals_and_is_checked(tmp_path):
    """webhook.policy.incident_expiry: 3x the webhook route's repeat_interval in the shipped
    alertmanager.yml; zero, negative and non-durations are refused by name, also by check-config."""
    import subprocess
    import sys
    from pathlib import Path

    import yaml

    root = Path(__file__).resolve().parents[2]
    route = next(r for r in yaml.safe_load((root / "alertmanager" / "alertmanager.yml").read_text())["route"]["routes"]
                 if r["receiver"] == "vmhealth-webhook")
    expiry = load(raw={"clusters": [CLUSTER]}, environ={}).webhook.policy.incident_expiry
    assert expiry == 900 == 3 * parse_duration(route["repeat_interval"])
    assert load(raw={"webhook": {"policy": {"incident_expiry": "2s"}}}, environ={}).webhook.policy.incident_expiry == 2
    for bad, message in (("0s", "must be longer than 0s"), ("-5m", ""), ("soon", "")):
        found = problems(raw={"webhook": {"policy": {"incident_expiry": bad}}}, environ={})
        assert [p for p in found if p.startswith("webhook.policy.incident_expiry: ") and message in p], found
    path = tmp_path / "vmhealth.yml"
    path.write_text(yaml.safe_dump({"webhook": {"policy": {"incident_expiry": "0s"}}}))
    checked = subprocess.run([sys.executable, "-m", "vmhealth", "check-config", str(path)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 2 and "webhook.policy.incident_expiry: must be longer than 0s" in checked.stderr


def test_exporter_urls_must_be_distinct_http_urls_and_the_problem_names_the_item():
    for urls, expected in (
        (["http://a:9747", "ftp://b:9747"], "item 1 'ftp://b:9747' is not an http:// or https:// URL"),
        (["http://a:9747", "http://a:9747/"], "item 1 'http://a:9747/' is listed twice"),
    ):
        with pytest.raises(ConfigError) as caught:
            load(raw={"webhook": {"exporter_urls": urls}}, environ={})
        assert caught.value.problems == [f"webhook.exporter_urls: {expected}"]
    env = {"VMHEALTH_WEBHOOK_EXPORTER_URLS": "http://a:9747, https://b:9747"}
    assert load(raw={}, environ=env).webhook.exporter_urls == ["http://a:9747", "https://b:9747"]


def test_agent_exporter_urls_is_the_list_and_exporter_url_its_one_item_form():
    assert load(raw={}, environ={}).agent.exporter_urls == ["http://127.0.0.1:9747"]
    one = load(raw={"agent": {"exporter_url": "https://a:9747"}}, environ={}).agent
    assert one.exporter_urls == ["https://a:9747"]
    pair = load(raw={"agent": {"exporter_urls": ["http://a:9747", "http://b:9747"]}}, environ={}).agent
    assert pair.exporter_urls == ["http://a:9747", "http://b:9747"] and pair.exporter_url == "http://a:9747"
    env = {"VMHEALTH_AGENT_EXPORTER_URLS": "http://a:9747,http://b:9747"}
    assert load(raw={}, environ=env).agent.exporter_urls == ["http://a:9747", "http://b:9747"]


def test_agent_exporter_url_and_exporter_urls_together_are_refused_naming_both(tmp_path):
    import subprocess
    import sys

    import yaml

    both = {"exporter_url": "http://a:9747", "exporter_urls": ["http://b:9747"]}
    with pytest.raises(ConfigError) as caught:
        load(raw={"agent": both}, environ={})
    [problem] = caught.value.problems
    assert problem.startswith("agent.exporter_urls: ") and "agent.exporter_url and agent.exporter_urls" in problem
    with pytest.raises(ConfigError):  # one in the file, the other from the environment
        load(raw={"agent": {"exporter_urls": ["http://b:9747"]}}, environ={"VMHEALTH_AGENT_EXPORTER_URL": "http://a:1"})
    path = tmp_path / "vmhealth.yml"
    path.write_text(yaml.safe_dump({"agent": {"exporter_urls": ["http://a:9747", "http://a:9747/", "ftp://c"]}}))
    checked = subprocess.run([sys.executable, "-m", "vmhealth", "check-config", str(path)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 2
    assert "agent.exporter_urls: item 1 'http://a:9747/' is listed twice" in checked.stderr
    path.write_text(yaml.safe_dump({"agent": {"exporter_urls": ["http://a:9747", "ftp://c"]}}))
    checked = subprocess.run([sys.executable, "-m", "vmhealth", "check-config", str(path)], capture_output=True,
                             text=True, timeout=60)
    assert "agent.exporter_urls: item 1 'ftp://c' is not an http:// or https:// URL" in checked.stderr
