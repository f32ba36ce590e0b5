"""Typed network settings: the `[network]` table of the operator's TOML.

The node's config loader validates the whole file; this module only defines
the table's shape and its checks, so `network/` can be built and tested alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import multiaddr
from pydantic import Field, ValidationError, field_validator, model_validator

from generation.validation import StrictModel, describe_validation_error


class NetworkConfigError(ValueError):
    """The `[network]` settings are malformed; the message names the key."""


class _Strict(StrictModel):
    """This module's models: the shared strict base (generation.validation)."""


def _parse_multiaddr(value: str) -> multiaddr.Multiaddr:
    try:
        return multiaddr.Multiaddr(value)
    except Exception as exc:  # the multiaddr package raises several unrelated types
        raise ValueError(f"{value!r} is not a multiaddr ({exc})") from None


class GossipSettings(_Strict):
    # Mesh degree: D, D_low, D_high as in the gossipsub spec.
    degree: int = Field(6, ge=1, le=32)
    degree_low: int = Field(4, ge=1, le=32)
    degree_high: int = Field(10, ge=1, le=64)
    heartbeat_sec: float = Field(1.0, gt=0, le=60)
    # How long a pruned peer waits before grafting again (spec default 60 s; short
    # slots need the mesh to heal within a slot).
    prune_backoff_sec: int = Field(5, ge=1, le=600)
    seen_ttl_sec: int = Field(120, ge=10, le=3600)
    # Messages the node may hold per topic before it is read; beyond it the library drops.
    subscription_queue: int = Field(4096, ge=32, le=1_000_000)
    # A peer whose score falls below this is pruned from every mesh and ignored.
    graylist_score: float = Field(-20.0, lt=0)
    # Each invalid message costs 10 points; what is left of a penalty after each heartbeat.
    invalid_penalty_decay: float = Field(0.9, gt=0, lt=1)

    @model_validator(mode="after")
    def _ordered(self) -> GossipSettings:
        if not self.degree_low <= self.degree <= self.degree_high:
            raise ValueError(
                f"need degree_low <= degree <= degree_high, got {self.degree_low}, {self.degree}, "
                f"{self.degree_high}"
            )
        return self


class MediaSettings(_Strict):
    max_file_bytes: int = Field(64 * 1024 * 1024, ge=1024, le=4 * 1024**3)
    # Chunk requests a download keeps in flight, each to a different peer; more spreads load,
    # fewer saves connections.
    parallel_providers: int = Field(3, ge=1, le=32)
    # Chunks asked for in one request; the unit that moves to another provider on failure.
    chunks_per_request: int = Field(4, ge=1, le=256)
    request_timeout_sec: float = Field(5.0, gt=0, le=600)
    # Chunk requests this node serves at once; beyond it a fetcher is told "busy" and asks
    # a peer that got the chunks meanwhile (BitTorrent's unchoke slots): so the first holder
    # of a file does not upload every copy.
    max_uploads: int = Field(4, ge=1, le=1024)
    # Sessions (one stream per fetching peer and file: chunk list, have-maps, requests) served at once.
    max_serving_streams: int = Field(64, ge=1, le=4096)
    # Peers a download may hold sessions with at once: connected peers first, then providers to dial.
    watched_peers: int = Field(16, ge=1, le=256)
    # How long a session may stay idle (no request) before the serving peer ends it.
    watch_sec: float = Field(30.0, gt=0, le=600)
    # A session asked for content a peer has not started to fetch waits this long for it to
    # start before the answer is "missing"; the fetcher asks again `rewatch_sec` later.
    missing_wait_sec: float = Field(0.5, ge=0, le=60)
    rewatch_sec: float = Field(0.3, gt=0, le=60)
    # A peer still downloading pushes its have-map to a session (to answer the fetcher's want) at
    # most this often: each message costs py-libp2p about a millisecond of CPU at each end.
    have_interval_sec: float = Field(0.1, ge=0, le=10)
    # A node that has a file gossips so (media-have) only while it knows fewer than this many other
    # holders. Every announcement costs every node in the network a gossip delivery (milliseconds of
    # CPU in py-libp2p); beyond a few holders more tell fetchers nothing they need, as a download
    # also asks its connected neighbours, and those serve what they hold. With 2, a slot's file is
    # announced by its maker and the first to fetch it (more when several finish at once).
    announce_below_holders: int = Field(2, ge=1, le=64)
    # Receive credit a download's session offers from its first frame (yamux's default is 256 KiB,
    # handed back in a message per 128 KiB read). It bounds what a peer can have in flight to this
    # node on one session, so memory is this times the sessions held (parallel_providers a download).
    session_window_bytes: int = Field(4 * 1024 * 1024, ge=256 * 1024, le=16 * 1024 * 1024)


class ReconnectSettings(_Strict):
    initial_backoff_sec: float = Field(0.5, gt=0, le=60)
    max_backoff_sec: float = Field(30.0, gt=0, le=3600)
    dial_timeout_sec: float = Field(5.0, gt=0, le=120)


class NetworkSettings(_Strict):
    # Loopback unless the operator says otherwise: exposing the node is a choice (node.template, README).
    listen: tuple[str, ...] = Field(
        ("/ip4/127.0.0.1/tcp/4001",),
        description=(
            "where libp2p listens. Loopback reaches only this machine; to take part in a network, listen "
            'where peers can dial you (e.g. "/ip4/0.0.0.0/tcp/4001", all interfaces) and open that port. '
            "Everything a peer sends there is size-checked and validated before use, and a bad message "
            "only costs its sender"
        ),
    )
    bootstrap: tuple[str, ...] = Field(
        (), description='peers to dial first, e.g. "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooW..."'
    )
    gossip: GossipSettings = GossipSettings()
    media: MediaSettings = MediaSettings()
    reconnect: ReconnectSettings = ReconnectSettings()

    @field_validator("listen")
    @classmethod
    def _listen_addrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("at least one listen address is needed")
        for addr in v:
            ma = _parse_multiaddr(addr)
            names = [p.name for p in ma.protocols()]
            if "tcp" not in names:
                raise ValueError(f"{addr!r}: the node listens on TCP only (e.g. /ip4/0.0.0.0/tcp/4001)")
        return v

    @field_validator("bootstrap")
    @classmethod
    def _bootstrap_addrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for addr in v:
            ma = _parse_multiaddr(addr)
            if "p2p" not in [p.name for p in ma.protocols()]:
                raise ValueError(f"{addr!r}: a bootstrap address must end in /p2p/<peer id>")
        return v

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any] | None, *, origin: str = "network") -> NetworkSettings:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise NetworkConfigError(f"{origin}: expected a table of settings, got {type(data).__name__}")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise NetworkConfigError("\n".join(describe_validation_error(exc, origin))) from None
