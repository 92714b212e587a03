"""The webhook (webhook/): the receiver, the policy, actions, incidents, history, the database, the console.

Fixtures shared by this folder's tests.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import responses

from tests.helpers.webhook import FakePve


@pytest.fixture
def pve() -> Iterator[FakePve]:
    mock = responses.RequestsMock(assert_all_requests_are_fired=False)
    mock.start()
    fake = FakePve(mock)
    for vmid in range(900, 910):
        fake.add(vmid, status="stopped", uptime=0)
    fake.add(100)
    try:
        yield fake
    finally:
        mock.stop()
        mock.reset()
