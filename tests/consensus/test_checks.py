from consensus.checks import MessageChecker
from consensus.messages import Prevote, Proposal, Value, sha256
from tests.consensus.conftest import keys

CHAIN = b"chain"
DIRECTORS = keys(5)
OUTSIDER = keys(1, "outsider")[0]
H = sha256(b"v")


def _checker() -> MessageChecker:
    pubs = [k.public_key for k in DIRECTORS]
    return MessageChecker(CHAIN, lambda slot: pubs if 0 <= slot <= 100 else None)


def test_accepts_a_good_message() -> None:
    c = _checker()
    msg = Prevote(10, 0, H).signed_by(DIRECTORS[2], CHAIN)
    assert c.check(msg.encode(), current_slot=10) == msg
    assert c.accepted == 1 and not c.rejected


def test_every_rejection_is_counted_by_reason() -> None:
    c = _checker()
    cases = {
        "malformed_cbor": b"\xff",
        "stale_slot": Prevote(8, 0, H).signed_by(DIRECTORS[0], CHAIN).encode(),
        "future_slot": Prevote(12, 0, H).signed_by(DIRECTORS[0], CHAIN).encode(),
        "not_a_director": Prevote(10, 0, H).signed_by(OUTSIDER, CHAIN).encode(),
        "not_the_proposer": Proposal(10, 1, Value(H), -1).signed_by(DIRECTORS[0], CHAIN).encode(),
        "bad_signature": Prevote(10, 0, H).signed_by(DIRECTORS[0], b"other chain").encode(),
    }
    for reason, data in cases.items():
        assert c.check(data, current_slot=10) is None, reason
        assert c.rejected[reason] == 1, reason
    assert c.accepted == 0


def test_window_edges() -> None:
    c = _checker()
    for slot, ok in [(8, False), (9, True), (10, True), (11, True), (12, False)]:
        msg = Prevote(slot, 0, H).signed_by(DIRECTORS[1], CHAIN)
        assert (c.check(msg.encode(), current_slot=10) is not None) is ok, slot


def test_unknown_directors() -> None:
    c = MessageChecker(CHAIN, lambda slot: None)
    assert c.check(Prevote(10, 0, H).signed_by(DIRECTORS[0], CHAIN).encode(), 10) is None
    assert c.rejected["unknown_directors"] == 1


def test_proposer_rotation() -> None:
    c = _checker()
    for round_ in range(7):
        proposer = DIRECTORS[round_ % 5]
        assert c.check(Proposal(10, round_, Value(H), -1).signed_by(proposer, CHAIN).encode(), 10) is not None


def test_a_verified_message_is_not_verified_again_but_still_window_checked() -> None:
    c = _checker()
    data = Prevote(10, 0, H).signed_by(DIRECTORS[0], CHAIN).encode()
    assert c.check(data, 10) is not None
    assert c.check(data, 10) is not None
    assert c.check(data, 20) is None and c.rejected["stale_slot"] == 1


def test_signatures_are_verified_once_per_message_and_the_cache_is_bounded(monkeypatch) -> None:
    from consensus import messages

    calls = []
    real = messages.Signed.verify

    def counting(self, chain_id):
        calls.append(self.message_id)
        return real(self, chain_id)

    monkeypatch.setattr(messages.Signed, "verify", counting)
    pubs = [k.public_key for k in DIRECTORS]
    c = MessageChecker(CHAIN, lambda slot: pubs, cache_size=2)
    a, b, d = (Prevote(10, r, H).signed_by(DIRECTORS[0], CHAIN).encode() for r in range(3))
    assert c.check(a, 10) is not None and c.check(a, 10) is not None
    assert len(calls) == 1  # the second copy was not verified again
    c.check(b, 10)
    c.check(d, 10)  # evicts a, the oldest
    assert len(calls) == 3
    assert c.check(b, 10) is not None and len(calls) == 3  # b is still cached
    assert c.check(a, 10) is not None and len(calls) == 4  # a was evicted: verified again
    assert c.check(a, 10) == Prevote(10, 0, H).signed_by(DIRECTORS[0], CHAIN)


def test_the_default_cache_holds_4096_messages() -> None:
    assert MessageChecker(CHAIN, lambda slot: None)._cache_size == 4096


def test_rejections_accumulate() -> None:
    c = _checker()
    for _ in range(3):
        c.check(b"\xff", 10)
        c.check(Prevote(1, 0, H).signed_by(DIRECTORS[0], CHAIN).encode(), 10)
    assert c.rejected["malformed_cbor"] == 3 and c.rejected["stale_slot"] == 3


def test_size_limit_is_the_checkers() -> None:
    pubs = [k.public_key for k in DIRECTORS]
    small = MessageChecker(CHAIN, lambda slot: pubs, max_bytes=50)
    assert small.check(Prevote(10, 0, H).signed_by(DIRECTORS[0], CHAIN).encode(), 10) is None
    assert small.rejected["too_large"] == 1
