"""Scenario files, the layout they produce, the report's invariants, and two whole runs."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from consensus.certificate import Certificate
from consensus.messages import Precommit, Value, sha256
from node.settings import NodeSettings
from node.storage import Storage
from simnet.harness import NodeProcess, RunResult
from simnet.layout import build
from simnet.report import build_report, summary
from simnet.scenario import Scenario, ScenarioError, bundled

ROOT = Path(__file__).resolve().parents[2]


def test_every_bundled_scenario_loads() -> None:
    assert set(bundled()) >= {
        "smoke",
        "crash-director",
        "byzantine-equivocation",
        "partition-heal",
        "scale-20",
    }
    for name in bundled():
        assert Scenario.load(name).name == name


@pytest.mark.parametrize(
    "toml, needle",
    [
        ("name = 'x'\n", "nodes: Field required"),
        (
            "name = 'x'\nnodes = 3\nslots = 2\n[byzantine]\n5 = 'equivocate'\n",
            "byzantine: node 5 does not exist",
        ),
        ("name = 'x'\nnodes = 3\nslots = 2\n[byzantine]\n1 = 'lie'\n", "byzantine.1"),
        (
            "name = 'x'\nnodes = 3\nslots = 2\n[[faults]]\nat_slot = 1\naction = 'explode'\nnodes = [0]\n",
            "faults.0.action",
        ),
        (
            "name = 'x'\nnodes = 3\nslots = 2\n[[faults]]\nat_slot = 1\naction = 'crash'\nnodes = [7]\n",
            "faults[0]: node 7",
        ),
        ("name = 'x'\nnodes = 3\nslots = 2\nslot_sec = 0.5\n", "slot_sec"),
        ("nodes = [", "not valid TOML"),
    ],
)
def test_malformed_scenarios_name_their_key(tmp_path: Path, toml: str, needle: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(toml)
    with pytest.raises(ScenarioError) as err:
        Scenario.load(path)
    assert needle in str(err.value)
    with pytest.raises(ScenarioError, match="no scenario named"):
        Scenario.load("no-such-scenario")


def test_the_layout_writes_configs_the_node_accepts(tmp_path: Path) -> None:
    sc = Scenario.load("scale-20")
    layout = build(sc, tmp_path, time.time() + 60, tmp_path / "cache")
    settings = [NodeSettings.load(files.config) for files in layout.nodes]
    assert len({s.chain.genesis().chain_id for s in settings}) == 1  # one network
    assert len({s.network.listen for s in settings}) == 20  # own port each
    assert all(len(s.network.bootstrap) == 3 for s in settings)
    assert settings[0].slot.agreement_end < sc.slot_sec and not settings[0].agreement.require_self_check
    assert settings[0].generation.speech.source == "none"


def _fake_run(tmp_path: Path, decisions: dict[int, bytes], exit_codes: dict[int, list[int]]) -> RunResult:
    """A 4-node layout whose databases hold the given slot-0 decisions (signed by all four)."""
    sc = Scenario.model_validate({"name": "fake", "nodes": 4, "slots": 1, "directors_per_slot": 4})
    layout = build(sc, tmp_path, 1_000_000.0, tmp_path / "cache")
    chain = NodeSettings.load(layout.nodes[0].config).chain.genesis().chain_id
    for i, candidate in decisions.items():
        value = Value(sha256(candidate))
        sigs = tuple(
            sorted(
                (
                    f.identity.public_key,
                    Precommit(0, 0, value.hash).signed_by(f.identity.signer, chain).signature,
                )
                for f in layout.nodes
            )
        )
        storage = Storage(layout.nodes[i].storage / "node.sqlite", chain)
        storage.put_certificate(Certificate(0, 0, value, sigs), 1_000_003.0)
        storage.close()
    procs = [NodeProcess(i, None, starts=1, exit_codes=exit_codes.get(i, [0])) for i in range(4)]
    return RunResult(layout, procs, 0.0, 1.0, [])


def test_the_report_passes_a_clean_run_and_fails_each_broken_invariant(tmp_path: Path) -> None:
    good = build_report(_fake_run(tmp_path / "good", {i: b"a" for i in range(4)}, {}))
    assert good.ok and good.slots[0]["committed"] and good.slots[0]["certificate_at_sec"] == 3.0
    split = build_report(_fake_run(tmp_path / "split", {0: b"a", 1: b"a", 2: b"b", 3: b"b"}, {}))
    assert not split.invariants["safety"]["ok"] and not split.ok
    behind = build_report(_fake_run(tmp_path / "behind", {0: b"a", 1: b"a", 2: b"a"}, {}))
    assert behind.invariants["safety"]["ok"] and not behind.invariants["one_chain"]["ok"]
    crashed = build_report(_fake_run(tmp_path / "crash", {i: b"a" for i in range(4)}, {2: [1]}))
    assert not crashed.invariants["no_honest_crash"]["ok"]


def test_the_report_says_why_a_slot_failed_as_an_honest_director_saw_it(tmp_path: Path) -> None:
    run = _fake_run(tmp_path, {}, {})
    chain = NodeSettings.load(run.layout.nodes[0].config).chain.genesis().chain_id
    why = "no certificate by the end of the agreement phase (round 1 precommit; ...)"
    for i in range(4):
        storage = Storage(run.layout.nodes[i].storage / "node.sqlite", chain)
        storage.put_outcome(0, "director", "failed", {"phases": {"agreement": 2.3}, "reason": why})
        storage.close()
    report = build_report(run)
    assert not report.slots[0]["committed"]
    assert {t["reason"] for t in report.slots[0]["director_timings"].values()} == {why}
    assert f"slot 0 failed: {why}" in summary(report).splitlines()


@pytest.mark.slow
@pytest.mark.parametrize("scenario", ["smoke", "byzantine-equivocation", "hostile"])
def test_bundled_scenario_runs_with_every_invariant_kept(
    tmp_path: Path, scenario: str, tiny_cache: Path
) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "simnet", scenario, "--out", str(tmp_path), "--cache-dir", str(tiny_cache)],
        capture_output=True, text=True, timeout=900, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-3000:]
    assert f"simnet {scenario}: OK" in proc.stdout
    assert (tmp_path / "report.json").exists() and (tmp_path / "phases.png").stat().st_size > 1000


def test_free_ports_are_distinct_bindable_and_outside_the_ephemeral_range() -> None:
    """A port from the ephemeral range can be taken as an outbound connection's source port before
    the node binds it: a node of a 35-node simnet crashed with "Address already in use"."""
    import socket

    from simnet.layout import ephemeral_range, free_ports

    low, high = ephemeral_range()
    ports = free_ports(60)
    assert len(set(ports)) == 60
    assert not any(low <= p <= high for p in ports)
    socks = [socket.socket() for _ in ports]
    try:
        for sock, port in zip(socks, ports, strict=True):
            sock.bind(("127.0.0.1", port))
    finally:
        for sock in socks:
            sock.close()
