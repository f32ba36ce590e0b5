"""The simnet report: per slot what happened, and whether the run kept its invariants.

Read from each node's own database after the run (certificates with their
arrival times, slot outcomes with phase timings and media arrival, evidence),
so the report shows what the nodes recorded, not what the harness assumed.

Invariants, checked on every run:
- safety: no two different decisions for one slot, at any honest node;
- one chain: every honest node that is up at the end holds the same certificates
  for the scenario's slots;
- no crash: every honest process exited cleanly, except those the scenario killed.
Scenario expectations (`[expect]`) are checked the same way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from consensus.ledger import Ledger
from node.settings import NodeSettings
from node.storage import Storage
from simnet.harness import RunResult

PHASES = ("generation", "verification", "agreement", "propagation")


@dataclass
class Report:
    scenario: str
    slots: list[dict[str, Any]]
    nodes: list[dict[str, Any]]
    invariants: dict[str, dict[str, Any]]
    events: list[dict]
    wall_sec: float
    files: dict[str, str] = field(default_factory=dict)
    backend: str = "process"  # where the nodes ran: OS processes here, or Ray actors
    support: dict[str, dict[str, float]] = field(default_factory=dict)  # a fork server's memory and CPU

    @property
    def ok(self) -> bool:
        return all(v["ok"] for v in self.invariants.values())

    def to_json(self) -> dict:
        return {
            "scenario": self.scenario,
            "ok": self.ok,
            "wall_sec": self.wall_sec,
            "backend": self.backend,
            "support": self.support,
            "invariants": self.invariants,
            "slots": self.slots,
            "nodes": self.nodes,
            "events": self.events,
        }


def _read_node(files: Any) -> dict[str, Any]:
    settings = NodeSettings.load(files.config)
    db = Path(settings.node.storage_dir) / "node.sqlite"
    if not db.exists():
        return {"certs": {}, "received": {}, "outcomes": {}, "evidence": [], "media": set()}
    storage = Storage(db, settings.chain.genesis().chain_id)
    try:
        certs = {cert.slot: cert for cert in storage.certificates()}
        received = storage.certificate_arrivals()
        outcomes = {slot: (role, outcome, detail) for slot, role, outcome, detail in storage.outcomes()}
        evidence = storage.evidence()
        media = storage.media_ids()
    finally:
        storage.close()
    return {"certs": certs, "received": received, "outcomes": outcomes, "evidence": evidence, "media": media}


def build_report(run: RunResult) -> Report:
    layout, sc = run.layout, run.layout.scenario
    genesis = NodeSettings.load(layout.nodes[0].config).chain.genesis()
    data = [_read_node(files) for files in layout.nodes]
    key_to_index = {files.identity.public_key: files.index for files in layout.nodes}
    honest = sc.honest
    up_at_end = [p.index for p in run.processes if not p.killed_by_scenario]
    live_honest = [i for i in honest if i in up_at_end]

    # the chain, as the honest nodes hold it (for directors and barred signers)
    ledger = Ledger(genesis)
    reference = max(live_honest or honest, key=lambda i: len(data[i]["certs"]))
    for slot in sorted(data[reference]["certs"]):
        ledger.apply(data[reference]["certs"][slot])

    slots = []
    for s in range(sc.slots):
        start = genesis.slot_start(s)
        directors = [key_to_index.get(k, -1) for k in ledger.directors(s)]
        decisions = {i: data[i]["certs"][s].value.hash.hex() for i in honest if s in data[i]["certs"]}
        cert = next((data[i]["certs"][s] for i in honest if s in data[i]["certs"]), None)
        arrivals = [data[i]["received"][s] - start for i in honest if s in data[i]["received"]]
        timings = {}
        for d in directors:
            outcome = data[d]["outcomes"].get(s) if d >= 0 else None
            if outcome:
                timings[d] = {"phases": outcome[2].get("phases", {}), "missed": outcome[2].get("missed", [])}
                if "generation_lead_sec" in outcome[2]:  # > 0: began before the slot started
                    timings[d]["lead_sec"] = outcome[2]["generation_lead_sec"]
                for key in ("generation_error", "reason"):
                    if key in outcome[2]:
                        timings[d][key] = outcome[2][key]
        fetched = {}
        for i in range(sc.nodes):
            outcome = data[i]["outcomes"].get(s)
            if outcome and "media_at" in outcome[2]:
                fetched[i] = outcome[2]["media_at"]
        slots.append(
            {
                "slot": s,
                "directors": directors,
                "committed": cert is not None,
                "certificate_at_sec": round(min(arrivals), 3) if arrivals else None,
                "round": cert.round if cert else None,
                "canonical_output": cert.value.candidate.hex() if cert else None,
                "next_recipe": cert.value.next_recipe.decode() if cert and cert.value.next_recipe else None,
                "evidence_in_certificate": len(cert.value.evidence) if cert else 0,
                "decisions": decisions,
                "director_timings": timings,
                "media_at_sec": fetched,
            }
        )

    evidence = {}
    for i in honest:
        for ev in data[i]["evidence"]:
            evidence.setdefault(
                ev.hash.hex(), {"signer": key_to_index.get(ev.signer, -1), "slot": ev.slot, "held_by": []}
            )
            evidence[ev.hash.hex()]["held_by"].append(i)

    nodes = []
    for p in run.processes:
        nodes.append(
            {
                "index": p.index,
                "peer_id": layout.nodes[p.index].peer_id,
                "behaviour": p.behaviour or "honest",
                "starts": p.starts,
                "killed_by_scenario": p.killed_by_scenario,
                "exit_codes": p.exit_codes,
                "certificates": len(data[p.index]["certs"]),
                "peak_rss_mb": round(p.peak_rss_mb, 1),
                "peak_pss_mb": round(p.peak_pss_mb, 1),
                "cpu_sec": round(p.cpu_sec, 1),
            }
        )

    inv: dict[str, dict[str, Any]] = {}
    conflicts = [s["slot"] for s in slots if len(set(s["decisions"].values())) > 1]
    inv["safety"] = {
        "ok": not conflicts,
        "detail": f"slots with two decisions: {conflicts}" if conflicts else "one decision per slot",
    }
    chains = {i: {s: c.value.hash for s, c in data[i]["certs"].items() if s < sc.slots} for i in live_honest}
    differing = [i for i in live_honest if chains[i] != chains.get(live_honest[0])] if live_honest else []
    inv["one_chain"] = {
        "ok": not differing,
        "detail": f"nodes whose chain differs from node {live_honest[0]}'s: {differing}"
        if differing
        else f"{len(live_honest)} live honest nodes hold the same chain",
    }
    crashed = [
        p.index for p in run.processes if p.index in honest and any(c not in (0, -9) for c in p.exit_codes)
    ]
    crashed += [
        p.index
        for p in run.processes
        if p.index in honest and not p.killed_by_scenario and -9 in p.exit_codes[-1:]
    ]
    inv["no_honest_crash"] = {
        "ok": not crashed,
        "detail": f"honest nodes that crashed: {sorted(set(crashed))}"
        if crashed
        else "every honest process exited cleanly",
    }

    e = sc.expect
    committed = sum(1 for s in slots if s["committed"])
    if e.min_committed_slots:
        inv["expect_committed"] = {
            "ok": committed >= e.min_committed_slots,
            "detail": f"{committed} of {sc.slots} slots committed, at least {e.min_committed_slots} expected",
        }
    if e.evidence_against:
        against = {v["signer"] for v in evidence.values()}
        missing = [i for i in e.evidence_against if i not in against]
        inv["expect_evidence"] = {
            "ok": not missing,
            "detail": f"evidence held against {sorted(against)}; missing {missing}"
            if missing
            else f"evidence held against {sorted(against)}",
        }
    if e.media_everywhere:
        holes = [
            (s["slot"], i)
            for s in slots if s["committed"]
            for i in live_honest if bytes.fromhex(s["canonical_output"]) not in data[i]["media"]
        ]  # fmt: skip
        inv["expect_media_everywhere"] = {
            "ok": not holes,
            "detail": f"(slot, node) without the media: {holes}"
            if holes
            else "every live honest node holds every committed slot's media",
        }
    if e.no_commit_during:
        lo, hi = e.no_commit_during
        bad = [s["slot"] for s in slots if s["committed"] and lo <= s["slot"] < hi]
        inv["expect_no_commit_during"] = {
            "ok": not bad,
            "detail": f"slots committed inside [{lo}, {hi}): {bad}"
            if bad
            else f"no slot committed in [{lo}, {hi})",
        }
    if e.early_generation:
        early = [
            s["slot"]
            for s in slots
            if s["committed"] and any(t.get("lead_sec", 0) > 0 for t in s["director_timings"].values())
        ]
        inv["expect_early_generation"] = {
            "ok": bool(early),
            "detail": f"committed slots made before they started: {early}"
            if early
            else "no committed slot was made before it started",
        }
    wall = round(run.ended_at - run.started_at, 1)
    return Report(sc.name, slots, nodes, inv, run.events, wall, backend=run.backend, support=run.support)


def summary(report: Report) -> str:
    lines = [
        f"simnet {report.scenario}: {'OK' if report.ok else 'FAILED'} ({report.wall_sec:.0f} s wall, {report.backend})",
        "",
    ]
    lines.append(
        f"{'slot':>4}  {'directors':<16} {'cert at':>8} {'round':>5}  {'output':<12} {'media on':>8}  phases of the directors (gen/ver/agr s, ^ made ahead by)"
    )
    for s in report.slots:
        phases = "; ".join(
            f"{d}:"
            + "/".join(f"{t['phases'].get(p, 0):.2f}" for p in PHASES[:3])
            + (f"^{t['lead_sec']:.1f}" if t.get("lead_sec", 0) > 0 else "")
            + ("!" + ",".join(t["missed"]) if t["missed"] else "")
            for d, t in s["director_timings"].items()
        )
        lines.append(
            f"{s['slot']:>4}  {','.join(map(str, s['directors'])):<16} "
            f"{(str(s['certificate_at_sec']) + ' s') if s['committed'] else 'none':>8} {s['round'] if s['round'] is not None else '-':>5}  "
            f"{(s['canonical_output'] or '-')[:12]:<12} {len(s['media_at_sec']):>8}  {phases}"
        )
    lines.append("")
    honest = {n["index"] for n in report.nodes if n["behaviour"] == "honest"}
    for s in report.slots:  # why a slot failed, as its first honest director saw it
        reasons = s["director_timings"].items()
        why = next((t["reason"] for d, t in reasons if d in honest and "reason" in t), None)
        if not s["committed"] and why:
            lines.append(f"slot {s['slot']} failed: {why}")
    lines.append("")
    for n in report.nodes:
        lines.append(
            f"node {n['index']:>2} {n['behaviour']:<18} starts {n['starts']} exits {n['exit_codes']} certs {n['certificates']:>3} "
            f"peak RSS {n['peak_rss_mb']:.0f} MB (PSS {n['peak_pss_mb']:.0f}) CPU {n['cpu_sec']:.0f} s"
        )
    for name, u in report.support.items():
        lines.append(
            f"{name.replace('_', ' ')}: peak RSS {u['peak_rss_mb']:.0f} MB (PSS {u['peak_pss_mb']:.0f}) "
            f"CPU {u['cpu_sec']:.0f} s, shared by the nodes forked from it"
        )
    lines.append("")
    for name, v in report.invariants.items():
        lines.append(f"{'ok ' if v['ok'] else 'FAIL'} {name}: {v['detail']}")
    return "\n".join(lines)


def plot(report: Report, path: Path) -> Path:
    """Per slot, each director's phase durations as stacked bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {
        "generation": "#4c72b0",
        "verification": "#55a868",
        "agreement": "#c44e52",
        "propagation": "#8172b2",
    }
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(report.slots)), 4))
    labels, x = [], 0
    for s in report.slots:
        for d, t in s["director_timings"].items():
            bottom = 0.0
            for phase in PHASES:
                v = t["phases"].get(phase, 0.0)
                ax.bar(x, v, bottom=bottom, color=colours[phase], label=phase if x == 0 else None)
                bottom += v
            labels.append(f"s{s['slot']}\nn{d}")
            x += 1
        x += 1
        labels.append("")
    ax.set_xticks(range(len(labels)), labels, fontsize=6)
    ax.set_ylabel("seconds")
    ax.set_title(f"simnet {report.scenario}: phase timings per slot and director")
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(report: Report, out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": out_dir / "report.json",
        "summary": out_dir / "report.txt",
        "plot": out_dir / "phases.png",
    }
    paths["json"].write_text(json.dumps(report.to_json(), indent=1, default=str) + "\n")
    paths["summary"].write_text(summary(report) + "\n")
    plot(report, paths["plot"])
    return paths
