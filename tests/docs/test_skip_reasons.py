"""Every reason the webhook can refuse with (`Skip("<reason>", …)`) is in the skip-reason vocabulary of
docs/webhook.md, so that a new policy check cannot ship without its word being explained.

Cost: well under a second (files only).
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SECTION = "## Skip reasons and other outcomes"


def reasons_in_code() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "webhook").rglob("*.py"):
        found |= set(re.findall(r'\bSkip\(\s*"([a-z-]+)"', path.read_text()))
    return found


def documented(text: str) -> set[str]:
    """The code-spanned words of the vocabulary's paragraph, up to "Other outcomes"."""
    section = text.split(SECTION, 1)[1].split("\n#", 1)[0]
    return set(re.findall(r"`([a-z-]+)`", section.split("Other outcomes", 1)[0]))


def test_every_skip_reason_is_documented() -> None:
    reasons = reasons_in_code()
    assert len(reasons) >= 20, f"found only {sorted(reasons)}: the pattern is wrong?"
    missing = reasons - documented((ROOT / "docs" / "webhook.md").read_text())
    assert missing == set(), "skip reasons missing from docs/webhook.md"


def test_a_missing_reason_is_found() -> None:
    text = f"{SECTION}\n\n`disabled` (kill switch) · `busy`.\nOther outcomes: `success`, `cooldown`.\n"
    assert documented(text) == {"disabled", "busy"}
