"""Byzantine directors for the simnet: a real node whose consensus output lies in one chosen way.

These modes live here, and only here: the production node has no switch that
reaches them. Each overrides one of the node's two hooks (`_broadcast`, what
it sends; `_announce`, what it says it produced) or adds a task:

- equivocate: every prevote and precommit is followed by a conflicting one
  (nil instead of a value, or a made-up value instead of nil);
- different-output: announces an output whose embeddings and content id are
  not what it made, so honest directors find its candidate unacceptable;
- missing-candidate: votes for a value hash no one has an announcement for;
- silent: sends nothing at all (generates, but never announces or votes);
- replay: besides its honest messages, re-sends messages of earlier slots;
- flood: besides its honest messages, publishes a stream of invalid messages
  (its own validators are bypassed so they leave the node).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import replace
from typing import Any

import trio

from consensus.actions import Action
from consensus.messages import Precommit, Prevote, Signed
from network.topics import Topic
from node.node import Node

log = logging.getLogger(__name__)

FLOOD_PER_SEC = 50


class ByzantineNode(Node):
    def __init__(self, *args: Any, behaviour: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.behaviour = behaviour
        self._sent: list[bytes] = []

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(super().run)
            if self.behaviour in ("flood", "replay"):
                self._unguard_own_messages()
            if self.behaviour == "flood":
                nursery.start_soon(self._flood)
            if self.behaviour == "replay":
                nursery.start_soon(self._replay)
            task_status.started(self)

    # -- what it sends --------------------------------------------------------------------------------
    async def _broadcast(self, msg: Signed) -> None:
        b = self.behaviour
        if b == "silent":
            return
        if b == "missing-candidate" and isinstance(msg, Prevote | Precommit) and msg.value_hash is not None:
            msg = type(msg)(msg.slot, msg.round, _made_up(msg)).signed_by(self.identity.signer, self.chain_id)
        await super()._broadcast(msg)
        self._sent.append(msg.encode())
        if b == "equivocate" and isinstance(msg, Prevote | Precommit):
            other = None if msg.value_hash is not None else _made_up(msg)
            twin = type(msg)(msg.slot, msg.round, other).signed_by(self.identity.signer, self.chain_id)
            log.info("byzantine: equivocating in slot %d round %d", msg.slot, msg.round)
            await super()._broadcast(twin)

    def _announce(self, sm: Any, output: Any) -> list[Action]:
        if self.behaviour == "different-output":
            flipped = bytes(b ^ 0x5A for b in output.embedding_b)
            output = replace(output, embedding_b=flipped, content_hash=hashlib.sha256(output.content_hash).digest())
        return super()._announce(sm, output)

    # -- extra traffic ----------------------------------------------------------------------------------
    def _unguard_own_messages(self) -> None:
        me = self.net.peer_id
        for topic in Topic:
            name = topic.name_for(self.chain_id)
            guard = self.net.pubsub.topic_validators[name].validator
            self.net.pubsub.set_topic_validator(name, lambda f, m, g=guard: f == me or g(f, m), False)

    async def _flood(self) -> None:
        name = Topic.VOTES.name_for(self.chain_id)
        n = 0
        while True:
            n += 1
            await self.net.pubsub.publish(name, b"\xff invalid %d" % n)
            await trio.sleep(1 / FLOOD_PER_SEC)

    async def _replay(self) -> None:
        while True:
            await trio.sleep(self.genesis.slot_sec / 4)
            old = [m for m in self._sent[:-10]][-5:]
            for data in old:
                try:
                    await self.net.pubsub.publish(Topic.VOTES.name_for(self.chain_id), data)
                except Exception as exc:  # its own validator drops stale ones; that is the point
                    log.debug("replay refused locally: %s", exc)


def _made_up(msg: Signed) -> bytes:
    return hashlib.sha256(b"byzantine" + msg.encode()).digest()
