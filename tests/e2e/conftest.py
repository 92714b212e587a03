"""The whole product at once: the simulator over HTTPS, `vmhealth exporter` and `vmhealth webhook` as real
processes, the real Prometheus and Alertmanager (tests.helpers.e2e). The slowest folder: run it last
when iterating (`pytest tests/e2e`).

Fixtures shared by this folder's tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from vmhealth.stack.running import Stack


@pytest.fixture
def healed(stack: Stack) -> Iterator[None]:
    """Every fault a test switched on is switched off again, and every process it stopped is started
    again, also when it fails; a module uses it with `pytest.mark.usefixtures("healed")`."""
    try:
        yield
    finally:
        stack.sim.heal()
        for name, process in stack.processes.items():
            if not process.running:
                stack.start(name)
