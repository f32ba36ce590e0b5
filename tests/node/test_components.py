"""The node's components alone, without a host: the chain keeper and the recipe queue."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
import trio.testing
from libp2p.peer.id import ID

from consensus.certificate import Certificate
from consensus.evidence import Evidence
from consensus.ledger import Ledger
from consensus.membership import Genesis
from consensus.messages import Announce, Precommit, Prevote, Value, embedding_to_bytes, sha256
from generation.recipe import Recipe
from network.topics import Topic
from node.chain import ChainKeeper
from node.clip import Announcements
from node.metrics import NodeMetrics
from node.recipes import FALLBACK_RECIPE, RecipeQueue
from node.storage import Storage
from tests.consensus.conftest import keys, validators

SIGNERS = keys(6, "comp")
BY_KEY = {s.public_key: s for s in SIGNERS}
GENESIS = Genesis(validators(SIGNERS), genesis_time=0.0, seed=b"components")


def recipe(script: str) -> Recipe:
    return Recipe.parse(
        {"audio_track": {"script": script, "voice_id": "morty"}, "visual_track": {"prompt": "a desk"}}
    )


def certify(ledger: Ledger, slot: int, value: Value, signers: int = 4) -> Certificate:
    directors = ledger.directors(slot)
    sigs = tuple(
        sorted(
            (d, Precommit(slot, 0, value.hash).signed_by(BY_KEY[d], ledger.chain_id).signature)
            for d in directors[:signers]
        )
    )
    return Certificate(slot, 0, value, sigs)


class Published:
    def __init__(self) -> None:
        self.messages: list[tuple[Topic, bytes]] = []

    async def publish(self, topic: Topic, data: bytes) -> None:
        self.messages.append((topic, data))


class Peers:
    """A catch-up source: one peer that answers with the given batch."""

    def __init__(self, batch: Sequence[bytes]) -> None:
        self.batch = batch
        self.penalized: list[str] = []
        self.asked: list[int] = []

    def connected_peers(self) -> list[ID]:
        return [ID(b"peer-one")]

    async def fetch(self, peer: ID, start: int, count: int) -> Sequence[bytes]:
        self.asked.append(start)
        return self.batch

    def penalize(self, peer: ID, reason: str) -> None:
        self.penalized.append(reason)


def keeper(tmp_path: Path) -> tuple[ChainKeeper, RecipeQueue, Storage, Published]:
    ledger = Ledger(GENESIS)
    storage = Storage(tmp_path / "node.sqlite", GENESIS.chain_id)
    recipes = RecipeQueue(ledger, Recipe.parse(FALLBACK_RECIPE), limit=4)
    chain = ChainKeeper(ledger, storage, recipes, NodeMetrics(), lambda: 100.0, catch_up_batch=8)
    chain.gossip = published = Published()
    return chain, recipes, storage, published


@pytest.mark.trio
async def test_a_certificate_is_applied_stored_announced_and_spread_once(tmp_path: Path) -> None:
    chain, recipes, storage, published = keeper(tmp_path)
    recipes.queue(recipe("queued"))
    data = recipe("queued").canonical_bytes()
    cert = certify(chain.ledger, 3, Value(sha256(b"m3"), data))
    waiter = chain.decided(3)
    assert await chain.commit(cert, "gossip")
    assert waiter.is_set() and storage.last_certified_slot() == 3
    assert published.messages == [(Topic.CERTIFICATES, cert.encode())]
    assert recipes.next_recipe() is None  # the certificate fixed the queued recipe
    assert await chain.commit(cert, "gossip") and len(published.messages) == 1  # already held: not again


@pytest.mark.trio
async def test_a_certificate_that_does_not_verify_is_refused_and_asks_for_catch_up(tmp_path: Path) -> None:
    chain, _, storage, published = keeper(tmp_path)
    short = certify(chain.ledger, 2, Value(sha256(b"m2")), signers=3)  # below the quorum of 4
    assert not await chain.commit(short, "gossip")
    assert storage.last_certified_slot() is None and not published.messages
    assert chain.catch_up_pending


@pytest.mark.trio
async def test_catch_up_applies_in_order_and_penalizes_garbage(tmp_path: Path) -> None:
    chain, _, storage, published = keeper(tmp_path)
    good = [certify(chain.ledger, s, Value(sha256(b"m%d" % s))).encode() for s in range(3)]
    peers = Peers([*good, b"\xff not a certificate", good[0]])
    assert await chain.catch_up(peers) == 3
    assert peers.penalized == ["bad_certificate"] and peers.asked == [0]
    assert storage.last_certified_slot() == 2
    assert not published.messages  # what catch-up brings is not gossiped again


@pytest.mark.trio
async def test_evidence_is_kept_once_and_published_only_when_asked(tmp_path: Path) -> None:
    chain, _, storage, published = keeper(tmp_path)
    key = SIGNERS[0]
    ev = Evidence.of(
        Prevote(1, 0, sha256(b"a")).signed_by(key, GENESIS.chain_id),
        Prevote(1, 0, None).signed_by(key, GENESIS.chain_id),
    )
    await chain.take_evidence(ev, publish=False)
    await chain.take_evidence(ev, publish=True)  # already held: neither stored nor published again
    assert list(chain.evidence_pool) == [ev.hash] and [e.hash for e in storage.evidence()] == [ev.hash]
    assert not published.messages


def test_the_recipe_queue_is_bounded_and_skips_committed_recipes(tmp_path: Path) -> None:
    ledger = Ledger(GENESIS)
    queue = RecipeQueue(ledger, Recipe.parse(FALLBACK_RECIPE), limit=2)
    for name in ("one", "two", "three"):
        queue.queue(recipe(name))
    assert len(queue) == 2  # the oldest dropped
    assert queue.next_recipe() == recipe("two").canonical_bytes()
    queue.committed(recipe("two").canonical_bytes())
    assert queue.next_recipe() == recipe("three").canonical_bytes()


def test_each_slot_plays_its_certified_recipe_or_says_why_not(tmp_path: Path) -> None:
    ledger = Ledger(GENESIS)
    queue = RecipeQueue(ledger, Recipe.parse(FALLBACK_RECIPE), limit=2)
    fallback, note = queue.recipe_for(5)
    assert fallback is queue.fallback and note is not None and "no recipe committed" in note
    # the certificate of slot s fixes the recipe of slot s + recipe_lag (2)
    ledger.apply(certify(ledger, 3, Value(sha256(b"m3"), recipe("next").canonical_bytes())))
    ledger.apply(certify(ledger, 5, Value(sha256(b"m5"), b'{"audio_track": 1}')))
    chosen, note = queue.recipe_for(5)
    assert chosen.canonical_bytes() == recipe("next").canonical_bytes() and note is None
    unusable, note = queue.recipe_for(7)
    assert unusable is queue.fallback and note is not None and "unusable" in note


@pytest.mark.trio
async def test_the_chain_keeper_publishes_nothing_before_the_host_is_up(tmp_path: Path) -> None:
    chain, *_ = keeper(tmp_path)
    chain.gossip = None
    with trio.fail_after(1):
        assert await chain.commit(certify(chain.ledger, 0, Value(sha256(b"m0"))), "agreement")


def test_the_token_file_is_bounded_and_checked(tmp_path: Path) -> None:
    from node.settings import NodeConfigError
    from node.web import read_token

    assert read_token(None) is None
    good = tmp_path / "ok.token"
    good.write_text("t" * 40 + "\n")
    assert read_token(str(good)) == "t" * 40
    for name, data in (("short", b"abc"), ("huge", b"t" * 1_000_000), ("binary", b"\xff\xfe" * 20)):
        bad = tmp_path / name
        bad.write_bytes(data)
        with pytest.raises(NodeConfigError, match="http.token_file"):
            read_token(str(bad))
    with pytest.raises(NodeConfigError, match="cannot read"):
        read_token(str(tmp_path / "missing"))


def announce(
    ledger: Ledger, slot: int, seat: int, media: bytes, vector: list[float], ok: bool = True
) -> Announce:
    director = ledger.directors(slot)[seat]
    emb = embedding_to_bytes(vector)
    return Announce(slot, sha256(b"r"), emb, emb, ok, media).signed_by(BY_KEY[director], ledger.chain_id)


@pytest.mark.trio
async def test_a_certificate_settles_each_directors_clip_agreement_with_the_canonical_output(
    tmp_path: Path,
) -> None:
    chain, _, storage, _ = keeper(tmp_path)
    media = sha256(b"m5")
    chain.announcements.record(announce(chain.ledger, 5, 0, media, [1.0, 0.0]))  # round 0's proposer
    chain.announcements.record(announce(chain.ledger, 5, 1, sha256(b"other"), [0.6, 0.8], ok=False))
    chain.announcements.record(announce(chain.ledger, 5, 1, media, [1.0, 0.0]))  # a second one: ignored
    chain.announcements.record(announce(chain.ledger, 5, 2, media, [0.0, 0.0]))  # a zero vector
    assert await chain.commit(certify(chain.ledger, 5, Value(media)), "gossip")
    by_director = {c.director: c for c in storage.clip_scores(0)[5]}
    directors = chain.ledger.directors(5)
    assert by_director[directors[0]].matched and by_director[directors[0]].cosine_b == 1.0
    second = by_director[directors[1]]
    assert not second.matched and second.cosine_b == 0.6 and second.cosine_l == 0.6 and not second.self_check
    assert by_director[directors[2]].cosine_b == -1.0  # no direction: counted as disagreeing
    assert len(by_director) == 3


def test_announcements_without_the_canonical_file_have_no_reference_and_old_slots_are_dropped() -> None:
    ledger = Ledger(GENESIS)
    book = Announcements(keep_slots=2)
    book.record(announce(ledger, 1, 0, sha256(b"a"), [1.0]))
    [score] = book.settle(certify(ledger, 1, Value(sha256(b"b"))), ledger.directors(1))
    assert not score.matched and score.cosine_b is None and score.cosine_l is None
    book.record(announce(ledger, 2, 0, sha256(b"a"), [1.0]))
    book.record(announce(ledger, 4, 0, sha256(b"a"), [1.0]))  # slot 2 is now too old to wait
    book.record(announce(ledger, 1, 1, sha256(b"a"), [1.0]))  # and slot 1 is not taken again
    assert book.settle(certify(ledger, 2, Value(sha256(b"a"))), ledger.directors(2)) == []
    assert book.settle(certify(ledger, 1, Value(sha256(b"a"))), ledger.directors(1)) == []
    assert len(book.settle(certify(ledger, 4, Value(sha256(b"a"))), ledger.directors(4))) == 1


class LatePeers(Peers):
    """A source with nobody connected until `connect_at` (trio's clock)."""

    def __init__(self, batch: Sequence[bytes], connect_at: float) -> None:
        super().__init__(batch)
        self.connect_at = connect_at

    def connected_peers(self) -> list[ID]:
        return super().connected_peers() if trio.current_time() >= self.connect_at else []


@pytest.mark.trio
async def test_a_catch_up_wanted_with_nobody_connected_runs_once_somebody_is(
    tmp_path: Path, autojump_clock: trio.testing.MockClock
) -> None:
    """A restarted node asks for catch-up at its first slot's start, before its peers have reconnected;
    it must not then wait for the next slot's start (a CI run left a restarted node a slot behind)."""
    chain, _, storage, _ = keeper(tmp_path)
    good = [certify(chain.ledger, s, Value(sha256(b"m%d" % s))).encode() for s in range(3)]
    peers = LatePeers(good, connect_at=trio.current_time() + 3.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(chain.catch_up_loop, peers)
        chain.want_catch_up()
        await trio.sleep(2.9)
        assert peers.asked == [] and chain.catch_up_pending  # nobody to ask yet: still wanted
        await trio.sleep(1.0)
        assert peers.asked == [0] and storage.last_certified_slot() == 2 and not chain.catch_up_pending
        nursery.cancel_scope.cancel()


class HeldMedia:
    """A media service and store that hold everything, with `known` other holders of each file."""

    def __init__(self, known: int) -> None:
        self.known = known
        self.asked_with: list[set[ID]] = []

    def has(self, cid: bytes) -> bool:
        return True

    def worth_announcing(self, cid: bytes, also_known: Sequence[ID] = ()) -> bool:
        self.asked_with.append(set(also_known))
        return self.known + len(set(also_known)) < 8

    def have_message(self, cid: bytes) -> bytes:
        return b"have " + cid


@pytest.mark.trio
async def test_media_held_is_announced_only_while_the_service_finds_it_worth_it(tmp_path: Path) -> None:
    from node.propagation import MediaPropagation

    _, _, storage, _ = keeper(tmp_path)
    cert = certify(Ledger(GENESIS), 1, Value(sha256(b"m1")))
    for known, announced in ((2, True), (7, False)):
        media, published = HeldMedia(known), Published()
        propagation = MediaPropagation(
            media,
            media,
            storage,
            NodeMetrics(),
            published,
            lambda s: 0.0,
            lambda: 1.0,  # type: ignore[arg-type]
        )
        propagation.announced(cert.value.candidate, ID(b"director"))
        detail: dict = {}
        await propagation.ensure(cert, detail)
        assert media.asked_with == [{ID(b"director")}]  # the directors that announced it count as holders
        assert published.messages == (
            [(Topic.MEDIA_HAVE, b"have " + cert.value.candidate)] if announced else []
        )
        assert (
            detail.get("media_announced", False) is announced
            and detail["media"] == cert.value.candidate.hex()
        )
