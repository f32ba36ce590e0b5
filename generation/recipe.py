"""The slot recipe: what every director of a slot generates, field for field.

Recipes arrive from the network, so they are parsed strictly (no type coercion,
no unknown keys, no NaN or infinities) and every error names the field; the JSON
text is bounded in size and nesting before it is parsed, and every failure is a
`RecipeError`, never another exception. `network_recipe` is the one rule for a
recipe that travels (HTTP, gossip, a proposal's next recipe, a committed recipe):
valid for the engine (its duration within the slot's audio) and small enough for
the consensus value that carries it, so nothing is accepted at one door and
refused at the next. The canonical encoding and
its hash identify a recipe across nodes; when a recipe carries no seed, the seed
is derived from that hash and the slot number, so all directors draw the same
noise and their outputs can agree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError, field_validator

from consensus.messages import MAX_RECIPE_BYTES
from generation.errors import RecipeError
from generation.validation import StrictModel, describe_validation_error

VOICES: tuple[str, ...] = ("rick_c137", "morty", "summer", "jerry", "beth")
Emotion = Literal["neutral", "excited", "sad", "angry", "manic"]
MAX_SCRIPT_CHARS = 5000
MAX_PROMPT_CHARS = 2000
MAX_RENDERER_PARAMS_BYTES = 4096
MAX_RECIPE_TEXT_BYTES = 64 * 1024  # JSON text as submitted (whitespace included); canonical: MAX_RECIPE_BYTES
MAX_JSON_DEPTH = 16  # objects and arrays inside one another; a recipe needs 4 (renderer params a few more)
# The longest a slot's audio is: the engine's audio buffer (generation.config) by default.
SLOT_AUDIO_SEC = 45.0


class _Strict(StrictModel):
    """Recipes come from strangers: no type coercion, no NaN or infinities, on top of the strict base."""

    model_config = ConfigDict(strict=True, allow_inf_nan=False)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def json_depth_exceeds(text: str, limit: int) -> bool:
    """Whether arrays and objects nest deeper than `limit`, found in one pass without parsing
    (so a body of 100,000 '[' is refused before `json.loads` could recurse on it)."""
    depth = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            if depth > limit:
                return True
        elif ch in "]}":
            depth -= 1
    return False


def load_json(text: str, *, what: str = "recipe", max_bytes: int = MAX_RECIPE_TEXT_BYTES) -> Any:
    """Bounded, total JSON: size and nesting checked first, NaN and Infinity refused; RecipeError only."""
    if len(text) > max_bytes:
        raise RecipeError(f"{what}: longer than {max_bytes} characters")
    if json_depth_exceeds(text, MAX_JSON_DEPTH):
        raise RecipeError(f"{what}: nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise RecipeError(f"{what}: not valid JSON: {str(exc)[:200]}") from None


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


class AudioTrack(_Strict):
    script: str = Field(max_length=MAX_SCRIPT_CHARS)
    voice_id: str
    speed: float = Field(1.0, ge=0.8, le=1.2)
    emotion: Emotion = "neutral"

    @field_validator("script")
    @classmethod
    def _script(cls, v: str) -> str:
        return _not_blank(v)

    @field_validator("voice_id")
    @classmethod
    def _voice(cls, v: str) -> str:
        if v not in VOICES:
            raise ValueError(f"unknown voice {v!r} (known: {', '.join(VOICES)})")
        return v


class VisualTrack(_Strict):
    prompt: str = Field(max_length=MAX_PROMPT_CHARS)
    negative_prompt: str = Field("", max_length=MAX_PROMPT_CHARS)

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, v: str) -> str:
        return _not_blank(v)


class RendererRef(_Strict):
    """A plugin renderer the recipe asks for; it replaces the stage its manifest names."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,63}$")
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _small_json(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            size = len(json.dumps(v, allow_nan=False))
        except (TypeError, ValueError):
            raise ValueError("must be plain JSON data") from None
        if size > MAX_RENDERER_PARAMS_BYTES:
            raise ValueError(f"larger than {MAX_RENDERER_PARAMS_BYTES} bytes of JSON")
        return v


class Recipe(_Strict):
    audio_track: AudioTrack
    visual_track: VisualTrack
    seed: int | None = Field(None, ge=0, lt=2**63)
    duration_sec: float | None = Field(None, gt=0)
    renderer: RendererRef | None = None

    @classmethod
    def parse(cls, data: Any, *, max_duration_sec: float | None = None) -> Recipe:
        """Validate a recipe given as a mapping, JSON text or JSON bytes."""
        if isinstance(data, Recipe):
            recipe = data
        else:
            if isinstance(data, bytes | bytearray):
                try:
                    data = data.decode("utf-8")
                except UnicodeDecodeError:
                    raise RecipeError("recipe: not UTF-8 text") from None
            if isinstance(data, str):
                data = load_json(data)
            if not isinstance(data, Mapping):
                raise RecipeError(f"recipe: expected an object, got {type(data).__name__}")
            try:
                recipe = cls.model_validate(dict(data))
            except ValidationError as exc:
                raise RecipeError("; ".join(describe_validation_error(exc))) from None
            except (ValueError, TypeError, RecursionError) as exc:  # a validator's own failure on odd data
                raise RecipeError(f"recipe: {str(exc)[:200]}") from None
        if (
            max_duration_sec is not None
            and recipe.duration_sec is not None
            and recipe.duration_sec > max_duration_sec
        ):
            raise RecipeError(
                f"duration_sec: {recipe.duration_sec} s is longer than the slot's {max_duration_sec} s"
            )
        return recipe

    def canonical_bytes(self) -> bytes:
        """Deterministic JSON encoding: sorted keys, no spaces, UTF-8."""
        return json.dumps(
            self.model_dump(mode="json"), sort_keys=True, separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")

    def content_hash(self) -> str:
        return hashlib.sha256(self.canonical_bytes()).hexdigest()

    def seed_for_slot(self, slot_id: int) -> int:
        """The recipe's own seed, or one derived from its hash and the slot number."""
        if self.seed is not None:
            return self.seed
        digest = hashlib.sha256(self.canonical_bytes() + b"|slot|" + str(int(slot_id)).encode()).digest()
        return int.from_bytes(digest[:8], "big") & (2**63 - 1)


def network_recipe(data: Any) -> Recipe:
    """A recipe valid for the network: parsed as `Recipe.parse`, its duration within the slot's audio,
    its canonical form within the consensus value's limit. RecipeError otherwise (the module docstring)."""
    recipe = Recipe.parse(data, max_duration_sec=SLOT_AUDIO_SEC)
    size = len(recipe.canonical_bytes())
    if size > MAX_RECIPE_BYTES:
        raise RecipeError(
            f"recipe: {size} bytes in canonical form, more than the {MAX_RECIPE_BYTES} a slot carries"
        )
    return recipe
