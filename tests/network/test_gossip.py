"""Gossip between real hosts: valid messages reach everyone once, invalid ones stop at the first hop."""

from __future__ import annotations

import pytest
import trio

from consensus.certificate import Certificate
from consensus.evidence import Evidence
from consensus.messages import Prevote
from generation.recipe import Recipe
from network.libp2p_quirks import MessageTooLarge
from network.topics import Have, Topic, encode_have
from tests.network import messages as m
from tests.network.conftest import CHAIN, meshes_formed, settings, swarm, wait_for

pytestmark = pytest.mark.trio


async def _drain(gossip, topic: Topic, count: int, timeout: float = 10.0) -> list:
    got = []
    with trio.fail_after(timeout):
        while len(got) < count:
            got.append(await gossip.inbox(topic).receive())
    return got


async def test_every_valid_message_reaches_every_host_once_over_a_ring() -> None:
    n = 6
    async with swarm(n, topology="ring") as sw:
        for topic in Topic:
            await meshes_formed(sw, topic.name_for(CHAIN), minimum=2)  # both ring neighbours
        for i in range(n):
            await sw.gossips[i].publish(Topic.VOTES, m.prevote(i))
        await sw.gossips[0].publish(Topic.CERTIFICATES, m.certificate(range(5)))
        await sw.gossips[1].publish(Topic.EVIDENCE, m.evidence(3))
        await sw.gossips[2].publish(Topic.RECIPES, m.recipe())
        await sw.gossips[3].publish(Topic.MEDIA_HAVE, encode_have(b"\x01" * 32, ["/ip4/127.0.0.1/tcp/9"]))
        for i, gossip in enumerate(sw.gossips):
            votes = await _drain(gossip, Topic.VOTES, n - 1)
            assert sorted(v.data for v in votes) == sorted(m.prevote(j) for j in range(n) if j != i)
            assert all(isinstance(v.message, Prevote) for v in votes)
            if i != 0:
                (cert,) = await _drain(gossip, Topic.CERTIFICATES, 1)
                assert isinstance(cert.message, Certificate) and cert.origin == sw.hosts[0].peer_id
            if i != 1:
                (ev,) = await _drain(gossip, Topic.EVIDENCE, 1)
                assert isinstance(ev.message, Evidence) and ev.message.signer == sw.context.directors_keys[3]
            if i != 2:
                (rec,) = await _drain(gossip, Topic.RECIPES, 1)
                assert isinstance(rec.message, Recipe)
            if i != 3:
                (have,) = await _drain(gossip, Topic.MEDIA_HAVE, 1)
                assert have.message == Have(b"\x01" * 32, ("/ip4/127.0.0.1/tcp/9",))
        await trio.sleep(0.5)  # duplicates, if any were delivered, would be queued by now
        for gossip in sw.gossips:
            for topic in Topic:
                assert gossip.inbox(topic).statistics().current_buffer_used == 0
            assert gossip.undelivered == 0  # each validated message was delivered, our own were not cached


async def test_the_same_message_from_two_origins_is_delivered_once() -> None:
    async with swarm(4) as sw:
        await meshes_formed(sw, Topic.VOTES.name_for(CHAIN))
        data = m.prevote(2)
        await sw.gossips[0].publish(Topic.VOTES, data)
        await sw.gossips[1].publish(Topic.VOTES, data)  # a relay re-publishing it under its own peer id
        (got,) = await _drain(sw.gossips[3], Topic.VOTES, 1)
        assert got.data == data
        await trio.sleep(0.5)
        assert sw.gossips[3].inbox(Topic.VOTES).statistics().current_buffer_used == 0


INVALID = {
    "bad_signature": (Topic.VOTES, lambda: m.bad_signature(1)),
    "wrong_topic": (Topic.CERTIFICATES, lambda: m.prevote(1)),
    "too_large": (Topic.VOTES, lambda: b"\x85" + b"\x00" * (70 * 1024)),
    "malformed_cbor": (Topic.VOTES, lambda: b"\xff\xfe not cbor"),
    "stale_slot": (Topic.VOTES, lambda: m.prevote(1, slot=3)),
    "future_slot": (Topic.VOTES, lambda: m.prevote(1, slot=40)),
    "not_a_director": (Topic.VOTES, lambda: m.prevote(9)),
    "bad_certificate": (Topic.CERTIFICATES, lambda: m.certificate(range(2))),
    "bad_recipe": (Topic.RECIPES, m.bad_recipe),
    "bad_address": (Topic.MEDIA_HAVE, lambda: encode_have(b"\x01" * 32, ["/not/an/address"])),
}


LIAR_TOPOLOGY = [(0, 1)] + [(i, j) for i in range(1, 5) for j in range(i + 1, 5)]


async def _liar_in_mesh(sw) -> dict:
    """Host 0 runs no validators and is connected to host 1 only; hosts 1-4 are honest."""
    names = {t: t.name_for(CHAIN) for t in Topic}
    for name in names.values():
        await sw.hosts[0].pubsub.subscribe(name)
    await wait_for(lambda: sw.hosts[0].peer_id in sw.hosts[1].router.mesh.get(names[Topic.VOTES], ()))
    return names


async def test_every_kind_of_invalid_message_is_rejected_at_the_first_hop_and_not_forwarded() -> None:
    # graylisting is switched off here so that every message reaches the validators
    lenient = lambda i: settings(graylist_score=-1e12)  # noqa: E731
    async with swarm(5, topology=LIAR_TOPOLOGY, plain=frozenset({0}), net_settings=lenient) as sw:
        liar, names = sw.hosts[0], await _liar_in_mesh(sw)
        valid = m.prevote(4)
        for topic, make in INVALID.values():
            await liar.pubsub.publish(names[topic], make())
        await liar.pubsub.publish(names[Topic.VOTES], valid)
        await wait_for(lambda: sum(sw.gossips[1].validators.stats.rejected.values()) >= len(INVALID))
        for gossip in sw.gossips[1:]:
            (got,) = await _drain(gossip, Topic.VOTES, 1)
            assert got.data == valid
        await trio.sleep(0.5)  # anything forwarded would have arrived by now
        for gossip in sw.gossips[1:]:
            for topic in Topic:  # the valid message was the only one delivered
                assert gossip.inbox(topic).statistics().current_buffer_used == 0
        rejected = sw.gossips[1].validators.stats.rejected
        for reason, (topic, _) in INVALID.items():
            assert rejected[(topic.value, reason)] == 1, (reason, dict(rejected))
        for gossip in sw.gossips[2:]:  # hosts beyond the first hop never saw them
            assert sum(gossip.validators.stats.rejected.values()) == 0


async def test_a_peer_sending_invalid_messages_loses_its_mesh_place_and_is_then_ignored() -> None:
    # a slow decay, so that the liar is still graylisted however long a loaded machine takes
    slow = lambda i: settings(invalid_penalty_decay=0.99)  # noqa: E731
    async with swarm(5, topology=LIAR_TOPOLOGY, plain=frozenset({0}), net_settings=slow) as sw:
        liar, names = sw.hosts[0], await _liar_in_mesh(sw)
        for _ in range(6):  # 12 x 10 points, far below the graylist of -20
            await liar.pubsub.publish(names[Topic.VOTES], m.bad_signature(1) + b"")
            await liar.pubsub.publish(names[Topic.VOTES], b"\xff garbage %d" % _)
        await wait_for(lambda: liar.peer_id not in sw.hosts[1].router.mesh.get(names[Topic.VOTES], ()))
        assert (names[Topic.VOTES], liar.peer_id) in sw.hosts[1].stats.evicted
        assert sw.hosts[1].router.scorer.is_graylisted(liar.peer_id, [names[Topic.VOTES]])
        await liar.pubsub.publish(names[Topic.VOTES], m.prevote(3))  # valid, but from a graylisted peer
        await trio.sleep(1.0)
        assert sw.gossips[1].inbox(Topic.VOTES).statistics().current_buffer_used == 0
        # the honest mesh is untouched
        assert len(sw.hosts[2].router.mesh[names[Topic.VOTES]]) >= 2


async def test_publishing_refuses_oversize_and_invalid_messages_with_a_clear_error() -> None:
    async with swarm(2) as sw:
        with pytest.raises(MessageTooLarge, match="exceeds"):
            await sw.gossips[0].publish(Topic.VOTES, b"\x00" * (1024 * 1024))
        with pytest.raises(ValueError, match="fails the votes checks"):
            await sw.gossips[0].publish(Topic.VOTES, m.bad_signature(0))
