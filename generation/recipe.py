"""The slot recipe: what every director of a slot generates, field for field.

Recipes arrive from the network, so they are parsed strictly (no type coercion,
no unknown keys) and every error names the field. The canonical encoding and
its hash identify a recipe across nodes; when a recipe carries no seed, the seed
is derived from that hash and the slot number, so all directors draw the same
noise and their outputs can agree.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from generation.errors import RecipeError
from generation.validation import describe_validation_error

VOICES: tuple[str, ...] = ("rick_c137", "morty", "summer", "jerry", "beth")
Emotion = Literal["neutral", "excited", "sad", "angry", "manic"]
MAX_SCRIPT_CHARS = 5000
MAX_PROMPT_CHARS = 2000
MAX_RENDERER_PARAMS_BYTES = 4096


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


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
                try:
                    data = json.loads(data)
                except json.JSONDecodeError as exc:
                    raise RecipeError(f"recipe: not valid JSON: {exc}") from None
            if not isinstance(data, Mapping):
                raise RecipeError(f"recipe: expected an object, got {type(data).__name__}")
            try:
                recipe = cls.model_validate(dict(data))
            except ValidationError as exc:
                raise RecipeError("; ".join(describe_validation_error(exc))) from None
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
