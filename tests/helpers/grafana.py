"""Helpers of the Grafana tests (no tests here): Grafana's side of a dashboard, done by hand.

Template variables and macros are expanded the way Grafana expands them, so that the queries of a
dashboard can be sent to a real Prometheus and a real PostgreSQL without a Grafana. Only what the
vmhealth dashboards use is covered: `$var`/`${var}` (multi-value variables become a regex alternation
for PromQL and a quoted list for SQL), `$__interval`, `$__rate_interval`, `$__range`, and the
PostgreSQL macros `$__timeFilter`, `$__unixEpochFilter`, `$__unixEpochGroupAlias`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))
PROMETHEUS_TYPE = "prometheus"
POSTGRES_TYPE = "grafana-postgresql-datasource"
_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)")
_REGEX_SPECIAL = re.compile(r"[\\^$.|?*+()\[\]{}]")


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


@dataclass
class Query:
    """One query a dashboard sends: where it comes from, which datasource variable, and its text."""

    where: str
    datasource: dict[str, Any]
    text: str
    kind: str  # "instant", "range" (PromQL) or "sql"
    min_step: float = 0.0  # an annotation's `step`: the least $__interval and query step


def queries(dashboard: dict[str, Any]) -> Iterator[Query]:
    """Every panel target and every annotation query of a dashboard."""
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            where = f"panel {panel['title']!r} target {target['refId']}"
            datasource = target.get("datasource") or panel["datasource"]
            if "rawSql" in target:
                yield Query(where, datasource, target["rawSql"], "sql")
            else:
                yield Query(where, datasource, target["expr"], "instant" if target.get("instant") else "range")
    for annotation in dashboard["annotations"]["list"]:
        if annotation.get("builtIn"):
            continue
        where = f"annotation {annotation['name']!r}"
        if "expr" in annotation:
            step = float(annotation.get("step", "0s").rstrip("s") or 0)
            yield Query(where, annotation["datasource"], annotation["expr"], "range", step)
        else:
            yield Query(where, annotation["datasource"], annotation["target"]["rawSql"], "sql")


@dataclass
class TimeRange:
    """The dashboard's time range and the intervals Grafana derives from it."""

    start: float
    end: float
    scrape_interval: float  # the datasource's timeInterval
    max_data_points: int = 1000
    min_step: float = 0.0

    @property
    def interval(self) -> float:
        """$__interval: the range over the panel's data points, never below the scrape interval or min step."""
        return max(self.scrape_interval, self.min_step, round((self.end - self.start) / self.max_data_points))

    def for_query(self, min_step: float) -> TimeRange:
        """This range for a query with `min_step`, its start moved back so that the last step falls on `end`.

        Grafana's last point is within one step of now; here it is exactly now, so that series that
        appeared in the last seconds before the queries are seen.
        """
        times = dataclasses.replace(self, min_step=min_step)
        steps = math.ceil((times.end - times.start) / times.interval)
        return dataclasses.replace(times, start=times.end - steps * times.interval)

    @property
    def rate_interval(self) -> float:
        return max(self.interval + self.scrape_interval, 4 * self.scrape_interval)


@dataclass
class Variables:
    """Chosen values of a dashboard's template variables (a list for multi-value ones)."""

    values: dict[str, list[str]] = field(default_factory=dict)
    multi: dict[str, bool] = field(default_factory=dict)

    def set(self, name: str, values: list[str], multi: bool) -> None:
        self.values[name] = values
        self.multi[name] = multi

    def _expand(self, text: str, render: Any) -> str:
        def replace(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(2)
            if name not in self.values:
                return match.group(0)  # a built-in ($__interval ...) or a macro, expanded elsewhere
            return render(name, self.values[name])

        return _VARIABLE.sub(replace, text)

    def promql(self, text: str) -> str:
        """Multi-value variables as `(a|b)` of regex-escaped values, as Grafana's Prometheus datasource does."""
        def render(name: str, values: list[str]) -> str:
            if not self.multi[name]:
                return values[0]
            escaped = [_REGEX_SPECIAL.sub(lambda m: "\\\\" + m.group(0), value) for value in values]
            return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"

        return self._expand(text, render)

    def sql(self, text: str) -> str:
        """Multi-value variables as a list of quoted strings, single ones as they are (Grafana's SQL rule)."""
        def render(name: str, values: list[str]) -> str:
            if not self.multi[name]:
                return values[0]
            return ",".join("'" + value.replace("'", "''") + "'" for value in values)

        return self._expand(text, render)


def _seconds(value: float) -> str:
    return f"{int(value)}s"


def builtins(text: str, times: TimeRange) -> str:
    """$__interval, $__rate_interval and $__range as Grafana writes them into a PromQL or SQL query."""
    return (text.replace("$__rate_interval", _seconds(times.rate_interval))
            .replace("$__interval", _seconds(times.interval))
            .replace("$__range", _seconds(times.end - times.start)))


def sql_macros(text: str, times: TimeRange) -> str:
    """The PostgreSQL datasource's macros the dashboards use."""
    start, end = int(times.start), int(times.end)

    def iso(seconds: float) -> str:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")

    def group_alias(match: re.Match[str]) -> str:
        column, interval = (part.strip() for part in match.group(1).split(","))
        step = int(interval.rstrip("s"))
        return f'floor(({column})/{step})*{step} AS "time"'

    text = re.sub(r"\$__timeFilter\(([^)]+)\)",
                  lambda m: f"{m.group(1)} BETWEEN '{iso(start)}' AND '{iso(end)}'", text)
    text = re.sub(r"\$__unixEpochFilter\(([^)]+)\)", lambda m: f"{m.group(1)} >= {start} AND {m.group(1)} <= {end}",
                  text)
    text = re.sub(r"\$__unixEpochGroupAlias\(([^)]+)\)", group_alias, text)
    if "$__" in text:
        raise AssertionError(f"a Grafana macro this test does not know: {text}")
    return text


def label_values(definition: str) -> tuple[str, str]:
    """`label_values(selector, label)` -> (selector, label)."""
    match = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", definition.strip())
    if not match:
        raise AssertionError(f"not a label_values(selector, label) query: {definition}")
    return match.group(1).strip(), match.group(2)
