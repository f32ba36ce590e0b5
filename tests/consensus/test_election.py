import math
import random
from collections import Counter

import pytest

from consensus.election import elect_directors
from consensus.membership import Genesis, Validator, max_faulty, quorum
from tests.consensus.conftest import keys, validators

# Known answers (see test_known_answer_election): a change breaks agreement across releases.
KNOWN = [4, 5, 6, 8, 7]
KNOWN_BIG_SLOT = [2, 4, 8, 1, 3]


def test_deterministic_and_independent_of_listing_order(genesis: Genesis) -> None:
    vals = list(genesis.validators)
    first = elect_directors(vals, b"beacon", 5)
    random.Random(1).shuffle(vals)
    assert elect_directors(vals, b"beacon", 5) == first
    assert len(first) == 5 and len(set(first)) == 5
    assert elect_directors(vals, b"beacon", 6) != first or elect_directors(vals, b"other", 5) != first


def test_region_cap() -> None:
    s = keys(10)
    vals = validators(s, regions=["eu"] * 7 + ["us", "us", "asia"])
    for slot in range(50):
        chosen = elect_directors(vals, b"b", slot, count=5, max_per_region=2)
        regions = Counter(v.region for v in vals if v.public_key in chosen)
        assert max(regions.values()) <= 2
        assert len(chosen) == 5  # eu 2, us 2, asia 1


def test_fewer_directors_when_the_caps_leave_too_few() -> None:
    vals = validators(keys(6), regions=["eu"] * 6)
    assert len(elect_directors(vals, b"b", 1, count=5, max_per_region=2)) == 2


def test_weight_follows_sqrt_reputation() -> None:
    s = keys(2)
    vals = validators(s, regions=["a", "b"], reputations=[0.0, 8.0])  # weights 1 and 3
    wins = Counter(elect_directors(vals, b"beacon", slot, count=1)[0] for slot in range(4000))
    share = wins[s[1].public_key] / 4000
    assert share == pytest.approx(3 / 4, abs=0.03)  # P(heavier first) = w2 / (w1 + w2)


def test_excluded_and_cooling() -> None:
    s = keys(8)
    vals = validators(s, regions=[f"r{i}" for i in range(8)])
    banned = s[0].public_key
    for slot in range(30):
        assert banned not in elect_directors(vals, b"b", slot, excluded={banned})
    cooling = set(elect_directors(vals, b"b", 3, count=3))
    again = elect_directors(vals, b"b", 3, count=3, cooling=cooling)
    assert not cooling & set(again)
    # cooling validators are taken only when the slot cannot otherwise be filled
    assert len(elect_directors(vals, b"b", 3, count=8, cooling=cooling)) == 8


def test_quorum_sizes() -> None:
    assert [quorum(n) for n in (1, 3, 4, 5, 6, 7, 10)] == [1, 3, 3, 4, 5, 5, 7]
    assert [max_faulty(n) for n in (1, 3, 4, 5, 6, 7, 10)] == [0, 0, 1, 1, 1, 2, 3]
    for n in range(1, 30):
        f = (n - 1) // 3
        assert 2 * quorum(n) - n > f  # two quorums always share a correct member
        assert n - f >= quorum(n)  # the correct members alone can form one


def test_validator_and_genesis_checks(signers) -> None:
    with pytest.raises(ValueError, match="public key must be 32 bytes"):
        Validator("p", b"short", "eu")
    with pytest.raises(ValueError, match="reputation"):
        Validator("p", signers[0].public_key, "eu", math.nan)
    with pytest.raises(ValueError, match="region"):
        Validator("p", signers[0].public_key, "")
    v = Validator("p", signers[0].public_key, "eu")
    with pytest.raises(ValueError, match="share a public key"):
        Genesis((v, Validator("q", signers[0].public_key, "eu")), 0.0)
    with pytest.raises(ValueError, match="share a peer id"):
        Genesis((v, Validator("p", signers[1].public_key, "eu")), 0.0)


def test_slot_clock(genesis: Genesis) -> None:
    t0 = genesis.genesis_time
    assert genesis.slot_at(t0 - 1) == -1
    assert genesis.slot_at(t0) == 0
    assert genesis.slot_at(t0 + 44.999) == 0
    assert genesis.slot_at(t0 + 45) == 1
    assert genesis.slot_start(3) == t0 + 135


def test_chain_id_commits_to_the_genesis(genesis: Genesis) -> None:
    other = Genesis(genesis.validators, genesis.genesis_time, seed=b"other")
    assert genesis.chain_id != other.chain_id
    assert genesis.chain_id == Genesis(genesis.validators, genesis.genesis_time, seed=b"seed").chain_id


def test_known_answer_election() -> None:
    vals = validators(
        keys(10), regions=["a", "b", "c", "d", "e"] * 2, reputations=[float(i) for i in range(10)]
    )
    index = {v.public_key: i for i, v in enumerate(vals)}
    assert [index[k] for k in elect_directors(vals, b"\x00" * 32, 7)] == KNOWN
    assert [index[k] for k in elect_directors(vals, b"\x00" * 32, 2**40)] == KNOWN_BIG_SLOT


def test_default_region_cap_is_two() -> None:
    vals = validators(keys(9), regions=["eu"] * 9)
    assert len(elect_directors(vals, b"b", 3)) == 2


def test_reputation_overrides_change_the_weights() -> None:
    s = keys(2)
    vals = validators(s, regions=["a", "b"], reputations=[0.0, 8.0])
    flat = {s[1].public_key: 0.0}
    wins = Counter(
        elect_directors(vals, b"beacon", slot, count=1, reputations=flat)[0] for slot in range(4000)
    )
    assert wins[s[1].public_key] / 4000 == pytest.approx(0.5, abs=0.03)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"slot_sec": 0}, "slot_sec must be positive"),
        ({"directors_per_slot": 0}, "directors_per_slot must be at least 1"),
        ({"evidence_lag": 0}, "evidence_lag must be at least 1"),
        ({"recipe_lag": 0}, "recipe_lag must be between 1 and 16"),
        ({"recipe_lag": 17}, "recipe_lag must be between 1 and 16"),
    ],
)
def test_genesis_bounds(signers, kw, message) -> None:
    with pytest.raises(ValueError, match=message):
        Genesis(validators(signers), 0.0, **kw)


def test_genesis_smallest_valid_values(signers) -> None:
    g = Genesis(validators(signers), 0.0, slot_sec=0.5, directors_per_slot=1, evidence_lag=1)
    assert g.slot_at(1.2) == 2
