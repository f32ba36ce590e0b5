"""The operator's TOML file, validated into one typed `NodeSettings`.

One file configures a node: `[node]` (identity, storage, HTTP address, logs),
`[chain]` (genesis and validator set), `[slot]` (the phase plan), `[agreement]`
(consensus timeouts), `[network]` (`network.settings`), `[generation]` (the
engine's schema, `generation.config`; or `node.generation_config` naming the
seed's YAML file), `[limits]`. Every error names the file and the dotted key.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from consensus.agreement import AgreementConfig
from consensus.ledger import KEEP_SLOTS
from consensus.membership import MAX_RECIPE_LAG, Genesis, Validator
from generation.config import GenerationSettings
from generation.errors import ConfigError
from generation.validation import StrictModel, describe_validation_error
from network.settings import NetworkConfigError, NetworkSettings


class NodeConfigError(ValueError):
    """The operator's config is malformed; the message names the file and the key."""


class _Strict(StrictModel):
    """This module's models: the shared strict base (generation.validation)."""


def _host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"{value!r} is not host:port (e.g. 127.0.0.1:9464)")
    return value


class NodeSection(_Strict):
    key_file: str = Field("node.key", description="from `icn-node keygen`; mode 0600")
    storage_dir: str = Field("data", description="SQLite state and content-addressed media")
    http_addr: str = Field(
        "127.0.0.1:9464", description="GET /metrics (Prometheus), GET /status, POST /recipes"
    )
    log_format: Literal["text", "json"] = Field(
        "text", description='or "json": one object per line, with slot and phase'
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    generation_config: str | None = Field(
        None, description="the seed's YAML engine config, instead of [generation]"
    )
    fallback_recipe: str | None = Field(None, description="JSON recipe played when the chain names none")

    _addr = field_validator("http_addr")(classmethod(lambda cls, v: _host_port(v)))


class ValidatorEntry(_Strict):
    public_key: str = Field(description="hex of the validator's 32-byte Ed25519 public key")
    region: str = Field(min_length=1, max_length=64, description="at most max_directors_per_region a slot")
    reputation: float = Field(0.0, ge=0, le=1e6, description="weighs its election chance")

    @field_validator("public_key")
    @classmethod
    def _hex32(cls, v: str) -> str:
        try:
            raw = bytes.fromhex(v)
        except ValueError:
            raise ValueError("not hex") from None
        if len(raw) != 32:
            raise ValueError(f"must be 32 bytes (64 hex digits), got {len(raw)}")
        return v.lower()


class ChainSection(_Strict):
    """Every node of a network has the same [chain] table: it is the genesis, and its hash the chain id."""

    genesis_time: float | datetime = Field(description="Unix seconds or an RFC 3339 time; slot 0 starts here")
    seed: str = Field("", description="the network's election seed")
    slot_sec: float = Field(Genesis.slot_sec, gt=0, le=3600)
    directors_per_slot: int = Field(Genesis.directors_per_slot, ge=1, le=100)
    max_directors_per_region: int = Field(Genesis.max_directors_per_region, ge=1, le=100)
    cooldown_slots: int = Field(
        Genesis.cooldown_slots, ge=0, le=1000, description="validators drawn for this many slots before rest"
    )
    evidence_lag: int = Field(
        Genesis.evidence_lag, ge=1, le=100, description="slots before committed evidence bars its signer"
    )
    recipe_lag: int = Field(
        Genesis.recipe_lag,
        ge=1,
        le=MAX_RECIPE_LAG,
        description="slot s plays the recipe the certificate of slot s - recipe_lag fixed",
    )
    validators: tuple[ValidatorEntry, ...] = Field(min_length=1, description="one table per validator")

    @model_validator(mode="after")
    def _distinct(self) -> ChainSection:
        keys = [v.public_key for v in self.validators]
        if len(set(keys)) != len(keys):
            raise ValueError("two validators share a public key")
        return self

    def genesis(self) -> Genesis:
        from network.identity import peer_id_of

        t = (
            self.genesis_time.timestamp()
            if isinstance(self.genesis_time, datetime)
            else float(self.genesis_time)
        )
        validators = tuple(
            Validator(
                str(peer_id_of(bytes.fromhex(v.public_key))),
                bytes.fromhex(v.public_key),
                v.region,
                v.reputation,
            )
            for v in self.validators
        )
        return Genesis(
            validators,
            t,
            self.seed.encode(),
            self.slot_sec,
            self.directors_per_slot,
            self.max_directors_per_region,
            self.cooldown_slots,
            self.evidence_lag,
            self.recipe_lag,
        )


class SlotSection(_Strict):
    """When each phase ends, in seconds from the slot's start (the seed's plan by default).

    A director makes its slot as soon as the slot's recipe is settled (`node.studio`:
    usually a slot and a half ahead, see [chain] recipe_lag), and must have it made
    and verified by `verification_end`; `generation_end` is the seed's plan for a slot
    made from its own start (audio and actor 0-12 s, warp 12-15 s), reported by
    `config check`, not a deadline. Agreement ends by `agreement_end`; the rest of the
    slot is propagation. The committed slot plays in the next slot.
    """

    generation_end: float = Field(15.0, gt=0, description="audio + actor 0-12 s, warp 12-15 s")
    verification_end: float = Field(17.0, gt=0, description="CLIP check and encoding")
    agreement_end: float = Field(30.0, gt=0, description="then propagation until the slot ends")

    @classmethod
    def scaled(cls, slot_sec: float) -> SlotSection:
        """The default phase plan (for 45 s slots) scaled to `slot_sec`: what `init` and `testnet` write."""
        base, k = cls(), slot_sec / 45.0
        return cls(
            generation_end=round(base.generation_end * k, 3),
            verification_end=round(base.verification_end * k, 3),
            agreement_end=round(base.agreement_end * k, 3),
        )


class AgreementSection(_Strict):
    """Consensus timeouts and thresholds; their defaults are the protocol's (`AgreementConfig`)."""

    timeout_propose: float = Field(AgreementConfig.timeout_propose, gt=0, le=600)
    timeout_prevote: float = Field(AgreementConfig.timeout_prevote, gt=0, le=600)
    timeout_precommit: float = Field(AgreementConfig.timeout_precommit, gt=0, le=600)
    timeout_delta: float = Field(AgreementConfig.timeout_delta, ge=0, le=600, description="added per round")
    threshold_b: float = Field(
        AgreementConfig.threshold_b,
        ge=-1,
        le=1,
        description="cosine agreement of two directors' CLIP-B embeddings",
    )
    threshold_l: float = Field(AgreementConfig.threshold_l, ge=-1, le=1)
    require_self_check: bool = AgreementConfig.require_self_check

    def config(self) -> AgreementConfig:
        return AgreementConfig(**self.model_dump())


class HttpSection(_Strict):
    """The public HTTP face: the viewer, the playlist, the media, the schedule."""

    public_addr: str = Field(
        "127.0.0.1:8080",
        description='where viewers connect; "0.0.0.0:8080" faces every interface (the internet, if routed)',
    )
    token_file: str | None = Field(
        None,
        description="bearer token (mode 0600) for POST /recipes on the operator face off loopback, and on "
        "the public face when it runs in the node's process; unset: those take none",
    )
    max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    max_header_bytes: int = Field(16 * 1024, ge=1024, le=1024 * 1024)
    request_timeout_sec: float = Field(10.0, ge=1, le=600, description="idle or slow requests are dropped")
    recipes_per_minute: int = Field(60, ge=1, le=100_000, description="per face, in a burst of as many")
    schedule_slots: int = Field(
        12, ge=1, le=KEEP_SLOTS, description="slots listed in /schedule.json (within the ledger's window)"
    )
    playlist_slots: int = Field(6, ge=2, le=100, description="the live playlist's window, in slots")
    public_process: bool = Field(
        True,
        description="serve the public face from its own process, reading the node's storage: viewers "
        "then cannot take the CPU and the GIL the node's director work needs (it takes no recipes)",
    )
    public_nice: int = Field(10, ge=0, le=19, description="that process's scheduling niceness")
    public_max_connections: int = Field(
        1000,
        ge=16,
        le=100_000,
        description="open connections that process holds at most (its file-descriptor limit); "
        "more wait in the kernel's listen queue",
    )

    _addr = field_validator("public_addr")(classmethod(lambda cls, v: _host_port(v)))


class LimitsSection(_Strict):
    recipe_queue: int = Field(
        64, ge=1, le=100_000, description="recipes waiting to be proposed; oldest dropped"
    )
    catch_up_batch: int = Field(64, ge=1, le=10_000, description="certificates asked of a peer at once")


class StorageSection(_Strict):
    """What the node keeps on disk, and for how long. The defaults fit a node with 50 GB of disk."""

    media_keep_hours: float = Field(
        48.0, gt=0, le=24 * 3650, description="committed media is deleted this long after it arrived"
    )
    media_max_gb: float = Field(
        40.0, gt=0, le=1_000_000, description="and beyond this much media, the oldest goes first"
    )
    journal_keep_slots: int = Field(
        1920, ge=100, le=10_000_000, description="vote journal, slot outcomes and CLIP scores kept, in slots"
    )
    certificates_keep_slots: int = Field(
        172_800,
        ge=4 * KEEP_SLOTS,  # a restart reads a checkpoint and the ledger's window before it
        le=1_000_000_000,
        description="certificates kept, in slots (90 days); those carrying evidence and those a restart "
        "needs stay whatever this says",
    )
    prune_every_sec: float = Field(60.0, ge=1, le=86_400, description="how often the node prunes")


class NodeSettings(_Strict):
    node: NodeSection = NodeSection()
    chain: ChainSection
    slot: SlotSection = SlotSection()
    agreement: AgreementSection = AgreementSection()
    network: NetworkSettings = NetworkSettings()
    generation: GenerationSettings = GenerationSettings()
    http: HttpSection = HttpSection()
    limits: LimitsSection = LimitsSection()
    storage: StorageSection = StorageSection()

    @model_validator(mode="after")
    def _phases_fit_the_slot(self) -> NodeSettings:
        s, slot = self.slot, self.chain.slot_sec
        if not s.generation_end <= s.verification_end <= s.agreement_end <= slot:
            raise ValueError(
                f"slot phases must end in order within the slot: generation_end ({s.generation_end}) <= "
                f"verification_end ({s.verification_end}) <= agreement_end ({s.agreement_end}) <= "
                f"chain.slot_sec ({slot})"
            )
        return self

    # -- loading ------------------------------------------------------------------------------------
    @classmethod
    def from_mapping(
        cls, data: Mapping[str, Any], *, origin: str, base_dir: Path | None = None
    ) -> NodeSettings:
        if not isinstance(data, Mapping):
            raise NodeConfigError(f"{origin}: expected a table of settings")
        data = dict(data)
        node = data.get("node", {})
        yaml_path = node.get("generation_config") if isinstance(node, Mapping) else None
        if yaml_path is not None and "generation" in data:
            raise NodeConfigError(f"{origin}: node.generation_config and [generation] both given; use one")
        try:
            if isinstance(yaml_path, str):
                path = Path(yaml_path)
                if base_dir is not None and not path.is_absolute():
                    path = base_dir / path
                try:
                    data["generation"] = GenerationSettings.from_yaml(path)
                except ConfigError as exc:
                    raise ConfigError(f"{origin}: node.generation_config: {exc}") from None
            elif "generation" in data:
                data["generation"] = GenerationSettings.from_mapping(
                    data["generation"], origin=f"{origin} [generation]"
                )
            if "network" in data:
                data["network"] = NetworkSettings.from_mapping(data["network"], origin=f"{origin}: network")
        except (ConfigError, NetworkConfigError) as exc:
            raise NodeConfigError(str(exc)) from None
        try:
            settings = cls.model_validate(data)
        except ValidationError as exc:
            raise NodeConfigError("\n".join(describe_validation_error(exc, origin))) from None
        except (ValueError, TypeError, RecursionError) as exc:  # a validator's own failure on odd data
            raise NodeConfigError(f"{origin}: {str(exc)[:200]}") from None
        if base_dir is not None:
            settings = settings.with_paths_under(base_dir)
        return settings

    @classmethod
    def load(cls, path: str | Path) -> NodeSettings:
        path = Path(path)
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise NodeConfigError(f"{path}: config file not found") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise NodeConfigError(f"{path}: cannot read: {exc}") from None
        try:
            data = tomllib.loads(text)
        except (tomllib.TOMLDecodeError, RecursionError) as exc:
            raise NodeConfigError(f"{path}: not valid TOML: {str(exc)[:200]}") from None
        return cls.from_mapping(data, origin=str(path), base_dir=path.parent)

    def with_paths_under(self, base: Path) -> NodeSettings:
        """Relative paths in `[node]` are relative to the config file's folder."""

        def resolve(p: str | None) -> str | None:
            return p if p is None or Path(p).is_absolute() else str(base / p)

        def resolve_dir(p: Path | None) -> Path | None:
            return p if p is None or p.is_absolute() else base / p

        node = self.node.model_copy(
            update={
                "key_file": resolve(self.node.key_file),
                "storage_dir": resolve(self.node.storage_dir),
                "fallback_recipe": resolve(self.node.fallback_recipe),
            }
        )
        http = self.http.model_copy(update={"token_file": resolve(self.http.token_file)})
        models = self.generation.models
        models = models.model_copy(
            update={
                "weights_dir": resolve_dir(models.weights_dir),
                "cache_dir": resolve_dir(models.cache_dir),
            }
        )
        generation = self.generation.model_copy(update={"models": models})
        return self.model_copy(update={"node": node, "generation": generation, "http": http})
