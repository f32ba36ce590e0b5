"""Plugin manifests (`manifest.yaml`): their schema, and loading one with errors that name file and key.

The manifest format is itself a JSON Schema, checked by the `jsonschema`
library, as are the plugins' declared input and output schemas.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from generation.plugins.errors import ManifestError

LANES = ("lane0", "lane1")  # lane0: on-air slots (deterministic, slot budget); lane1: off-air work
STAGES = ("actor", "warp")

MANIFEST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": [
        "schema_version",
        "name",
        "version",
        "entrypoint",
        "description",
        "supported_lanes",
        "deterministic",
        "resources",
        "io",
    ],
    "properties": {
        "schema_version": {"const": 1},
        "name": {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,63}$"},
        "version": {"type": "string", "pattern": r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$"},
        "entrypoint": {"type": "string", "pattern": r"^([A-Za-z_][\w.]*|[\w./-]+\.py):[A-Za-z_]\w*$"},
        "description": {"type": "string", "minLength": 1, "maxLength": 500},
        "supported_lanes": {
            "type": "array",
            "items": {"enum": list(LANES)},
            "minItems": 1,
            "uniqueItems": True,
        },
        "deterministic": {"type": "boolean"},
        "replaces": {"enum": list(STAGES)},
        "resources": {
            "type": "object",
            "additionalProperties": False,
            "required": ["vram_gb", "max_latency_ms", "max_concurrency"],
            "properties": {
                "vram_gb": {"type": "number", "minimum": 0, "maximum": 80},
                "max_latency_ms": {"type": "integer", "minimum": 1, "maximum": 3_600_000},
                "max_concurrency": {"type": "integer", "minimum": 1, "maximum": 64},
            },
        },
        "io": {
            "type": "object",
            "additionalProperties": False,
            "required": ["input_schema", "output_schema"],
            "properties": {"input_schema": {"type": "object"}, "output_schema": {"type": "object"}},
        },
    },
}
_VALIDATOR = Draft202012Validator(MANIFEST_SCHEMA)


@dataclass(frozen=True)
class PluginManifest:
    path: Path  # the manifest file
    name: str
    version: str
    entrypoint: str
    description: str
    supported_lanes: tuple[str, ...]
    deterministic: bool
    replaces: str | None
    vram_gb: float
    max_latency_ms: int
    max_concurrency: int
    input_schema: dict
    output_schema: dict

    @property
    def directory(self) -> Path:
        return self.path.parent


def _key(error: Any) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "required":
        missing = error.message.split("'")[1] if "'" in error.message else "?"
        return f"{path}.{missing}" if path else missing
    if error.validator == "additionalProperties":
        extra = error.message.split("'")[1] if "'" in error.message else "?"
        return f"{path}.{extra}" if path else extra
    return path or "<root>"


def _message(error: Any) -> str:
    if error.validator == "required":
        return "missing"
    if error.validator == "additionalProperties":
        return "unknown key"
    return error.message


def load_manifest(path: str | Path) -> PluginManifest:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ManifestError(f"{path}: no manifest.yaml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ManifestError(f"{path}: cannot read: {exc}") from None
    except yaml.YAMLError as exc:
        raise ManifestError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ManifestError(f"{path}: <root>: expected a mapping of keys")
    errors = sorted(_VALIDATOR.iter_errors(data), key=lambda e: (list(e.absolute_path), e.message))
    if errors:
        raise ManifestError("; ".join(f"{path}: {_key(e)}: {_message(e)}" for e in errors))
    for key in ("input_schema", "output_schema"):
        try:
            Draft202012Validator.check_schema(data["io"][key])
        except SchemaError as exc:
            raise ManifestError(f"{path}: io.{key}: not a valid JSON Schema: {exc.message}") from None
    if "lane0" in data["supported_lanes"]:
        if not data["deterministic"]:
            raise ManifestError(f"{path}: deterministic: a lane0 (on-air) plugin must be deterministic")
        if "replaces" not in data:
            raise ManifestError(
                f"{path}: replaces: a lane0 plugin must say which stage it replaces (actor or warp)"
            )
    res = data["resources"]
    return PluginManifest(
        path=path,
        name=data["name"],
        version=data["version"],
        entrypoint=data["entrypoint"],
        description=data["description"],
        supported_lanes=tuple(data["supported_lanes"]),
        deterministic=data["deterministic"],
        replaces=data.get("replaces"),
        vram_gb=float(res["vram_gb"]),
        max_latency_ms=int(res["max_latency_ms"]),
        max_concurrency=int(res["max_concurrency"]),
        input_schema=data["io"]["input_schema"],
        output_schema=data["io"]["output_schema"],
    )
