from __future__ import annotations

import pytest

from consensus.crypto import Signer
from consensus.membership import Genesis, Validator
from consensus.messages import sha256


def keys(n: int, tag: str = "v") -> list[Signer]:
    return [Signer.from_seed(sha256(f"{tag}-{i}".encode())) for i in range(n)]


def validators(
    signers: list[Signer], regions: list[str] | None = None, reputations: list[float] | None = None
):
    regions = regions or [f"r{i % 4}" for i in range(len(signers))]
    reputations = reputations or [1.0] * len(signers)
    return tuple(
        Validator(f"peer-{i}", s.public_key, regions[i], reputations[i]) for i, s in enumerate(signers)
    )


@pytest.fixture
def signers() -> list[Signer]:
    return keys(12)


@pytest.fixture
def genesis(signers: list[Signer]) -> Genesis:
    return Genesis(validators(signers), genesis_time=1_700_000_000.0, seed=b"seed")
