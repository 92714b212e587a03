"""The repository's Prometheus rules and Alertmanager routing, shipped inside the package.

In a source checkout they are read from `prometheus/` and `alertmanager/` at the top of the tree;
an installed vmhealth carries copies of the same files (pyproject.toml maps those folders into
`vmhealth.bundled`), so `vmhealth demo` runs the very rules the repository tests.
"""

from __future__ import annotations

from pathlib import Path

_SOURCE_TREE = Path(__file__).resolve().parents[2]
_INSTALLED = Path(__file__).resolve().parent


def bundled_file(relative: str) -> Path:
    """`prometheus/rules/vmhealth-alerts.yml` and the like, from the checkout or the installed package."""
    for root in (_SOURCE_TREE, _INSTALLED):
        candidate = root / relative
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{relative} is neither in {_SOURCE_TREE} nor in {_INSTALLED}")
