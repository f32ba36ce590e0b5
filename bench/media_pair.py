"""CPU per MiB of media between two real hosts in one process, and per media session.

Two py-libp2p hosts (Noise, yamux, this project's workarounds) on loopback in
one trio process, so the CPU time read is both ends' together. One session
asks for the same 4 chunks (1 MiB) again and again; a second loop opens,
answers and closes sessions. The bulk figure is what moving a slot's media
costs before any swarm logic; `--without-23` undoes the workaround for
py-libp2p defect 23 (a full yamux frame is 17 bytes too large for one Noise
message), to measure what it saves.

    python bench/media_pair.py                    # with every workaround
    python bench/media_pair.py --without-23       # yamux frames of 64 KiB again
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio
from libp2p.stream_muxer.yamux import yamux

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from common import record_header, write_json  # noqa: E402

from consensus.messages import canonical  # noqa: E402
from network import libp2p_quirks  # noqa: E402
from network.host import open_host  # noqa: E402
from network.identity import Identity  # noqa: E402
from network.media.content import CHUNK_BYTES  # noqa: E402
from network.media.store import MediaStore  # noqa: E402
from network.media.transfer import MediaService  # noqa: E402
from network.settings import NetworkSettings  # noqa: E402
from network.streams import close, read_frame, write_frame  # noqa: E402
from simnet.layout import free_ports  # noqa: E402

CHUNKS = [0, 1, 2, 3]  # one request of the default size: 1 MiB


async def measure(args: argparse.Namespace, workdir: Path) -> dict:
    ports = free_ports(2)
    idents = [Identity(bytes([i + 1]) * 32) for i in range(2)]
    cfgs = [NetworkSettings(listen=(f"/ip4/127.0.0.1/tcp/{p}",)) for p in ports]
    data = random.Random(1).randbytes(len(CHUNKS) * CHUNK_BYTES)
    async with open_host(idents[0], cfgs[0]) as a, open_host(idents[1], cfgs[1]) as b:
        server = MediaService(a, MediaStore(workdir / "a"))
        client = MediaService(b, MediaStore(workdir / "b"))
        cid = server.store.add_bytes(data)
        await b.connect(f"/ip4/127.0.0.1/tcp/{ports[0]}/p2p/{a.peer_id}", keep=True)
        stream, _ = await client.request(a.peer_id, ["watch", cid])
        for _ in range(10):  # warm-up
            await _get(stream)
        bulk = []
        for _ in range(args.rounds):
            t = time.process_time()
            for _ in range(args.requests):
                await _get(stream)
            bulk.append((time.process_time() - t) * 1000 / args.requests)
        await close(stream)
        sessions = []
        for _ in range(args.rounds):
            t = time.process_time()
            for _ in range(args.sessions):
                s, _ = await client.request(a.peer_id, ["watch", cid])
                await close(s)
            sessions.append((time.process_time() - t) * 1000 / args.sessions)
    return {
        "yamux_frame_bytes": yamux.MAX_MESSAGE_SIZE,  # as the hosts sent: 65,519 with the workaround
        "cpu_ms_per_mib": round(statistics.median(bulk), 3),
        "cpu_ms_per_mib_rounds": [round(x, 3) for x in bulk],
        "cpu_ms_per_session": round(statistics.median(sessions), 3),
        "cpu_ms_per_session_rounds": [round(x, 3) for x in sessions],
    }


async def _get(stream) -> None:
    await write_frame(stream, canonical(["get", CHUNKS]))
    await read_frame(stream, 4096)
    for _ in CHUNKS:
        await read_frame(stream, CHUNK_BYTES)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=100, help="1 MiB requests per round")
    parser.add_argument("--sessions", type=int, default=50, help="sessions opened and closed per round")
    parser.add_argument("--without-23", action="store_true", help="yamux frames of 64 KiB (defect 23 back)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.without_23:  # the host builder applies the workaround; make it a no-op first
        libp2p_quirks.yamux_frames_fit_noise = lambda: None  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as workdir:
        result = trio.run(measure, args, Path(workdir))
    print(
        f"{'without' if args.without_23 else 'with'} defect 23's workaround: "
        f"{result['cpu_ms_per_mib']} ms CPU per MiB (both ends; rounds {result['cpu_ms_per_mib_rounds']}), "
        f"{result['cpu_ms_per_session']} ms per session opened and closed"
    )
    if args.json:
        write_json({**record_header("media_pair"), "config": vars(args), **result}, args.json)


if __name__ == "__main__":
    main()
