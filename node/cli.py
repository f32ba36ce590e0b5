"""`icn-node`: the operator's command line.

Each subcommand imports what it needs when it runs, so `icn-node --help` is
instant and a command never pays for the engine unless it uses it. Exit codes:
0 done, 1 the work failed (e.g. a slot could not be generated), 2 bad input
(arguments, config, recipe, weights directory).
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2
COMMANDS_GROUP = "icn_node.commands"  # entry points: a function taking the subparsers to add to


def _read_recipe(path: str) -> bytes | None:
    """The recipe file's bytes, validated (RecipeError names the field); None (and a message) if unreadable."""
    from generation.recipe import Recipe

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        print(f"error: cannot read recipe {path}: {exc}", file=sys.stderr)
        return None
    Recipe.parse(data)
    return data


def _cmd_generate(args: argparse.Namespace) -> int:
    import anyio

    from generation.config import GenerationSettings
    from generation.errors import ConfigError
    from generation.media import write_slot_media
    from generation.outputs import write_result
    from generation.pipeline import VortexPipeline
    from generation.recipe import SLOT_AUDIO_SEC

    text = _read_recipe(args.recipe)  # fail before the models load
    if text is None:
        return EXIT_BAD_INPUT
    try:
        seconds = SLOT_AUDIO_SEC if args.seconds is None else args.seconds
        settings = GenerationSettings.load(args.config).with_media_seconds(seconds)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(
        f"loading models ({settings.resolved_source()} on {settings.resolved_device()}) ...", file=sys.stderr
    )
    pipeline = VortexPipeline(settings=settings)
    sources = ", ".join(f"{k}: {v}" for k, v in pipeline.sources.items())
    print(f"models ready in {pipeline.cold_start_sec:.1f} s; {sources}", file=sys.stderr)
    print(f"generating slot {args.slot_id} ...", file=sys.stderr)
    result = anyio.run(pipeline.generate_slot, text, args.slot_id)
    media = None
    if result.success:
        b = pipeline.settings.buffers
        media = write_slot_media(
            result.video_frames,
            result.audio_waveform,
            args.out,
            fps=b.video.fps,
            sample_rate=b.audio.sample_rate,
        )
    path = write_result(result, args.out, media, pipeline.sources)
    if not result.success:
        print(f"slot failed: {result.error_msg}", file=sys.stderr)
        return EXIT_FAILED
    stages = ", ".join(f"{k} {v:.0f} ms" for k, v in result.stage_times_ms.items())
    print(
        f"slot {result.slot_id} done in {result.generation_time_ms:.0f} ms ({stages}); wrote {path}",
        file=sys.stderr,
    )
    return EXIT_OK


def _cmd_weights_download(args: argparse.Namespace) -> int:
    from generation.weights.download import download_weights

    done = download_weights(args.dest, args.models or None, cache_dir=args.cache_dir, token=args.token)
    for name, path in done.items():
        print(f"{name}: {path}")
    return EXIT_OK


def _cmd_weights_check(args: argparse.Namespace) -> int:
    from generation.weights.layout import LAYOUTS, check_weights_dir

    root = Path(args.dir)
    for name in args.models or list(LAYOUTS):
        if name not in LAYOUTS:
            print(f"error: unknown model {name!r}; known: {', '.join(LAYOUTS)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        check_weights_dir(LAYOUTS[name], root / name)
        print(f"{name}: ok ({root / name})")
    return EXIT_OK


def _cmd_keygen(args: argparse.Namespace) -> int:
    from network.identity import write_key_file

    identity = write_key_file(args.out, overwrite=args.force)
    print(f"key: {args.out} (mode 0600)")
    print(f"peer id: {identity.peer_id}")
    print(f"validator public key: {identity.public_key.hex()}")
    return EXIT_OK


def _cmd_init(args: argparse.Namespace) -> int:
    import secrets
    import time

    from generation.config import GenerationSettings
    from network.identity import load_key_file, write_key_file
    from node.settings import (
        AgreementSection,
        ChainSection,
        HttpSection,
        NodeSection,
        NodeSettings,
        SlotSection,
        ValidatorEntry,
    )
    from node.template import render

    out, key = Path(args.out), Path(args.key)
    if out.exists() and not args.force:
        print(f"error: {out} exists; pass --force to replace it", file=sys.stderr)
        return EXIT_BAD_INPUT
    key_path = key if key.is_absolute() else out.parent / key
    identity = load_key_file(key_path) if key_path.exists() else write_key_file(key_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    token_path = out.parent / "api.token"
    if not token_path.exists():  # the bearer token for POST /recipes off loopback, owner-only
        fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    notes: dict[str, str] = {}
    generation, agreement = GenerationSettings(), AgreementSection()
    if generation.resolved_device() == "cpu":
        # what runs here: the tiny engine (NF4 needs CUDA), whose random CLIP cannot pass a self-check
        generation = GenerationSettings.packaged("tiny")
        agreement = AgreementSection(require_self_check=False)
        notes["generation"] = (
            "This machine has no CUDA device, so `icn-node init` chose the tiny CPU engine: the same "
            "architectures at toy sizes with seeded weights (generation/configs/tiny.yaml). On a GPU, "
            "delete this [generation] table for the full models (generation/configs/default.yaml)."
        )
        notes["agreement"] = (
            "require_self_check is off because the tiny CLIP has random weights; turn it on with real ones."
        )
    plan = SlotSection.scaled(args.slot_sec)
    settings = NodeSettings(
        node=NodeSection(key_file=str(key)),
        http=HttpSection(token_file="api.token"),
        chain=ChainSection(
            genesis_time=float(round(time.time() + args.start_in)),
            seed=args.seed,
            slot_sec=args.slot_sec,
            validators=(
                ValidatorEntry(public_key=identity.public_key.hex(), region=args.region, reputation=1.0),
            ),
        ),
        slot=plan,
        agreement=agreement,
        generation=generation,
    )
    out.write_text(render(settings, config_name=out.name, notes=notes))
    print(
        f"wrote {out} (a one-validator chain starting in {args.start_in:g} s; edit [chain] to join a network)"
    )
    if notes:
        print("  no CUDA device here: the tiny CPU engine, said so in the file")
    print(f"key {key_path}: peer id {identity.peer_id}")
    print(f"token {token_path} (mode 0600): the bearer token for POST /recipes on a face off loopback")
    return EXIT_OK


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


def _cmd_testnet(args: argparse.Namespace) -> int:
    from node.testnet import TestnetError, TestnetPlan, write_testnet

    plan = TestnetPlan(
        validators=args.validators,
        observers=args.observers,
        hosts=_comma_list(args.hosts),
        regions=_comma_list(args.regions),
        seed=args.seed,
        chain_seed=args.chain_seed,
        genesis_time=args.genesis_time,
        start_in=args.start_in,
        slot_sec=args.slot_sec,
        engine=args.engine,
        p2p_port=args.p2p_port,
        http_port=args.http_port,
        public_port=args.public_port,
    )
    out = Path(args.out)
    try:
        nodes = write_testnet(plan, out, force=args.force)
    except TestnetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    validators = sum(n.validator for n in nodes)
    print(f"wrote {len(nodes)} nodes ({validators} validators, {len(nodes) - validators} observers) to {out}")
    print(f"start each with `icn-node run --config {out}/nodeK/node.toml`; {out}/README.md lists them")
    return EXIT_OK


def _cmd_config_check(args: argparse.Namespace) -> int:
    from network.identity import load_key_file
    from node.preflight import problems
    from node.settings import NodeSettings

    settings = NodeSettings.load(args.file)
    found = problems(settings)
    if found:
        print(f"{args.file}: `icn-node run` would refuse to start:", file=sys.stderr)
        for problem in found:
            print(f"  {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    identity = load_key_file(settings.node.key_file)
    genesis = settings.chain.genesis()
    me = identity.public_key
    role = "a validator" if genesis.validator(me) else "an observer (its key is not in [chain].validators)"
    s = settings.slot
    print(f"{args.file}: ok")
    print(
        f"  chain id {genesis.chain_id.hex()} ({len(genesis.validators)} validators, {genesis.directors_per_slot} directors a slot)"
    )
    print(f"  this node: {identity.peer_id}, {role}")
    print(
        f"  slot {genesis.slot_sec:g} s: generation until {s.generation_end:g} s, verification {s.verification_end:g} s, "
        f"agreement {s.agreement_end:g} s, then propagation"
    )
    print(
        f"  engine: device {settings.generation.resolved_device()}, models {settings.generation.resolved_source()}"
    )
    print(f"  listen {', '.join(settings.network.listen)}; operator http {settings.node.http_addr}")
    print(f"  watch the channel at http://{settings.http.public_addr}/")
    return EXIT_OK


def _cmd_run(args: argparse.Namespace) -> int:
    import trio

    from network.identity import load_key_file
    from node import logs
    from node.engine import build_engine, freeze_resident_heap
    from node.preflight import problems
    from node.runner import run_until_signal
    from node.settings import NodeSettings

    settings = NodeSettings.load(args.config)
    found = problems(settings)  # everything `config check` checks, before the models load
    if found:
        for problem in found:
            print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    identity = load_key_file(settings.node.key_file)
    logs.configure(settings.node.log_format, "DEBUG" if args.verbose else settings.node.log_level)
    print(f"loading models for {args.config} ...", file=sys.stderr)
    try:
        engine = build_engine(settings.generation)
    except KeyboardInterrupt:
        print("interrupted while loading models", file=sys.stderr)
        return 130
    freeze_resident_heap()
    print(
        f"models resident in {engine.cold_start_sec:.1f} s; starting the node (Ctrl-C stops it)",
        file=sys.stderr,
    )
    try:
        trio.run(functools.partial(run_until_signal, settings, engine=engine, identity=identity))
    except Exception as exc:  # a task crashed, or e.g. a listen or HTTP address already in use: fail loudly
        leaf = exc
        while isinstance(leaf, ExceptionGroup):
            leaf = leaf.exceptions[0]
        logging.getLogger(__name__).error("the node stopped: %s", leaf, exc_info=exc)
        print(f"error: the node stopped: {leaf}", file=sys.stderr)
        logging.shutdown()
        return EXIT_FAILED
    # Everything is closed and durable (the database in Node.run's `finally`). Skip the
    # interpreter's own teardown of torch and the CUDA libraries, which can take seconds:
    # the operator's Ctrl-C should end the process, not start a long exit.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_OK)


def _http_call(url: str, method: str = "GET", body: bytes | None = None) -> tuple[int, dict[str, Any]]:
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        url, data=body, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")


def _cmd_submit(args: argparse.Namespace) -> int:
    text = _read_recipe(args.recipe)  # a clear error here rather than from the node
    if text is None:
        return EXIT_BAD_INPUT
    try:
        status, reply = _http_call(f"{args.node.rstrip('/')}/recipes", "POST", text)
    except OSError as exc:
        print(f"error: no node answering at {args.node}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if status != 202:
        print(f"error: node refused the recipe: {reply.get('error', status)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"queued {reply['queued']} ({reply['pending']} pending at that node)")
    return EXIT_OK


def _cmd_status(args: argparse.Namespace) -> int:
    import json

    try:
        status, info = _http_call(f"{args.node.rstrip('/')}/status")
    except OSError as exc:
        print(f"error: no node answering at {args.node}: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(info, indent=1))
        return EXIT_OK
    last = info.get("last_certificate")
    print(
        f"slot {info['slot']}  role {info['role']}  peers {info['peers']}  pending recipes {info['pending_recipes']}"
    )
    print(f"peer id {info['peer_id']}  chain {info['chain_id'][:16]}...")
    if last:
        print(f"last certificate: slot {last['slot']} round {last['round']} media {last['media'][:16]}...")
    else:
        print("last certificate: none yet")
    for slot, rec in info.get("recent_slots", {}).items():
        print(
            f"  slot {slot}: {rec['role']} {rec['outcome']}"
            + (f" (missed {', '.join(rec['missed'])})" if rec["missed"] else "")
        )
    return EXIT_OK


def _cmd_plugins_list(args: argparse.Namespace) -> int:
    from generation.config import GenerationSettings
    from generation.plugins import PluginHost

    settings = GenerationSettings.load(args.config)
    if not settings.plugins.enabled:
        print("plugins are disabled (plugins.enabled is false)")
        return EXIT_OK
    host = PluginHost.from_config(settings=settings)
    for name in host.registry.list_plugins():
        plugin = host.registry.get(name)
        m = plugin.manifest
        where = "in-process" if plugin.trusted else "isolated"
        replaces = f", replaces {m.replaces}" if m.replaces else ""
        print(f"{name} {m.version}: {', '.join(m.supported_lanes)}{replaces}, {m.max_latency_ms} ms, {where}")
    for name, reason in sorted(host.registry.refused.items()):
        print(f"refused {name}: {reason}")
    for reason in host.registry.errors.values():
        print(f"error: {reason}")
    return EXIT_OK


def _cmd_plugins_check(args: argparse.Namespace) -> int:
    from generation.config import GenerationSettings
    from generation.plugins import PluginRegistry

    policy = GenerationSettings.load(args.config).plugins if args.config else None
    if policy is None:  # check the manifests alone: a policy that refuses nothing
        from generation.config import PluginSettings

        policy = PluginSettings(enabled=True, allow_untrusted=True, max_vram_gb=80)
    registry = PluginRegistry.discover(args.dir, policy)
    for name in registry.list_plugins():
        print(f"ok {name}")
    for name, reason in sorted(registry.refused.items()):
        print(f"refused {name}: {reason}")
    for reason in registry.errors.values():
        print(f"error: {reason}")
    return EXIT_OK if not (registry.errors or registry.refused) else EXIT_BAD_INPUT


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="icn-node", description="A peer of the Interdimensional Cable Network."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate one slot from a recipe file with the Vortex engine")
    gen.add_argument("--recipe", required=True, help="recipe JSON file")
    gen.add_argument(
        "--out",
        required=True,
        help="output directory (slot.mp4, speech.wav, actor.png, frames/, result.json)",
    )
    gen.add_argument("--config", help="engine config (.yaml, or .toml with a [generation] table)")
    gen.add_argument(
        "--slot-id", type=int, default=0, help="slot number (seeds the noise when the recipe has none)"
    )
    gen.add_argument(
        "--seconds",
        type=float,
        help="media length: speech up to this long, video at the engine's fps (default: a whole slot, "
        "45 s, also with the tiny engine, whose slots in a node are 2 s)",
    )
    gen.set_defaults(func=_cmd_generate)

    weights = sub.add_parser("weights", help="model weights on disk").add_subparsers(
        dest="weights_cmd", required=True
    )
    dl = weights.add_parser(
        "download", help="download real weights from the Hugging Face hub (needs internet)"
    )
    dl.add_argument("--dest", required=True, help="weights directory (models.weights_dir)")
    dl.add_argument("--models", nargs="*", help="subset of models (default: all)")
    dl.add_argument("--cache-dir", help="Hugging Face cache directory (default: HF_HOME's)")
    dl.add_argument("--token", help="hub token (Flux-Schnell is gated; HF_TOKEN also works)")
    dl.set_defaults(func=_cmd_weights_download)
    chk = weights.add_parser("check", help="check that a weights directory holds every expected file")
    chk.add_argument("dir", help="weights directory")
    chk.add_argument("--models", nargs="*", help="subset of models (default: all)")
    chk.set_defaults(func=_cmd_weights_check)

    run = sub.add_parser("run", help="run the node: join the network and play every slot")
    run.add_argument("--config", required=True, help="the operator's TOML file")
    run.set_defaults(func=_cmd_run)

    init = sub.add_parser("init", help="write a commented example config (and a key, if none)")
    init.add_argument("--out", default="node.toml")
    init.add_argument("--key", default="node.key", help="key file, relative to the config's folder")
    init.add_argument("--seed", default="icn-devnet")
    init.add_argument("--region", default="local")
    init.add_argument("--force", action="store_true")
    init.add_argument("--slot-sec", type=float, default=45.0, help="slot length (the phases scale with it)")
    init.add_argument("--start-in", type=float, default=60.0, help="seconds from now to slot 0")
    init.set_defaults(func=_cmd_init)

    net = sub.add_parser("testnet", help="write the folders of a whole network: keys, configs, one genesis")
    net.add_argument("--validators", type=int, required=True)
    net.add_argument(
        "--observers", type=int, default=0, help="nodes that follow the chain and direct nothing"
    )
    net.add_argument(
        "--hosts", default="127.0.0.1", help="comma-separated IP addresses; node k on host k mod H"
    )
    net.add_argument(
        "--regions", default="", help="comma-separated, round-robin over validators (default: host)"
    )
    net.add_argument("--out", required=True, help="folder to write (refused if not empty, unless --force)")
    net.add_argument(
        "--seed", default=None, help="derive keys and tokens from it: reproducible, test networks only"
    )
    net.add_argument("--chain-seed", default="icn-testnet", help="the network's election seed")
    net.add_argument(
        "--genesis-time", type=float, default=None, help="Unix time of slot 0 (default: now + start-in)"
    )
    net.add_argument("--start-in", type=float, default=300.0, help="seconds from now to slot 0")
    net.add_argument("--slot-sec", type=float, default=45.0, help="slot length (the phases scale with it)")
    net.add_argument("--engine", choices=("default", "tiny"), default="default", help="tiny: CPU, toy sizes")
    net.add_argument(
        "--p2p-port", type=int, default=4001, help="libp2p port of a host's first node (+j for the jth)"
    )
    net.add_argument("--http-port", type=int, default=9464, help="operator HTTP port of a host's first node")
    net.add_argument("--public-port", type=int, default=8080, help="public HTTP port of a host's first node")
    net.add_argument("--force", action="store_true", help="replace a testnet folder written before")
    net.set_defaults(func=_cmd_testnet)

    config = sub.add_parser("config", help="operator config").add_subparsers(dest="config_cmd", required=True)
    check = config.add_parser("check", help="validate a config file (and its key) without starting anything")
    check.add_argument("file")
    check.set_defaults(func=_cmd_config_check)

    submit = sub.add_parser("submit", help="send a recipe to the network through a local node")
    submit.add_argument("recipe", help="recipe JSON file")
    submit.add_argument("--node", default="http://127.0.0.1:9464", help="the node's http_addr")
    submit.set_defaults(func=_cmd_submit)

    status = sub.add_parser("status", help="a running node's slot, role, peers and last certificate")
    status.add_argument("--node", default="http://127.0.0.1:9464")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_cmd_status)

    # Subcommands of other installed packages (the simnet's `icn-node simnet`) register themselves
    # through this entry point group, so this package imports none of them.
    for entry in entry_points(group=COMMANDS_GROUP):
        entry.load()(sub)

    keygen = sub.add_parser("keygen", help="create the node's Ed25519 key (peer identity and validator key)")
    keygen.add_argument("--out", default="node.key", help="key file to write (default: node.key), mode 0600")
    keygen.add_argument("--force", action="store_true", help="replace an existing key file")
    keygen.set_defaults(func=_cmd_keygen)

    plugins = sub.add_parser("plugins", help="renderer plugins").add_subparsers(
        dest="plugins_cmd", required=True
    )
    pl = plugins.add_parser("list", help="the plugins the config's policy loads, and those it refuses")
    pl.add_argument("--config", help="engine config (.yaml, or .toml with a [generation] table)")
    pl.set_defaults(func=_cmd_plugins_list)
    pc = plugins.add_parser("check", help="check every plugin manifest in a directory")
    pc.add_argument("dir", help="plugin directory (one subfolder per plugin)")
    pc.add_argument("--config", help="also apply this config's plugin policy")
    pc.set_defaults(func=_cmd_plugins_check)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from generation.errors import VortexError
    from network.identity import IdentityError
    from node import logs
    from node.engine import EngineStartError
    from node.settings import NodeConfigError

    args = build_parser().parse_args(argv)
    # one handler on the root logger, which `run` reconfigures from the operator's settings (a second
    # handler, as logging.basicConfig's beside it, printed every line twice)
    logs.configure("text", "DEBUG" if args.verbose else "WARNING")
    try:
        code: int = args.func(args)
        return code
    except VortexError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT if isinstance(exc, ValueError | FileNotFoundError) else EXIT_FAILED
    except (IdentityError, NodeConfigError, EngineStartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
