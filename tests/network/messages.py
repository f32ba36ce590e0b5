"""Valid and invalid protocol messages signed by the test hosts' keys."""

from __future__ import annotations

from consensus.certificate import Certificate
from consensus.evidence import Evidence
from consensus.messages import Precommit, Prevote, Value, canonical, sha256
from generation.recipe import Recipe
from network.topics import encode_recipe
from tests.network.conftest import CHAIN, identity

VALUE = Value(sha256(b"media"), None)


def prevote(i: int, slot: int = 10, round_: int = 0, value: bytes | None = VALUE.hash) -> bytes:
    return Prevote(slot, round_, value).signed_by(identity(i).signer, CHAIN).encode()


def certificate(signers: range, slot: int = 10) -> bytes:
    sigs = tuple(
        sorted(
            (
                identity(i).public_key,
                Precommit(slot, 0, VALUE.hash).signed_by(identity(i).signer, CHAIN).signature,
            )
            for i in signers
        )
    )
    return Certificate(slot, 0, VALUE, sigs).encode()


def evidence(i: int, slot: int = 10) -> bytes:
    a = Prevote(slot, 1, sha256(b"a")).signed_by(identity(i).signer, CHAIN)
    b = Prevote(slot, 1, sha256(b"b")).signed_by(identity(i).signer, CHAIN)
    return Evidence.of(a, b).encode()


def recipe(text: str = "Good evening, viewers.") -> bytes:
    return encode_recipe(
        Recipe.parse(
            {"audio_track": {"script": text, "voice_id": "morty"}, "visual_track": {"prompt": "a newsreader"}}
        )
    )


def bad_recipe() -> bytes:
    return canonical([1, "recipe", b'{"audio_track": {"script": "", "voice_id": "morty"}}'])


def bad_signature(i: int) -> bytes:
    good = bytearray(prevote(i))
    good[-1] ^= 0xFF  # the signature is the last field
    return bytes(good)
