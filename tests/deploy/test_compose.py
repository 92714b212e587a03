"""docker-compose.yml, the Dockerfile and the compose configuration, checked without a Docker engine.

The compose file is interpolated with `.env.example` (and the demo's env file) the way Compose does
and validated against the Compose Specification's JSON schema (tests/data/compose-spec.json). Then
what Docker would only find out at `up`: every bind-mounted path and build file exists, every
container runs as a non-root user from a pinned image with a healthcheck, every vmhealth command
parses with the real CLI, the configuration each vmhealth container gets passes `vmhealth
check-config`, and the compose variants of prometheus.yml and alertmanager.yml say what the
repository's files say and pass promtool and amtool. A few seconds.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from tests.helpers.compose_file import (
    COMPOSE_FILE,
    ENV_FILES,
    ROOT,
    SECRETS_DIR,
    VMHEALTH_SERVICES,
    compose,
    interpolate,
    read_env_file,
    services,
    started_config,
)
from tests.helpers.requirements import binary

SCHEMA = json.loads((ROOT / "tests/data/compose-spec.json").read_text())


def validator() -> jsonschema.Draft7Validator:
    return jsonschema.Draft7Validator(SCHEMA)


# --- the Compose Specification ---------------------------------------------------------------------

@pytest.mark.parametrize("env_name", sorted(ENV_FILES))
def test_compose_file_follows_the_compose_specification(env_name: str) -> None:
    document, _ = compose(env_name)
    errors = sorted(validator().iter_errors(document), key=lambda e: list(e.absolute_path))
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_the_schema_refuses_what_compose_refuses() -> None:
    """The schema copy is the real one: a misspelled key, a bad depends_on condition are errors."""
    document, _ = compose()
    document["services"]["exporter"]["healthchek"] = document["services"]["exporter"].pop("healthcheck")
    assert not validator().is_valid(document)
    document, _ = compose()
    document["services"]["grafana"]["depends_on"]["postgres"]["condition"] = "service_up"
    assert not validator().is_valid(document)


def test_every_variable_is_in_the_env_files() -> None:
    _, used = compose()
    for env_name, path in ENV_FILES.items():
        missing = used - set(read_env_file(path))
        assert not missing, f"{path.name} lacks {sorted(missing)} ({env_name})"
    secrets = compose()[0]["secrets"]
    for name, secret in secrets.items():
        assert secret["environment"] in read_env_file(ENV_FILES["example"]), f"secret {name}"


def test_a_missing_required_variable_is_named() -> None:
    env = read_env_file(ENV_FILES["example"])
    del env["PVE_HOST"]
    with pytest.raises(AssertionError, match=r"PVE_HOST is required: set PVE_HOST in \.env"):
        interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), env, set())


# --- what `docker compose up` would trip on --------------------------------------------------------

def test_every_bind_mount_and_build_file_exists() -> None:
    document, _ = compose()
    named = set(document.get("volumes", {}))
    for name, service in document["services"].items():
        build = service.get("build")
        if build:
            context = ROOT / build["context"]
            assert context.is_dir(), f"{name}: build context {build['context']}"
            assert (context / build.get("dockerfile", "Dockerfile")).is_file(), f"{name}: dockerfile"
        for volume in service.get("volumes", []):
            source, target = volume.split(":")[:2]
            assert target.startswith("/"), f"{name}: {volume}"
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name}: mounts {source}, which is not in the repository"
            else:
                assert source in named, f"{name}: volume {source} is not declared"
        for secret in service.get("secrets", []):
            secret_name = secret if isinstance(secret, str) else secret["source"]
            assert secret_name in document["secrets"], f"{name}: secret {secret_name} is not declared"


def test_every_container_runs_as_non_root_from_a_pinned_image_with_a_healthcheck() -> None:
    for name, service in services().items():
        user = str(service.get("user", ""))
        assert user, f"{name}: no user: the image's default may be root"
        assert user.split(":")[0] not in ("0", "root"), f"{name} runs as root"
        assert service.get("healthcheck", {}).get("test"), f"{name}: no healthcheck"
        image = service["image"]
        if "build" not in service:
            tag = image.rpartition(":")[2]
            assert ":" in image and tag != "latest" and re.search(r"\d", tag), f"{name}: {image} is not pinned"


def test_dockerfile_is_multi_stage_and_runs_as_a_user() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in re.sub(r"\\\n", " ", dockerfile).splitlines()
                    if line.strip() and not line.lstrip().startswith("#")]
    stages = [args for keyword, args in instructions if keyword == "FROM"]
    assert len(stages) >= 2, "a builder stage and a runtime stage"
    users = [args.strip() for keyword, args in instructions if keyword == "USER"]
    assert users and users[-1].split(":")[0] not in ("0", "root"), "the runtime stage switches to a user"
    assert any(keyword == "HEALTHCHECK" for keyword, _ in instructions)
    ignored = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    for keyword, args in instructions:
        if keyword == "COPY" and not args.startswith("--from"):
            *sources, _ = args.split()
            for source in sources:
                assert (ROOT / source).exists(), f"COPY {source}: not in the repository"
                assert source.rstrip("/") not in ignored, f"COPY {source}: excluded by .dockerignore"
    entrypoint = next(json.loads(args) for keyword, args in instructions if keyword == "ENTRYPOINT")
    assert entrypoint == ["vmhealth"]


def _vmhealth_services(env_name: str = "example") -> dict[str, dict[str, Any]]:
    return {name: s for name, s in services(env_name).items() if s.get("image") == "vmhealth:local"}


@pytest.mark.parametrize("env_name", sorted(ENV_FILES))
def test_every_vmhealth_command_parses_with_the_real_cli(env_name: str) -> None:
    from vmhealth.cli import COMMANDS, build_parser

    found = _vmhealth_services(env_name)
    assert set(found) == {"exporter", "exporter-b", "webhook", "sim"}
    for name, service in found.items():
        command = service["command"]
        assert command[0] in COMMANDS, f"{name}: vmhealth has no command {command[0]}"
        build_parser(command[0]).parse_args(command)  # SystemExit(2) on an unknown or malformed option
        helped = subprocess.run([sys.executable, "-m", "vmhealth", command[0], "--help"], capture_output=True,
                                text=True, timeout=60)
        assert helped.returncode == 0, helped.stderr
        check = service["healthcheck"]["test"]
        assert check[:3] == ["CMD", "python", "-c"], f"{name}: the image has Python, not curl"
        compile(check[3], f"{name} healthcheck", "exec")


def test_the_exporter_pair_differs_only_in_database_poll_offset_and_port() -> None:
    """Two independent replicas: the same cluster and key, a database each, polls half an interval apart,
    and the demo's simulated agents report to both."""
    found = services("demo")
    first, second = found["exporter"]["environment"], found["exporter-b"]["environment"]
    assert set(first) == set(second)
    assert {k for k in first if first[k] != second[k]} == {"VMHEALTH_EXPORTER_DATABASE_URL",
                                                          "VMHEALTH_EXPORTER_POLL_OFFSET"}
    assert second["VMHEALTH_EXPORTER_DATABASE_URL"].endswith("/vmhealth_exporter_b")
    assert "vmhealth_exporter_b" in (ROOT / "deploy/compose/postgres-init.sql").read_text()
    assert found["exporter"]["ports"] != found["exporter-b"]["ports"]
    assert "--agents-to=http://exporter:9747,http://exporter-b:9747" in found["sim"]["command"]


def test_healthchecks_ask_the_port_each_program_listens_on() -> None:
    config = yaml.safe_load((ROOT / "deploy/compose/vmhealth.yml").read_text())
    found = _vmhealth_services()
    for name, component in VMHEALTH_SERVICES.items():
        port = config[component]["listen"].rpartition(":")[2]
        assert f"127.0.0.1:{port}/healthz" in found[name]["healthcheck"]["test"][3]
        assert any(p.endswith(f":{port}") for p in found[name]["ports"]), f"{name} publishes {port}"
    assert "8006" in found["sim"]["healthcheck"]["test"][3]


@pytest.mark.parametrize("env_name", sorted(ENV_FILES))
@pytest.mark.parametrize("service_name", sorted(VMHEALTH_SERVICES))
def test_container_configuration_passes_check_config(env_name: str, service_name: str, tmp_path: Path) -> None:
    """deploy/compose/vmhealth.yml with the service's environment and secrets, as its container sees them."""
    document, _ = compose(env_name)
    env_values = read_env_file(ENV_FILES[env_name])
    service = document["services"][service_name]
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for secret in service["secrets"]:
        (secrets / secret).write_text(env_values[document["secrets"][secret]["environment"]])

    def local(text: str) -> str:
        return text.replace(SECRETS_DIR, f"{secrets}/")

    config = tmp_path / "vmhealth.yml"
    config.write_text(local((ROOT / "deploy/compose/vmhealth.yml").read_text()))
    env = {k: v for k, v in os.environ.items() if not k.startswith("VMHEALTH_")}
    env.update({key: local(str(value)) for key, value in service["environment"].items()})
    checked = subprocess.run(
        [sys.executable, "-m", "vmhealth", "check-config", str(config), "--component", VMHEALTH_SERVICES[service_name]],
        capture_output=True, text=True, env=env, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "ok (1 cluster(s)" in checked.stdout
    # and the file alone is not enough: the cluster must come from .env
    bare = subprocess.run([sys.executable, "-m", "vmhealth", "check-config", str(config), "--component",
                           VMHEALTH_SERVICES[service_name]], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in env.items() if not k.startswith("VMHEALTH_CLUSTERS")})
    assert bare.returncode == 2 and "clusters" in bare.stderr


# --- the compose variants of the Prometheus and Alertmanager configuration ---------------------------

def _loopback_to_services(text: str) -> str:
    return (text.replace("127.0.0.1:9093", "alertmanager:9093").replace("127.0.0.1:9747", "exporter:9747")
            .replace("127.0.0.1:9749", "webhook:9749"))


@pytest.mark.parametrize("service_name", ["prometheus", "alertmanager"])
def test_compose_starts_on_the_repository_files_with_only_the_addresses_and_tokens_changed(service_name: str) -> None:
    """The repository's file is mounted and run through deploy/compose/*.sed: the service names for loopback,
    both exporters of the pair, and, in Prometheus' jobs, the read tokens the stack sets (the repository's
    file shows them commented out, as a site without tokens must not send a missing file)."""
    name = {"prometheus": "prometheus/prometheus.yml", "alertmanager": "alertmanager/alertmanager.yml"}[service_name]
    target, text = started_config(service_name)
    assert f"--config.file={target}" in services()[service_name]["command"]
    repository = yaml.safe_load(_loopback_to_services((ROOT / name).read_text()))
    variant = yaml.safe_load(text)
    for job in variant.get("scrape_configs", []):
        job.pop("authorization", None)
    if service_name == "prometheus":  # compose runs an exporter pair, scraped as one job
        [exporters] = [job for job in variant["scrape_configs"] if job["job_name"] == "vmhealth-exporter"]
        assert exporters["static_configs"][0]["targets"] == ["exporter:9747", "exporter-b:9747"]
        exporters["static_configs"][0]["targets"].remove("exporter-b:9747")
    assert variant == repository
    changed = [line for line in text.splitlines() if line not in (ROOT / name).read_text().splitlines()]
    assert changed and all("authorization:" in line or ":9" in line for line in changed), changed


def test_prometheus_in_compose_sends_each_read_token_the_stack_sets() -> None:
    """Both vmhealth jobs send a credential from a file that a compose secret puts there, and that secret
    is the one the exporter's or the webhook's `_FILE` variable reads."""
    jobs = {job["job_name"]: job for job in yaml.safe_load(started_config("prometheus")[1])["scrape_configs"]}
    mounted = {s["target"]: s["source"] for s in services()["prometheus"]["secrets"]}
    for job, service, variable in (("vmhealth-exporter", "exporter", "VMHEALTH_EXPORTER_READ_TOKEN_FILE"),
                                   ("vmhealth-exporter", "exporter-b", "VMHEALTH_EXPORTER_READ_TOKEN_FILE"),
                                   ("vmhealth-webhook", "webhook", "VMHEALTH_WEBHOOK_METRICS_TOKEN_FILE")):
        secret = mounted[jobs[job]["authorization"]["credentials_file"]]
        assert services()[service]["environment"][variable] == f"/run/secrets/{secret}", job
        assert secret in services()[service]["secrets"], job
    assert "authorization" not in jobs["vmhealth-agent"]


@pytest.mark.binaries
def test_prometheus_config_as_mounted_passes_promtool(tmp_path: Path) -> None:
    promtool = binary("promtool")
    for service_mount in services()["prometheus"]["volumes"]:
        source, target = service_mount.split(":")[:2]
        if source.startswith("."):
            destination = tmp_path / target.lstrip("/")
            destination.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if (ROOT / source).is_dir() else shutil.copy)(ROOT / source, destination)
    for secret in services()["prometheus"]["secrets"]:
        (tmp_path / secret["target"].lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / secret["target"].lstrip("/")).write_text("a-token-from-the-env-file")
    target, text = started_config("prometheus")
    started = tmp_path / target.lstrip("/")
    # absolute paths in the file (the secrets) are looked up under tmp_path, as the container sees them
    started.write_text(text.replace("credentials_file: /", f"credentials_file: {tmp_path}/"))
    checked = subprocess.run([promtool, "check", "config", str(started)], capture_output=True,
                             text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "vmhealth-alerts.yml" in checked.stdout + checked.stderr


@pytest.mark.binaries
def test_alertmanager_config_passes_amtool(tmp_path: Path) -> None:
    amtool = binary("amtool")
    _, text = started_config("alertmanager")
    (tmp_path / "alertmanager.yml").write_text(text)
    checked = subprocess.run([amtool, "check-config", str(tmp_path / "alertmanager.yml")],
                             capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    alertmanager = services()["alertmanager"]
    token = yaml.safe_load(text)["receivers"][1]
    assert token["webhook_configs"][0]["url"] == "http://webhook:9749/alerts"
    credentials = token["webhook_configs"][0]["http_config"]["authorization"]["credentials_file"]
    assert {"source": "webhook_token", "target": credentials} in alertmanager["secrets"]


# --- Grafana in the stack ----------------------------------------------------------------------------

def test_grafana_gets_its_provisioning_dashboards_and_datasources() -> None:
    grafana = services()["grafana"]
    mounts = {source: target for source, target, *_ in (v.split(":") for v in grafana["volumes"])}
    providers = yaml.safe_load((ROOT / "grafana/provisioning/dashboards/vmhealth.yml").read_text())["providers"]
    assert mounts["./grafana/dashboards"] == providers[0]["options"]["path"]
    assert mounts["./grafana/provisioning/datasources"] == "/etc/grafana/provisioning/datasources"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (ROOT / "grafana/dashboards" / Path(home).name).is_file()
    sources = yaml.safe_load((ROOT / "grafana/provisioning/datasources/vmhealth.yml").read_text())["datasources"]
    by_type = {source["type"]: source for source in sources}
    assert by_type["prometheus"]["url"] == "http://prometheus:9090"
    assert by_type["grafana-postgresql-datasource"]["url"] == "postgres:5432"
    password = by_type["grafana-postgresql-datasource"]["secureJsonData"]["password"]
    secret = re.fullmatch(r"\$__file\{/run/secrets/(\w+)\}", password).group(1)
    assert secret in grafana["secrets"]
    for variable in re.findall(r"\$\{(\w+)\}", (ROOT / "grafana/provisioning/datasources/vmhealth.yml").read_text()):
        assert variable in grafana["environment"], f"the datasource file reads ${variable} from Grafana's environment"
