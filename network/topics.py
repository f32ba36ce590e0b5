"""The gossip topics of one ICN chain, and the check each message passes before it is forwarded.

Director traffic (proposals, prevotes, precommits, announcements) shares one
topic rather than one per slot: a fresh topic every 45 s would need a fresh
mesh, which takes heartbeats to form, right when the votes need it; the slot
window check drops traffic of other slots just as well. The chain id is part
of every topic name, so two networks never mix.

Validators are pure functions of the message and a `ValidationContext` (the
clock's slot, the ledger's directors): they never raise, count every
rejection by reason, and a rejected message is neither delivered nor
forwarded, and costs its forwarder gossip score. Each topic's size limit is
checked before any byte is decoded. An exception a validator did not expect is
a bug, but one a stranger can trigger: it is counted as `internal_error`, logged
once per topic with its traceback, and the message rejected; it never reaches
the host's tasks.
"""

from __future__ import annotations

import enum
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import cbor2
import multiaddr

from consensus.certificate import MAX_CERTIFICATE_BYTES, Certificate
from consensus.checks import MessageChecker
from consensus.evidence import MAX_EVIDENCE_AGE, Evidence
from consensus.messages import MAX_EVIDENCE_BYTES, MAX_MESSAGE_BYTES, MAX_RECIPE_BYTES, DecodeError, canonical
from generation.errors import RecipeError
from generation.recipe import Recipe, network_recipe

log = logging.getLogger(__name__)


class Topic(enum.Enum):
    VOTES = "votes"
    CERTIFICATES = "certificates"
    EVIDENCE = "evidence"
    RECIPES = "recipes"
    MEDIA_HAVE = "media-have"

    def name_for(self, chain_id: bytes) -> str:
        return f"/icn/{chain_id.hex()}/{self.value}/1"


# The CBOR kind tag each topic carries (consensus messages are [version, kind, ...]).
_KINDS = {
    Topic.VOTES: {"announce", "proposal", "prevote", "precommit"},
    Topic.CERTIFICATES: {"certificate"},
    Topic.EVIDENCE: {"evidence"},
    Topic.RECIPES: {"recipe"},
    Topic.MEDIA_HAVE: {"have"},
}


MAX_HAVE_ADDRS = 4
MAX_ADDR_CHARS = 200
# The largest message each topic carries, checked before anything is decoded.
MAX_BYTES = {
    Topic.VOTES: MAX_MESSAGE_BYTES,
    Topic.CERTIFICATES: MAX_CERTIFICATE_BYTES,
    Topic.EVIDENCE: MAX_EVIDENCE_BYTES,
    Topic.RECIPES: MAX_RECIPE_BYTES + 32,
    Topic.MEDIA_HAVE: 64 + MAX_HAVE_ADDRS * (MAX_ADDR_CHARS + 4),
}


class ValidationContext(Protocol):
    chain_id: bytes

    def current_slot(self) -> int: ...

    def directors(self, slot: int) -> Sequence[bytes] | None: ...


@dataclass
class TopicStats:
    accepted: Counter = field(default_factory=Counter)  # topic -> count
    rejected: Counter = field(default_factory=Counter)  # (topic, reason) -> count


def encode_recipe(recipe: Recipe) -> bytes:
    return canonical([1, "recipe", recipe.canonical_bytes()])


@dataclass(frozen=True)
class Have:
    """A node says it holds (verified) media: the content id and where to dial it.

    The peer id is the gossip message's signed origin; the addresses are hints,
    and a dial checks the peer id through Noise, so a lie costs only a failed dial.
    """

    cid: bytes
    addrs: tuple[str, ...] = ()


def encode_have(cid: bytes, addrs: Sequence[str] = ()) -> bytes:
    return canonical([1, "have", cid, [str(a) for a in addrs][:MAX_HAVE_ADDRS]])


class Reject(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _kind_of(data: bytes) -> str | None:
    """The kind tag of a CBOR message, when it has one (for 'wrong topic' rejections)."""
    try:
        items = cbor2.loads(data)
    except Exception:
        return None
    if isinstance(items, list) and len(items) >= 2 and isinstance(items[1], str):
        return items[1]
    return None


class TopicValidators:
    """One decode-and-check per topic; `validate` answers the decoded message or raises `Reject`."""

    def __init__(self, context: ValidationContext, *, past_slots: int = 2, future_slots: int = 1) -> None:
        self.context = context
        self.past_slots = past_slots
        self.future_slots = future_slots
        self.checker = MessageChecker(
            context.chain_id, context.directors, past_slots=1, future_slots=future_slots
        )
        self.stats = TopicStats()
        self._logged_internal: set[Topic] = set()
        self._decoders: dict[Topic, Callable[[bytes], Any]] = {
            Topic.VOTES: self._vote,
            Topic.CERTIFICATES: self._certificate,
            Topic.EVIDENCE: self._evidence,
            Topic.RECIPES: self._recipe,
            Topic.MEDIA_HAVE: self._have,
        }

    def check(self, topic: Topic, data: bytes, *, count: bool = True) -> Any | None:
        """The decoded message, or None after counting why it was rejected (`count`: in the stats)."""
        try:
            if not isinstance(data, bytes | bytearray):
                raise Reject("not_bytes")
            if len(data) > MAX_BYTES[topic]:
                raise Reject("too_large")
            kind = _kind_of(bytes(data))
            if kind is not None and kind not in _KINDS[topic] and any(kind in k for k in _KINDS.values()):
                raise Reject("wrong_topic")
            message = self._decoders[topic](bytes(data))
        except Reject as rej:
            if count:
                self.stats.rejected[(topic.value, rej.reason)] += 1
            return None
        except Exception:  # a bug a stranger can trigger: counted, logged once, never raised
            self.stats.rejected[(topic.value, "internal_error")] += 1
            if topic not in self._logged_internal:
                self._logged_internal.add(topic)
                log.exception("%s validator failed on a %d-byte message; rejected", topic.value, len(data))
            return None
        if count:
            self.stats.accepted[topic.value] += 1
        return message

    # -- per topic ------------------------------------------------------------------------------
    def _in_window(self, slot: int) -> None:
        now = self.context.current_slot()
        if slot < now - self.past_slots:
            raise Reject("stale_slot")
        if slot > now + self.future_slots:
            raise Reject("future_slot")

    def _vote(self, data: bytes) -> Any:
        msg, reason = self.checker.check_reason(data, self.context.current_slot())
        if msg is None:
            raise Reject(reason or "rejected")
        return msg

    def _certificate(self, data: bytes) -> Certificate:
        try:
            cert = Certificate.decode(data)
        except DecodeError as exc:
            raise Reject(exc.reason) from None
        self._in_window(cert.slot)
        directors = self.context.directors(cert.slot)
        if not directors:
            raise Reject("unknown_directors")
        if cert.verify(directors, self.context.chain_id) is not None:
            raise Reject("bad_certificate")
        return cert

    def _evidence(self, data: bytes) -> Evidence:
        """Genuine evidence against a director of a slot from the last MAX_EVIDENCE_AGE slots (or the next):
        the same rule a director applies to the evidence in a proposal (`Evidence.relevant_to`)."""
        try:
            ev = Evidence.decode(data)
        except DecodeError as exc:
            raise Reject(exc.reason) from None
        now = self.context.current_slot()
        if ev.slot < now - MAX_EVIDENCE_AGE:
            raise Reject("stale_slot")
        if ev.slot > now + self.future_slots:
            raise Reject("future_slot")
        directors = self.context.directors(ev.slot)
        if not directors or ev.signer not in directors:
            raise Reject("not_a_director")
        if ev.check(self.context.chain_id) is not None:
            raise Reject("bad_evidence")
        return ev

    def _recipe(self, data: bytes) -> Recipe:
        items = _strict_list(data, 3)
        if items[0] != 1 or items[1] != "recipe" or not isinstance(items[2], bytes):
            raise Reject("bad_field")
        try:
            recipe = network_recipe(items[2])
        except RecipeError:
            raise Reject("bad_recipe") from None
        if encode_recipe(recipe) != data:
            raise Reject("non_canonical")
        return recipe

    def _have(self, data: bytes) -> Have:
        items = _strict_list(data, 4)
        if items[0] != 1 or items[1] != "have" or not isinstance(items[2], bytes) or len(items[2]) != 32:
            raise Reject("bad_field")
        addrs = items[3]
        if not isinstance(addrs, list) or len(addrs) > MAX_HAVE_ADDRS:
            raise Reject("bad_field")
        for addr in addrs:
            if not isinstance(addr, str) or len(addr) > MAX_ADDR_CHARS:
                raise Reject("bad_field")
            try:
                multiaddr.Multiaddr(addr)
            except Exception:
                raise Reject("bad_address") from None
        if encode_have(items[2], addrs) != data:
            raise Reject("non_canonical")
        return Have(items[2], tuple(addrs))


def _strict_list(data: bytes, length: int) -> list:
    try:
        items = cbor2.loads(data)
    except Exception:
        raise Reject("malformed_cbor") from None
    if not isinstance(items, list) or len(items) != length:
        raise Reject("bad_field")
    return items
