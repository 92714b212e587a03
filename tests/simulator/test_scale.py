"""10,000 guests: the API still answers every listing in full, concurrent clients are served, and the
simulated agents of all guests report from one process with a handful of threads."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.helpers.receiver import Receiver
from vmhealth.simulator.testing import running_simulator

pytestmark = pytest.mark.slow


def test_ten_thousand_guests_and_concurrent_clients() -> None:
    with running_simulator(nodes=20, guests=9_500, lxc=500) as sim:
        vms = requests.get(f"{sim.base_url}/cluster/resources", params={"type": "vm"}, headers=sim.auth_header(),
                           verify=sim.ca_bundle, timeout=60).json()["data"]
        assert len(vms) == 10_000 and len({v["vmid"] for v in vms}) == 10_000
        where = {v["vmid"]: (v["node"], v["type"]) for v in vms}

        def client(offset: int) -> list[int]:
            session = requests.Session()
            codes = []
            for i in range(20):
                vmid = 100 + (offset * 613 + i * 97) % 10_000
                node, kind = where[vmid]
                codes.append(session.get(f"{sim.base_url}/nodes/{node}/{kind}/{vmid}/status/current",
                                         headers=sim.auth_header(), verify=sim.ca_bundle, timeout=60).status_code)
            session.get(f"{sim.base_url}/cluster/resources", headers=sim.auth_header(), verify=sim.ca_bundle,
                        timeout=60).raise_for_status()
            return codes

        with ThreadPoolExecutor(16) as pool:
            codes = [c for batch in pool.map(client, range(16)) for c in batch]
        assert codes == [200] * 320
        assert sim.request_counts()["GET /cluster/resources"] == 17


def test_ten_thousand_agents_from_one_process() -> None:
    receiver = Receiver()
    receiver.thread.start()
    try:
        threads_before = threading.active_count()
        with running_simulator(nodes=10, guests=10_000, agents_to=receiver.url, agent_interval=30.0,
                               agent_key="k") as sim:
            receiver.wait_for(lambda: len(receiver.vmids()) == 10_000, seconds=120)
            stats = sim.agents()
            agent_threads = [t for t in threading.enumerate() if t.name.startswith("sim-agent")]
        assert len(agent_threads) <= 17  # the scheduler and the sender pool, not one per guest
        assert threading.active_count() - threads_before < 100
        assert stats["results"].get("200", 0) >= 10_000 and "error" not in stats["results"]
        per_guest = [body["vmid"] for _, _, body in receiver.reports]
        assert len(per_guest) - len(set(per_guest)) < len(per_guest) // 2  # in turn: nobody reports twice as often
    finally:
        receiver.server.shutdown()
        receiver.server.server_close()
    print(f"\nheartbeats received: {len(receiver.reports)}, threads used by agents: {len(agent_threads)}")
