"""The fault layer: delay, loss and partition between chosen peers, below every protocol."""

from __future__ import annotations

import pytest
import trio
from libp2p.network.exceptions import SwarmException

from network.faults import RETRANSMIT_TIMEOUT_SEC, FaultPlan, LinkFault
from network.topics import Topic, encode_have
from tests.network.conftest import CHAIN, identity, meshes_formed, swarm

pytestmark = pytest.mark.trio

HAVE = Topic.MEDIA_HAVE


async def _receive(gossip, timeout: float) -> bytes | None:
    with trio.move_on_after(timeout):
        return (await gossip.inbox(HAVE).receive()).data
    return None


async def test_a_delayed_link_delivers_no_earlier_than_its_delay_and_other_links_are_untouched() -> None:
    plan = FaultPlan()
    async with swarm(3, faults=plan, topology=[(0, 1), (0, 2)]) as sw:
        await meshes_formed(sw, HAVE.name_for(CHAIN))
        plan.set_link(sw.hosts[0].peer_id, sw.hosts[1].peer_id, delay_sec=0.4)
        start = trio.current_time()
        await sw.gossips[0].publish(HAVE, encode_have(b"\x01" * 32))
        assert await _receive(sw.gossips[2], 5) == encode_have(b"\x01" * 32)
        assert await _receive(sw.gossips[1], 5) == encode_have(b"\x01" * 32)
        assert trio.current_time() - start >= 0.4


async def test_a_partition_holds_messages_back_and_healing_delivers_them() -> None:
    plan = FaultPlan()
    async with swarm(4, faults=plan) as sw:
        await meshes_formed(sw, HAVE.name_for(CHAIN), minimum=3)
        ids = [h.peer_id for h in sw.hosts]
        plan.partition(ids[:2], ids[2:])
        msg = encode_have(b"\x02" * 32)
        await sw.gossips[0].publish(HAVE, msg)
        assert await _receive(sw.gossips[1], 5) == msg  # same side
        assert await _receive(sw.gossips[2], 1.0) is None  # other side: nothing crosses
        assert await _receive(sw.gossips[3], 0.1) is None
        plan.heal()
        assert await _receive(sw.gossips[2], 10) == msg
        assert await _receive(sw.gossips[3], 10) == msg


async def test_no_new_connection_forms_across_a_partition_until_it_heals() -> None:
    plan = FaultPlan()
    async with swarm(2, faults=plan, topology=[]) as sw:
        a, b = sw.hosts
        plan.partition([a.peer_id], [b.peer_id])
        with pytest.raises(SwarmException):
            await a.connect(b.addrs()[0], keep=False)
        assert not a.is_connected(b.peer_id)
        plan.heal()
        await a.connect(b.addrs()[0], keep=False)
        assert a.is_connected(b.peer_id)


async def test_loss_stalls_a_reliable_stream_but_never_corrupts_it() -> None:
    plan = FaultPlan(seed=3)
    async with swarm(2, faults=plan) as sw:
        await meshes_formed(sw, HAVE.name_for(CHAIN))
        plan.set_link(sw.hosts[0].peer_id, sw.hosts[1].peer_id, loss=0.5)
        sent = [encode_have(i.to_bytes(32, "big")) for i in range(20)]
        for data in sent:
            await sw.gossips[0].publish(HAVE, data)
        got = set()
        with trio.fail_after(60):
            while len(got) < len(sent):
                got.add((await sw.gossips[1].inbox(HAVE).receive()).data)
        assert got == set(sent)


async def test_losses_are_drawn_per_link_from_the_plan_seed() -> None:
    a, b, c = (identity(i).peer_id for i in range(3))
    draws = lambda plan, x, y: [plan.rng_for(x, y).random() for _ in range(5)]  # noqa: E731
    assert draws(FaultPlan(seed=1), a, b) == draws(FaultPlan(seed=1), b, a)  # a link has no direction
    assert draws(FaultPlan(seed=1), a, b) != draws(FaultPlan(seed=2), a, b)
    assert draws(FaultPlan(seed=1), a, b) != draws(FaultPlan(seed=1), a, c)
    assert RETRANSMIT_TIMEOUT_SEC == 0.2


async def test_fault_values_are_checked_and_clearing_restores_a_clean_link() -> None:
    with pytest.raises(ValueError, match="loss"):
        LinkFault(loss=1.0)
    with pytest.raises(ValueError, match="delay_sec"):
        LinkFault(delay_sec=-1)
    plan = FaultPlan()
    a, b = identity(0).peer_id, identity(1).peer_id
    plan.set_link(a, b, delay_sec=0.5, partitioned=True)
    assert plan.link(b, a) == LinkFault(delay_sec=0.5, partitioned=True)
    plan.heal()
    assert plan.link(a, b) == LinkFault(delay_sec=0.5)
    plan.clear()
    assert plan.link(a, b) == LinkFault()
