"""docker-compose.yml as Compose sees it, and the Prometheus and Alertmanager files its containers start on."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENV_FILES = {"example": ROOT / ".env.example", "demo": ROOT / "deploy/compose/demo.env"}
VMHEALTH_SERVICES = {"exporter": "exporter", "exporter-b": "exporter", "webhook": "webhook"}  # -> component
SECRETS_DIR = "/run/secrets/"
_INTERPOLATION = re.compile(r"\$\$|\$\{(?P<name>\w+)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}|\$(?P<bare>\w+)")


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines as Compose reads a .env file (comments after ` #` on a line are left out)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        values[key.strip()] = re.sub(r"\s+#.*$", "", value).strip()
    return values


def interpolate(value: Any, env: dict[str, str], used: set[str]) -> Any:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `$$` over a parsed file."""
    if isinstance(value, dict):
        return {key: interpolate(item, env, used) for key, item in value.items()}
    if isinstance(value, list):
        return [interpolate(item, env, used) for item in value]
    if not isinstance(value, str):
        return value

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group("name") or match.group("bare")
        used.add(name)
        op, arg = match.group("op"), match.group("arg")
        current = env.get(name)
        missing = current is None or (current == "" and op is not None and op.startswith(":"))
        if op and op.endswith("?") and missing:
            raise AssertionError(f"{name} is required: {arg}")
        if op and op.endswith("-") and missing:
            return arg
        return current or ""

    return _INTERPOLATION.sub(replace, value)


def compose(env_name: str = "example") -> tuple[dict[str, Any], set[str]]:
    """The compose file as Compose sees it with one env file: YAML anchors merged, variables replaced."""
    used: set[str] = set()
    document = interpolate(yaml.safe_load(COMPOSE_FILE.read_text()), read_env_file(ENV_FILES[env_name]), used)
    return document, used


def services(env_name: str = "example") -> dict[str, dict[str, Any]]:
    return compose(env_name)[0]["services"]



_RENDER = re.compile(r"^sed -f (?P<script>\S+) (?P<source>\S+) > (?P<target>\S+) && exec ")


def started_config(service_name: str, env_name: str = "example") -> tuple[str, str]:
    """(path in the container, text) of the configuration `service_name` starts on: its entrypoint's real
    `sed -f` run over the repository files that its volumes mount at the script's and the source's paths."""
    service = services(env_name)[service_name]
    shell, flag, script = service["entrypoint"][:3]
    assert (shell, flag) == ("/bin/sh", "-c"), service["entrypoint"]
    match = _RENDER.match(script)
    assert match, f"{service_name}: entrypoint {script!r} does not render its configuration with sed -f"
    mounts = {target: ROOT / source for source, target in
              (volume.split(":")[:2] for volume in service["volumes"]) if source.startswith(".")}
    rendered = subprocess.run(["sed", "-f", str(mounts[match["script"]]), str(mounts[match["source"]])],
                              capture_output=True, text=True, check=True, timeout=30)
    return match["target"], rendered.stdout
