"""`icn-node simnet [SCENARIO]` / `python -m simnet`: run a scenario and print its report."""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
from pathlib import Path

from simnet.scenario import Scenario, ScenarioError, bundled


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "scenario",
        nargs="?",
        default="smoke",
        help=f"a bundled scenario ({', '.join(bundled())}) or a TOML file",
    )
    parser.add_argument(
        "--out", help="folder for node files, logs and the report (default: a new temporary folder)"
    )
    parser.add_argument("--cache-dir", help="where the tiny model weights are built once and shared")
    parser.add_argument(
        "--no-fork-server",
        action="store_true",
        help="start each node process from nothing instead of forking it from one that built the engine",
    )
    parser.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="run each node as a Ray actor: on a new Ray instance on this machine, or on the cluster "
        "at ADDRESS ('auto': the one this machine joined with `ray start`); needs the [cluster] extra",
    )
    parser.add_argument(
        "--ray-cpus-per-node",
        type=float,
        default=0.0,
        help="CPUs Ray reserves for each node actor (default 0: nodes are spread over the machines "
        "without reserving, as the process backend packs them onto this one)",
    )


def run(args: argparse.Namespace) -> int:
    from simnet.harness import DEFAULT_CACHE, Backend, Harness
    from simnet.processes import Processes
    from simnet.report import build_report, summary, write

    try:
        scenario = Scenario.load(args.scenario)
    except ScenarioError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix=f"simnet-{scenario.name}-"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    print(
        f"simnet {scenario.name}: {scenario.nodes} nodes, {scenario.slots} slots of {scenario.slot_sec:g} s; files in {out}"
    )
    cache = Path(args.cache_dir) if args.cache_dir else None
    backend: Backend = Processes(cache or DEFAULT_CACHE, fork_server=not args.no_fork_server)
    if args.ray is not None:
        try:
            from simnet.ray_nodes import RayNodes
        except ImportError as exc:
            print(f'error: --ray needs Ray: pip install -e ".[cluster]" ({exc})', file=sys.stderr)
            return 2
        backend = RayNodes(args.ray or None, cache_dir=args.cache_dir, cpus_per_node=args.ray_cpus_per_node)
    harness = Harness(scenario, out, cache_dir=cache, backend=backend)
    try:
        result = harness.run()
    except KeyboardInterrupt:
        print("interrupted: every node process was stopped", file=sys.stderr)
        return 130
    report = build_report(result)
    paths = write(report, out)
    print(summary(report))
    print(f"\nreport: {paths['json']}  table: {paths['summary']}  plot: {paths['plot']}")
    return 0 if report.ok else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """The `icn-node simnet` subcommand, found through the `icn_node.commands` entry point: the node
    package never imports the simnet (pyproject.toml names this function)."""
    parser = subparsers.add_parser(
        "simnet", help="run many real nodes on this machine through a scenario, and report"
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simnet", description=__doc__)
    add_arguments(parser)
    return run(parser.parse_args(argv))
