"""Byzantine directors for the simnet: a real node whose consensus output lies in one chosen way.

These modes live here, and only here: the production node has no switch that
reaches them. `Byzantine` is a `node.ports.Behaviour`: it wraps the node's
honest broadcaster (what it sends) or changes what it announces it produced,
and some modes add traffic beside the node (`run_beside`). It never reaches
into the node's private state:

- equivocate: every prevote and precommit is followed by a conflicting one
  (nil instead of a value, or a made-up value instead of nil);
- different-output: announces an output whose embeddings and content id are
  not what it made, so honest directors find its candidate unacceptable;
- missing-candidate: votes for a value hash no one has an announcement for;
- silent: sends nothing at all (generates, but never announces or votes);
- replay: besides its honest messages, re-sends messages of earlier slots;
- flood: besides its honest messages, publishes a stream of invalid messages
  (its own validators are bypassed so they leave the node);
- hostile: besides its honest messages, publishes on every topic what issue 16
  found stopping nodes and more (deeply nested CBOR and JSON, over-long and
  engine-invalid recipes, huge integers, truncated and bit-flipped copies of
  valid messages), and as a proposer signs proposals whose next recipe is
  hostile (nested 5,000 deep, a 1,000 s duration, NaN, not UTF-8) instead of
  its honest ones: honest directors must prevote nil, and nobody may crash.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import replace
from typing import Any

import trio

from consensus.agreement import LocalOutput
from consensus.messages import MAX_RECIPE_BYTES, Precommit, Prevote, Proposal, Signed, Value, canonical
from network.host import NetworkHost
from network.identity import Identity
from network.topics import Topic
from node.ports import Broadcaster

log = logging.getLogger(__name__)

FLOOD_PER_SEC = 50
HOSTILE_PER_SEC = 20
_RECIPE = {
    "audio_track": {"script": "Hello.", "voice_id": "morty"},
    "visual_track": {"prompt": "a test card"},
}
HOSTILE_RECIPES = [
    b"[" * 5000,
    b'{"a":' * 3000,
    json.dumps({**_RECIPE, "duration_sec": 1000}).encode(),
    json.dumps(_RECIPE).replace("}}", '}, "duration_sec": Infinity}', 1).encode(),
    json.dumps(
        {**_RECIPE, "audio_track": {"script": "x", "voice_id": "morty", "speed": float("nan")}}
    ).encode(),
    b"\xc3\x28",
    json.dumps(
        {
            "audio_track": {"script": "\u4e00" * 5000, "voice_id": "morty"},
            "visual_track": {"prompt": "\u4e00" * 2000},
        }
    ).encode(),
]


class Byzantine:
    def __init__(self, behaviour: str, identity: Identity, chain_id: bytes) -> None:
        self.behaviour = behaviour
        self._signer = identity.signer
        self._chain_id = chain_id
        self._sent: list[bytes] = []

    # -- the Behaviour seams ----------------------------------------------------------------------------
    def broadcaster(self, honest: Broadcaster) -> Broadcaster:
        return _LyingBroadcaster(self, honest)

    def announced(self, output: LocalOutput) -> LocalOutput:
        if self.behaviour == "different-output":
            flipped = bytes(b ^ 0x5A for b in output.embedding_b)
            return replace(
                output, embedding_b=flipped, content_hash=hashlib.sha256(output.content_hash).digest()
            )
        return output

    def _sign(self, msg: Any) -> Signed:
        return msg.signed_by(self._signer, self._chain_id)

    # -- what it sends --------------------------------------------------------------------------------
    async def broadcast(self, honest: Broadcaster, msg: Signed) -> None:
        b = self.behaviour
        if b == "silent":
            return
        if b == "missing-candidate" and isinstance(msg, Prevote | Precommit) and msg.value_hash is not None:
            msg = self._sign(type(msg)(msg.slot, msg.round, _made_up(msg)))
        if b == "hostile" and isinstance(msg, Proposal):
            recipe = HOSTILE_RECIPES[msg.round % len(HOSTILE_RECIPES)][:MAX_RECIPE_BYTES]
            value = Value(msg.value.candidate, recipe, msg.value.evidence)
            msg = self._sign(Proposal(msg.slot, msg.round, value, msg.pol_round))
            log.info("byzantine: hostile next recipe proposed in slot %d round %d", msg.slot, msg.round)
        await honest.broadcast(msg)
        self._sent.append(msg.encode())
        if b == "equivocate" and isinstance(msg, Prevote | Precommit):
            other = None if msg.value_hash is not None else _made_up(msg)
            log.info("byzantine: equivocating in slot %d round %d", msg.slot, msg.round)
            await honest.broadcast(self._sign(type(msg)(msg.slot, msg.round, other)))

    # -- extra traffic, beside the running node ---------------------------------------------------------
    async def run_beside(self, net: NetworkHost, slot_sec: float) -> None:
        """The modes that add traffic: run in the same nursery as the node, once its host is up."""
        if self.behaviour in ("flood", "replay", "hostile"):
            self._unguard_own_messages(net)
        if self.behaviour == "flood":
            await self._flood(net)
        elif self.behaviour == "hostile":
            await self._hostile(net)
        elif self.behaviour == "replay":
            await self._replay(net, slot_sec)

    def _unguard_own_messages(self, net: NetworkHost) -> None:
        me = net.peer_id
        for topic in Topic:
            name = topic.name_for(self._chain_id)
            guard = net.pubsub.topic_validators[name].validator
            net.pubsub.set_topic_validator(name, lambda f, m, g=guard: f == me or g(f, m), False)

    async def _flood(self, net: NetworkHost) -> None:
        name = Topic.VOTES.name_for(self._chain_id)
        n = 0
        while True:
            n += 1
            await net.pubsub.publish(name, b"\xff invalid %d" % n)
            await trio.sleep(1 / FLOOD_PER_SEC)

    async def _hostile(self, net: NetworkHost) -> None:
        """Every topic, round after round: the payloads of `hostile_payloads`, bypassing its own checks."""
        payloads = hostile_payloads(self._sent)
        n = 0
        while True:
            for topic in Topic:
                data = payloads[n % len(payloads)]
                n += 1
                try:
                    await net.pubsub.publish(topic.name_for(self._chain_id), data)
                except Exception as exc:  # e.g. larger than the library's limit: also a rejection
                    log.debug("hostile message refused locally: %s", exc)
                await trio.sleep(1 / HOSTILE_PER_SEC)
            if n > 10 * len(payloads):
                payloads = hostile_payloads(self._sent)

    async def _replay(self, net: NetworkHost, slot_sec: float) -> None:
        while True:
            await trio.sleep(slot_sec / 4)
            old = [m for m in self._sent[:-10]][-5:]
            for data in old:
                try:
                    await net.pubsub.publish(Topic.VOTES.name_for(self._chain_id), data)
                except Exception as exc:  # its own validator drops stale ones; that is the point
                    log.debug("replay refused locally: %s", exc)


class _LyingBroadcaster:
    def __init__(self, liar: Byzantine, honest: Broadcaster) -> None:
        self._liar, self._honest = liar, honest

    async def broadcast(self, msg: Signed) -> None:
        await self._liar.broadcast(self._honest, msg)


def _made_up(msg: Signed) -> bytes:
    return hashlib.sha256(b"byzantine" + msg.encode()).digest()


def hostile_payloads(sent: list[bytes]) -> list[bytes]:
    """Malformed, deeply nested, over-long and engine-invalid messages, and mangled copies of valid ones."""
    out = [
        b"\x81" * 5000 + b"\x00",
        b"\xa1\x00" * 3000 + b"\x00",
        b"\xff" * 64,
        canonical(2**200),
        canonical([1, "prevote", [10, 0, None, 2**70], b"", b""]),
        b"\x9f" * 100_000,
        *(canonical([1, "recipe", r]) for r in HOSTILE_RECIPES),
        canonical([1, "have", b"\x00" * 32, ["/ip4/" + "9" * 500]]),
        canonical(
            [1, "evidence", "prevote", b"\x00" * 32, [[0, 0, None], b"\x00" * 64], [[0, 0, b"\x00"], b""]]
        ),
    ]
    for data in sent[-4:]:
        out += [data[: len(data) // 2], data[:-1] + bytes([data[-1] ^ 1])]
    return out
