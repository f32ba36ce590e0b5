"""Five real nodes on loopback commit consecutive slots and hold the same chain."""

from __future__ import annotations

import pytest
import trio

from tests.node.conftest import cluster

pytestmark = [pytest.mark.trio, pytest.mark.slow]


async def wait_certified(nodes, slots: int, timeout: float) -> None:
    with trio.fail_after(timeout):
        while not all(len(n.ledger.recent) >= slots for n in nodes):
            await trio.sleep(0.1)


async def test_five_nodes_commit_consecutive_slots_with_the_same_certificates_and_media(
    tmp_path, node_engine
) -> None:
    async with cluster(tmp_path, node_engine) as c:
        await wait_certified(c.nodes, 3, timeout=30)
        await trio.sleep(0.5)
        # one decision per slot everywhere (the precommit quorums behind it may differ between nodes)
        chains = [{s: cert.value.hash for s, cert in n.ledger.recent.items()} for n in c.nodes]
        common = set.intersection(*(set(ch) for ch in chains))
        run = sorted(common)
        assert any(run[k + 2] - run[k] == 2 for k in range(len(run) - 2)), run  # three consecutive slots
        for s in common:
            assert len({ch[s] for ch in chains}) == 1
        for s in run[:-1]:  # media of committed slots reached every node before its slot ended
            cid = c.nodes[0].ledger.recent[s].value.candidate
            assert all(n.media_store.has(cid) for n in c.nodes), s
        outcomes = c.nodes[0].storage.outcomes()
        assert any(o[2] == "committed" for o in outcomes)
