"""Simnet scenarios: how many nodes, how many slots, and a timeline of faults, as TOML.

name = "crash-director"
nodes = 5
slots = 6
slot_sec = 8.0

[[recipes]]                 # submitted through a node's HTTP endpoint
at_slot = 0.5               # when: slot number plus fraction of the slot
node = 0
script = "Breaking news from dimension C-137."
voice_id = "rick_c137"
prompt = "a news anchor at a desk"

[[faults]]
at_slot = 2.3
action = "crash"            # crash | restart | pause | resume | delay | loss | partition | heal
nodes = [1]

[byzantine]                 # node index -> behaviour (simnet only; never in a production config)
3 = "equivocate"

[expect]                    # checked like the invariants; a miss fails the run
min_committed_slots = 4
evidence_against = [3]
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from generation.validation import StrictModel, describe_validation_error

BEHAVIOURS = ("equivocate", "different-output", "missing-candidate", "silent", "replay", "flood", "hostile")
Behaviour = Literal[
    "equivocate", "different-output", "missing-candidate", "silent", "replay", "flood", "hostile"
]
Action = Literal["crash", "restart", "pause", "resume", "delay", "loss", "partition", "heal"]


class ScenarioError(ValueError):
    """A scenario file is malformed; the message names the key."""


class _Strict(StrictModel):
    """This module's models: the shared strict base (generation.validation)."""


class RecipeSubmission(_Strict):
    at_slot: float = Field(ge=0)
    node: int = Field(0, ge=0)
    script: str = Field(min_length=1, max_length=2000)
    voice_id: str = "rick_c137"
    prompt: str = Field("a presenter in a studio", min_length=1)


class FaultEvent(_Strict):
    at_slot: float = Field(ge=0)
    action: Action
    nodes: tuple[int, ...] = Field(min_length=1)
    # delay/loss/partition: the other side of each link (default: every other node)
    peers: tuple[int, ...] = ()
    delay_sec: float = Field(0.0, ge=0, le=60)
    loss: float = Field(0.0, ge=0, lt=1)


class Expectations(_Strict):
    """What this scenario must show, on top of the invariants every run is checked for."""

    min_committed_slots: int = Field(0, ge=0)
    evidence_against: tuple[int, ...] = ()  # nodes some honest node must hold evidence against
    media_everywhere: bool = False  # every live honest node holds every committed slot's media
    no_commit_during: tuple[float, float] | None = None  # slots (from, to) where no slot may commit
    # some committed slot's directors began making it before the slot started (issue 21, step 3)
    early_generation: bool = False


class Scenario(_Strict):
    name: str
    description: str = ""
    nodes: int = Field(ge=1, le=200)
    slots: int = Field(ge=1, le=10_000)
    slot_sec: float = Field(8.0, ge=2.0, le=600)
    directors_per_slot: int = Field(5, ge=1, le=100)
    seed: int = 0
    recipes: tuple[RecipeSubmission, ...] = ()
    faults: tuple[FaultEvent, ...] = ()
    byzantine: dict[int, Behaviour] = {}
    expect: Expectations = Expectations()

    @field_validator("byzantine", mode="before")
    @classmethod
    def _int_keys(cls, v: object) -> object:
        if isinstance(v, dict):
            try:
                return {int(k): b for k, b in v.items()}
            except ValueError:
                raise ValueError("keys must be node indices") from None
        return v

    @model_validator(mode="after")
    def _indices_exist(self) -> Scenario:
        for where, indices in (
            [("byzantine", tuple(self.byzantine))]
            + [(f"faults[{i}]", f.nodes + f.peers) for i, f in enumerate(self.faults)]
            + [(f"recipes[{i}]", (r.node,)) for i, r in enumerate(self.recipes)]
        ):
            bad = [i for i in indices if i >= self.nodes]
            if bad:
                raise ValueError(f"{where}: node {bad[0]} does not exist (nodes = {self.nodes})")
        return self

    @property
    def honest(self) -> list[int]:
        return [i for i in range(self.nodes) if i not in self.byzantine]

    @classmethod
    def load(cls, name_or_path: str | Path) -> Scenario:
        """A bundled scenario by name (`smoke`, ...) or a TOML file."""
        path = Path(name_or_path)
        if path.suffix == ".toml" or path.exists():
            try:
                text = path.read_text()
            except OSError as exc:
                raise ScenarioError(f"{path}: cannot read: {exc}") from None
            origin = str(path)
        else:
            ref = resources.files("simnet") / "scenarios" / f"{name_or_path}.toml"
            if not ref.is_file():
                raise ScenarioError(f"no scenario named {name_or_path!r}; bundled: {', '.join(bundled())}")
            text, origin = ref.read_text(), f"scenario {name_or_path}"
        try:
            data = tomllib.loads(text)
        except (tomllib.TOMLDecodeError, RecursionError) as exc:
            raise ScenarioError(f"{origin}: not valid TOML: {str(exc)[:200]}") from None
        return cls.from_mapping(data, origin=origin)

    @classmethod
    def from_mapping(cls, data: object, *, origin: str) -> Scenario:
        """A scenario from parsed TOML; ScenarioError (naming the key) for anything else."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ScenarioError("\n".join(describe_validation_error(exc, origin))) from None
        except (ValueError, TypeError, RecursionError) as exc:  # a validator's own failure on odd data
            raise ScenarioError(f"{origin}: {str(exc)[:200]}") from None


def bundled() -> list[str]:
    folder = resources.files("simnet") / "scenarios"
    return sorted(p.name.removesuffix(".toml") for p in folder.iterdir() if p.name.endswith(".toml"))
