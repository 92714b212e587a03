"""Every link into the documentation resolves: the relative links of README.md and docs/*.md, the
alerts' `runbook_url`s and the dashboards', configurations' and code's references to docs/ name an
existing file and, with a `#anchor`, a heading of it (GitHub's anchors).

Cost: well under a second (files only).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
REPO_URL = "https://github.com/vmhealth/vmhealth/blob/main/"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Folders whose files may name a docs page in a comment, a description or a message.
REFERRING = ("prometheus", "alertmanager", "grafana", "deploy", "agent", "exporter", "webhook", "vmhealth",
             "simulator", "scripts", "bench")
REFERENCE = re.compile(r"(?:" + re.escape(REPO_URL) + r")?((?:docs/[\w/-]+|README)\.(?:md|yaml|png))(#[\w-]+)?")
FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
CODE_SPAN = re.compile(r"(`+).+?\1", re.S)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def without_code(text: str) -> str:
    """The text without fenced code blocks and code spans, where brackets are not links."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: the rendered text, lower case, punctuation but - and _ dropped,
    spaces to -."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link counts by its text
    text = re.sub(r"<[^>]+>", "", text).lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor in `page`; a repeated heading gets -1, -2, … as on GitHub."""
    seen: dict[str, int] = {}
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", FENCE.sub("", page.read_text()), flags=re.M):
        base = slug(heading)
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def problem(source: Path, target: str) -> str | None:
    """Why the link `target` written in `source` does not resolve, or None."""
    path, _, anchor = target.partition("#")
    page = (source.parent / path).resolve() if path else source
    if not page.is_file():
        return f"{path}: no such file"
    if anchor and page.suffix == ".md" and anchor not in anchors(page):
        return f"{path or source.name} has no heading #{anchor}"
    return None


def relative_links(page: Path) -> Iterator[str]:
    for target in LINK.findall(without_code(page.read_text())):
        if not re.match(r"[a-z][a-z0-9+.-]*:", target, re.I):  # http:, https:, mailto:
            yield target


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page: Path) -> None:
    broken = [f"({target}): {why}" for target in relative_links(page) if (why := problem(page, target))]
    assert broken == [], f"{page.relative_to(ROOT)}: broken links"


def test_every_runbook_url_names_a_heading() -> None:
    urls = []
    for rules in sorted((ROOT / "prometheus" / "rules").glob("*.yml")):
        for group in yaml.safe_load(rules.read_text())["groups"]:
            urls += [rule["annotations"]["runbook_url"] for rule in group["rules"]
                     if "runbook_url" in rule.get("annotations", {})]
    assert urls, "no runbook_url found: the rules moved?"
    broken = []
    for url in urls:
        assert url.startswith(REPO_URL), url
        if why := problem(ROOT / "README.md", url.removeprefix(REPO_URL)):
            broken.append(f"{url}: {why}")
    assert broken == []


def referring_files() -> Iterator[Path]:
    for folder in REFERRING:
        for path in sorted((ROOT / folder).rglob("*")):
            if path.is_file() and path.suffix in (".py", ".yml", ".yaml", ".json", ".sh", ".service", ".ps1"):
                yield path


def test_every_reference_into_the_docs_resolves() -> None:
    """Dashboards, configurations and messages name docs/ pages by their path from the repository's root."""
    broken = []
    found = 0
    for path in referring_files():
        for target, anchor in REFERENCE.findall(path.read_text(errors="replace")):
            found += 1
            if why := problem(ROOT / "README.md", target + anchor):
                broken.append(f"{path.relative_to(ROOT)}: {target}{anchor}: {why}")
    assert found, "no reference into docs/ found: the pattern is wrong?"
    assert broken == []


def test_the_dashboards_point_into_the_docs() -> None:
    """The check above covers the dashboards: they do refer to the runbook."""
    dashboards = " ".join(p.read_text() for p in (ROOT / "grafana").rglob("*.json"))
    assert REFERENCE.search(dashboards)


@pytest.mark.parametrize(("heading", "anchor"), [
    ("Upgrading without a blind spot", "upgrading-without-a-blind-spot"),
    ("Why these `for:` values", "why-these-for-values"),
    ('What "hung" means, in PromQL', "what-hung-means-in-promql"),
    ("7. Forged guests before the first poll (`bench/prepoll_memory.py`)",
     "7-forged-guests-before-the-first-poll-benchprepoll_memorypy"),
    ("See [the agent](agent.md)", "see-the-agent"),
    ("Heartbeat → series", "heartbeat--series"),
])
def test_anchors_follow_githubs_rules(heading: str, anchor: str) -> None:
    assert slug(heading) == anchor


def test_a_repeated_heading_gets_a_number(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text("# Title\n\n## Tests\n\n```sh\n# Tests\n```\n\n## Tests\n\n### Tests\n")
    assert anchors(page) == {"title", "tests", "tests-1", "tests-2"}


def test_a_broken_link_is_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other\n\n## A section\n")
    page = tmp_path / "page.md"
    page.write_text("[ok](other.md#a-section) [gone](missing.md) [no heading](other.md#nothing) "
                    "`[in code](missing.md)` [web](https://example.org/x.md)\n")
    assert [problem(page, target) for target in relative_links(page)] == [
        None, "missing.md: no such file", "other.md has no heading #nothing"]
