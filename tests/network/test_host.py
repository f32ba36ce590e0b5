"""The host: Noise only, kept connections, bootstrap with back-off."""

from __future__ import annotations

import multiaddr
import pytest
import trio
from libp2p import new_host
from libp2p.crypto.ed25519 import create_new_key_pair
from libp2p.network.exceptions import SwarmException
from libp2p.peer.peerinfo import info_from_p2p_addr
from libp2p.security.insecure.transport import PLAINTEXT_PROTOCOL_ID, InsecureTransport
from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_PROTOCOL_ID

from network.host import open_host
from network.settings import NetworkSettings, ReconnectSettings
from tests.network.conftest import identity, swarm, wait_for

pytestmark = pytest.mark.trio


async def test_noise_is_the_only_security_transport_and_a_plaintext_peer_cannot_connect() -> None:
    async with swarm(1) as sw:
        ours = sw.hosts[0]
        offered = list(ours.host.get_network().upgrader.security_multistream.transports)
        assert offered == [NOISE_PROTOCOL_ID]
        kp = create_new_key_pair(b"\x09" * 32)
        plaintext = new_host(key_pair=kp, sec_opt={PLAINTEXT_PROTOCOL_ID: InsecureTransport(kp)})
        async with plaintext.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            with pytest.raises(SwarmException):
                with trio.fail_after(10):
                    await plaintext.connect(info_from_p2p_addr(ours.addrs()[0]))
            assert plaintext.get_id() not in ours.connected_peers()


async def test_a_default_libp2p_peer_connects_over_noise() -> None:
    async with swarm(1) as sw:
        kp = create_new_key_pair(b"\x0a" * 32)
        other = new_host(key_pair=kp)  # offers noise, TLS, secio and plaintext
        async with other.run([multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]):
            with trio.fail_after(10):
                await other.connect(info_from_p2p_addr(sw.hosts[0].addrs()[0]))
            await wait_for(lambda: other.get_id() in sw.hosts[0].connected_peers())
            conn = sw.hosts[0].host.get_network().connections[other.get_id()][0]
            assert conn.get_negotiated_security_protocol() in (None, NOISE_PROTOCOL_ID)
            assert conn.get_negotiated_security_protocol() != PLAINTEXT_PROTOCOL_ID


async def test_a_kept_peer_is_redialled_after_its_connection_drops() -> None:
    async with swarm(2, topology=[]) as sw:
        a, b = sw.hosts
        await a.connect(b.addrs()[0], keep=True)
        assert a.is_connected(b.peer_id)
        await b.host.disconnect(a.peer_id)  # the far side drops us
        await wait_for(lambda: a.stats.reconnects >= 1 and a.is_connected(b.peer_id))
        a.forget(b.peer_id)
        await b.host.disconnect(a.peer_id)
        await trio.sleep(0.5)
        assert not a.is_connected(b.peer_id)  # forgotten peers are not redialled


async def test_bootstrap_peers_are_dialled_at_start_and_dead_ones_retried_with_backoff() -> None:
    async with swarm(1) as sw:
        seed = sw.hosts[0]
        dead = f"/ip4/127.0.0.1/tcp/1/p2p/{identity(7).peer_id}"
        cfg = NetworkSettings(
            listen=("/ip4/127.0.0.1/tcp/0",),
            bootstrap=(str(seed.addrs()[0]), dead),
            reconnect=ReconnectSettings(initial_backoff_sec=0.1, max_backoff_sec=0.4, dial_timeout_sec=1),
        )
        async with open_host(identity(5), cfg) as joiner:
            await wait_for(lambda: joiner.is_connected(seed.peer_id))
            # Each dial to the dead address fails within dial_timeout_sec (the library retries inside it),
            # then waits its back-off (0.1, 0.2, 0.4, 0.4 ... times 0.5-1 jitter): retried, not a busy loop.
            # (Until open_host stopped swallowing errors from its block, this assertion never ran: the
            # old `3 failures within 2 s` was wrong, as dials to the dead port take about a second each.)
            started = trio.current_time()
            await wait_for(lambda: joiner.stats.dial_failures >= 3, timeout=10)
            elapsed = trio.current_time() - started
            assert joiner.stats.dial_failures <= 3 + elapsed / 0.05, "redialling in a busy loop"
            assert joiner.is_connected(seed.peer_id)


async def test_the_host_id_is_the_validator_key() -> None:
    async with swarm(1) as sw:
        assert sw.hosts[0].peer_id == identity(0).peer_id


@pytest.mark.trio
async def test_an_error_in_the_hosts_block_is_raised_not_swallowed() -> None:
    """The clean-up's cancellation used to replace the block's error, so a crashed node lived on silently."""
    from tests.network.conftest import settings

    raised: BaseException | None = None
    try:
        async with open_host(identity(7), settings()):
            await trio.sleep(0.1)
            raise RuntimeError("a task of the node crashed")
    except BaseException as exc:  # noqa: BLE001 - the test inspects whatever arrives
        raised = exc
    assert raised is not None, "the error vanished"
    leaf = raised
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    assert isinstance(leaf, RuntimeError) and "crashed" in str(leaf)
