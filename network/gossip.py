"""Publishing and receiving the protocol's gossip, every message checked before it spreads.

`Gossip` subscribes the host to the chain's topics with a validator per topic
(`network.topics`), so a bad message stops at the first honest node, and hands
each accepted message from another node to the topic's inbox, a bounded
channel the node reads. Message ids are content hashes (set on the host), so
one message reaching us by two paths, or published by two nodes, is
delivered once.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import trio
from libp2p.peer.id import ID

from network import libp2p_quirks as quirks
from network.host import NetworkHost
from network.topics import Topic, TopicValidators, ValidationContext

log = logging.getLogger(__name__)

_DECODED_CACHE = 4096


@dataclass(frozen=True)
class GossipMessage:
    topic: Topic
    data: bytes
    message: (
        Any  # what the topic's validator decoded: a Signed vote, Certificate, Evidence, Recipe, content id
    )
    origin: ID  # the publishing peer (libp2p-signed)


class Gossip:
    def __init__(
        self, net: NetworkHost, context: ValidationContext, topics: tuple[Topic, ...] = tuple(Topic)
    ):
        self.net = net
        self.context = context
        self.validators = TopicValidators(context)
        self.topics = topics
        self._names = {topic: topic.name_for(context.chain_id) for topic in topics}
        self._by_name = {name: topic for topic, name in self._names.items()}
        size = net.settings.gossip.subscription_queue
        self._inboxes = {topic: trio.open_memory_channel[GossipMessage](size) for topic in topics}
        self.dropped_local = 0  # accepted messages the node was too slow to read
        self._decoded: OrderedDict[bytes, Any] = OrderedDict()  # validator's result, for delivery

    @property
    def undelivered(self) -> int:
        """Validated messages not yet handed to an inbox: near 0 at rest, or the cache holds dead entries."""
        return len(self._decoded)

    def inbox(self, topic: Topic) -> trio.MemoryReceiveChannel[GossipMessage]:
        return self._inboxes[topic][1]

    async def start(self) -> None:
        """Subscribe to every topic; readers run in the host's nursery until it closes."""
        for topic, name in self._names.items():
            self.net.pubsub.set_topic_validator(name, self._validator(topic), False)
            subscription = await quirks.subscribe_with_queue(
                self.net.pubsub, name, self.net.settings.gossip.subscription_queue
            )
            self.net.start_soon(self._reader, topic, subscription)

    async def publish(self, topic: Topic, data: bytes) -> None:
        """Publish, or raise: `MessageTooLarge`, or `ValueError` when our own message fails its check."""
        quirks.check_gossip_size(data)
        if self.validators.check(topic, data, count=False) is None:
            raise ValueError(f"refusing to publish a message that fails the {topic.value} checks")
        await self.net.pubsub.publish(self._names[topic], data)

    def _validator(self, topic: Topic):  # noqa: ANN202 - the library's sync validator signature
        me = self.net.peer_id

        def validate(forwarder: ID, msg: Any) -> bool:
            if list(msg.topicIDs) != [self._names[topic]]:
                self.validators.stats.rejected[(topic.value, "wrong_topic")] += 1
                return False
            decoded = self.validators.check(topic, msg.data, count=forwarder != me)
            if decoded is None:
                return False
            if forwarder == me:  # our own message: the reader skips it, so caching it only crowds others out
                return True
            self._decoded[msg.data] = decoded
            while len(self._decoded) > _DECODED_CACHE:
                self._decoded.popitem(last=False)
            return True

        return validate

    async def _reader(self, topic: Topic, subscription: Any) -> None:
        send = self._inboxes[topic][0]
        me = self.net.peer_id.to_bytes()
        async for msg in subscription:
            if msg.from_id == me:
                continue
            decoded = self._decoded.pop(msg.data, None)
            if decoded is None:  # evicted from the cache: check again
                decoded = self.validators.check(topic, msg.data, count=False)
                if decoded is None:  # the slot moved on between validation and delivery
                    continue
            try:
                send.send_nowait(GossipMessage(topic, msg.data, decoded, ID(msg.from_id)))
            except trio.WouldBlock:
                self.dropped_local += 1
                log.warning("%s inbox full: message dropped locally", topic.value)
