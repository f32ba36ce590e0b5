"""Catching up on certificates a node missed (offline, partitioned, restarted).

Gossip only carries certificates of recent slots; older ones are asked for on
this stream protocol: request CBOR ["certs", from_slot, max_count], answer one
frame per certificate in slot order, then an empty frame. The asker verifies
each certificate against its own ledger before applying it, so a peer can
withhold certificates but not forge them; the answer is bounded in count and size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID

from consensus.certificate import MAX_CERTIFICATE_BYTES
from consensus.messages import canonical
from network.host import NetworkHost
from network.streams import ProtocolViolation, decode_list, read_frame, reset, write_frame

log = logging.getLogger(__name__)

PROTOCOL = "/icn/sync/1.0.0"
MAX_BATCH = 1024

CertificateSource = Callable[[int, int], list[bytes]]  # (from_slot, limit) -> encoded certificates


class CertificateSync:
    def __init__(self, net: NetworkHost, source: CertificateSource, *, timeout_sec: float = 10.0) -> None:
        self.net = net
        self.source = source
        self.timeout_sec = timeout_sec
        self.served = 0
        net.set_stream_handler(PROTOCOL, self._handle)

    async def _handle(self, stream: INetStream) -> None:
        try:
            with trio.fail_after(self.timeout_sec):
                request = decode_list(await read_frame(stream, 256), 256, "sync request")
                if len(request) != 3 or request[0] != "certs" or not all(type(x) is int for x in request[1:]):
                    raise ProtocolViolation("bad sync request")
                start, limit = request[1], min(max(request[2], 0), MAX_BATCH)
                for data in self.source(max(start, 0), limit):
                    await write_frame(stream, data)
                    self.served += 1
                await write_frame(stream, b"")
            await stream.close()
        except Exception as exc:  # a bad or vanished asker: drop the stream
            log.debug("sync request failed: %s", exc)
            await reset(stream)

    async def fetch(self, peer: ID, from_slot: int, limit: int) -> list[bytes]:
        """Encoded certificates from `peer`, slot `from_slot` on; verification is the caller's."""
        limit = min(limit, MAX_BATCH)
        out: list[bytes] = []
        with trio.fail_after(self.timeout_sec):
            stream = await self.net.new_stream(peer, PROTOCOL)
            try:
                await write_frame(stream, canonical(["certs", from_slot, limit]))
                while len(out) <= limit:
                    frame = await read_frame(stream, MAX_CERTIFICATE_BYTES)
                    if not frame:
                        break
                    out.append(frame)
                else:
                    raise ProtocolViolation(f"more than the {limit} certificates asked for")
            except BaseException:
                await reset(stream)
                raise
            await stream.close()
        return out
