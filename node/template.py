"""The commented example config that `icn-node init` writes."""

from __future__ import annotations

TEMPLATE = """\
# ICN node configuration. Check it with `icn-node config check {config_name}`.
# Relative paths are relative to this file's folder.

[node]
key_file = "{key_file}"          # from `icn-node keygen`; mode 0600
storage_dir = "data"             # SQLite state and content-addressed media
http_addr = "127.0.0.1:9464"     # GET /metrics (Prometheus), GET /status, POST /recipes
log_format = "text"              # or "json": one object per line, with slot and phase
log_level = "INFO"
# fallback_recipe = "fallback.json"   # played when the chain names no recipe
# generation_config = "vortex.yaml"   # the seed's engine YAML, instead of [generation] below

[chain]
# Every node of a network has the same [chain] table: it is the genesis, and its hash the chain id.
genesis_time = {genesis_time}     # Unix seconds (or an RFC 3339 time); slot 0 starts here
seed = "{seed}"
slot_sec = 45.0
directors_per_slot = 5
max_directors_per_region = 2
cooldown_slots = 0
evidence_lag = 2

[[chain.validators]]             # one table per validator; this node's own key:
public_key = "{public_key}"
region = "{region}"
reputation = 1.0

[slot]                           # when each phase ends, seconds into the slot
generation_end = 15.0            # audio + actor 0-12 s, warp 12-15 s
verification_end = 17.0          # CLIP check and encoding
agreement_end = 30.0             # then propagation until the slot ends

[agreement]
timeout_propose = 3.0
timeout_prevote = 1.0
timeout_precommit = 1.0
timeout_delta = 0.5
threshold_b = 0.9                # cosine agreement of two directors' CLIP embeddings
threshold_l = 0.9
require_self_check = true

[network]
# Where libp2p listens. Loopback reaches only this machine; to take part in a network, listen where
# peers can dial you (e.g. "/ip4/0.0.0.0/tcp/4001", all interfaces) and open that port. Everything a
# peer sends there is size-checked and validated before use, and a bad message only costs its sender.
listen = ["/ip4/127.0.0.1/tcp/4001"]
bootstrap = []                   # e.g. "/ip4/203.0.113.7/tcp/4001/p2p/12D3KooW..."

[network.gossip]
heartbeat_sec = 1.0

[network.media]
max_file_bytes = 67108864

[generation]                     # the engine's settings (see generation/README.md)
device = {{ name = "auto" }}       # cuda:0 when present
vram = {{ soft_limit_gb = 11.0, hard_limit_gb = 11.5 }}
models = {{ source = "auto", weights_dir = "weights" }}   # `icn-node weights download weights`

[limits]
recipe_queue = 64
"""


def render(
    *, key_file: str, public_key: str, genesis_time: float, seed: str, region: str, config_name: str
) -> str:
    return TEMPLATE.format(
        key_file=key_file,
        public_key=public_key,
        genesis_time=f"{genesis_time:.0f}",
        seed=seed,
        region=region,
        config_name=config_name,
    )
