"""Catch-up of certificates over the sync protocol."""

from __future__ import annotations

import pytest

from network.certsync import MAX_BATCH, CertificateSync
from network.media.transfer import write_frame
from tests.network.conftest import swarm

pytestmark = pytest.mark.trio


async def test_a_peer_serves_certificates_from_a_slot_on_in_order_and_bounded() -> None:
    stored = {s: b"cert-%d" % s for s in (3, 4, 6, 9)}

    def source(start: int, limit: int) -> list[bytes]:
        return [stored[s] for s in sorted(stored) if s >= start][:limit]

    async with swarm(2) as sw:
        server = CertificateSync(sw.hosts[0], source)
        client = CertificateSync(sw.hosts[1], lambda s, n: [])
        assert await client.fetch(sw.hosts[0].peer_id, 4, 10) == [b"cert-4", b"cert-6", b"cert-9"]
        assert await client.fetch(sw.hosts[0].peer_id, 0, 2) == [b"cert-3", b"cert-4"]
        assert await client.fetch(sw.hosts[0].peer_id, 10, 5) == []
        assert server.served == 5


async def test_a_peer_sending_more_than_asked_is_cut_off() -> None:
    from network.certsync import PROTOCOL
    from network.media.transfer import ProtocolViolation

    async with swarm(2) as sw:

        async def liar(stream) -> None:
            await stream.read(64)
            for i in range(MAX_BATCH + 5):
                await write_frame(stream, b"x%d" % i)
            await write_frame(stream, b"")

        sw.hosts[0].set_stream_handler(PROTOCOL, liar)
        client = CertificateSync(sw.hosts[1], lambda s, n: [])
        with pytest.raises(ProtocolViolation, match="more than the 3"):
            await client.fetch(sw.hosts[0].peer_id, 0, 3)
