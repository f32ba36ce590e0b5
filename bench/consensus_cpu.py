"""Benchmark: CPU cost of one slot's agreement among 5 directors.

Runs the real pieces (MessageChecker: decode, window, membership, ed25519
verification; SlotAgreement: the state machine) for 5 directors over an
in-order, lossless network in one process, and reports per slot: CPU time for
all 5 machines together, messages broadcast, messages delivered (each broadcast
reaches the 4 others), and deliveries processed per CPU second. Two cases: all
correct (decided in round 0), and a silent director leading round 0 (decided in
round 1, after the propose timeout).

    python bench/consensus_cpu.py [--slots 200] [--json bench/results/consensus_cpu.json]
"""

from __future__ import annotations

import platform
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import parse_args, write_json  # noqa: E402

from consensus.actions import Broadcast, ScheduleTimeout, Step  # noqa: E402
from consensus.agreement import LocalOutput, SlotAgreement  # noqa: E402
from consensus.checks import MessageChecker  # noqa: E402
from consensus.crypto import Signer  # noqa: E402
from consensus.messages import embedding_to_bytes, sha256  # noqa: E402

CHAIN = b"bench-chain"
KEYS = [Signer.from_seed(sha256(b"bench-%d" % i)) for i in range(5)]
DIRECTORS = [k.public_key for k in KEYS]
# full-size embeddings: CLIP ViT-B-32 (512) and ViT-L-14 (768)
EMB_B = embedding_to_bytes([((i * 37) % 101) / 101.0 for i in range(512)])
EMB_L = embedding_to_bytes([((i * 53) % 107) / 107.0 for i in range(768)])


def one_slot(slot: int, silent: int | None) -> tuple[int, int, int]:
    """Run a slot to decision; return (broadcasts, deliveries, rounds)."""
    recipe = sha256(b"recipe-%d" % slot)
    machines = [SlotAgreement(slot, DIRECTORS, CHAIN, recipe, signer=KEYS[i]) for i in range(5)]
    checkers = [MessageChecker(CHAIN, lambda s: DIRECTORS) for _ in range(5)]
    queue: list[tuple[int, object]] = []
    timers: list[tuple[int, ScheduleTimeout]] = []
    broadcasts = deliveries = 0

    def take(i: int, actions: list) -> None:
        for a in actions:
            if i == silent:
                continue
            if isinstance(a, Broadcast):
                queue.append((i, a.message.encode()))
            elif isinstance(a, ScheduleTimeout):
                timers.append((i, a))

    media = sha256(b"media-%d" % slot)
    for i in range(5):
        take(i, machines[i].set_local_output(LocalOutput(recipe, EMB_B, EMB_L, True, media)))
    for i in range(5):
        take(i, machines[i].start())
    while not all(m.decision for i, m in enumerate(machines) if i != silent):
        if queue:
            src, data = queue.pop(0)
            broadcasts += 1
            for j in range(5):
                if j != src:
                    msg = checkers[j].check(data, slot)
                    if msg is not None:
                        deliveries += 1
                        take(j, machines[j].receive(msg))
        elif timers:  # the network is quiet: the earliest timeout fires (propose first)
            timers.sort(key=lambda t: (t[1].round, list(Step).index(t[1].step), t[1].delay))
            i, t = timers.pop(0)
            take(i, machines[i].on_timeout(t.round, t.step))
        else:
            raise RuntimeError(f"slot {slot}: stuck without a decision")
    rounds = max(m.decision.round for m in machines if m.decision) + 1
    return broadcasts, deliveries, rounds


def run(slots: int) -> dict:
    cases = {}
    for name, silent in (("all correct", None), ("silent round-0 proposer", 0)):
        one_slot(0, silent)  # warm-up
        cpu0 = time.process_time()
        totals = [0, 0, 0]
        for slot in range(1, slots + 1):
            for k, v in enumerate(one_slot(slot, silent)):
                totals[k] += v
        cpu = time.process_time() - cpu0
        cases[name] = {
            "cpu_ms_per_slot": 1000 * cpu / slots,
            "broadcasts_per_slot": totals[0] / slots,
            "deliveries_per_slot": totals[1] / slots,
            "rounds_per_slot": totals[2] / slots,
            "deliveries_per_cpu_sec": totals[1] / cpu,
        }
    return {
        "benchmark": "consensus_cpu",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version()},
        "slots": slots,
        "directors": 5,
        "embedding_dims": [512, 768],
        "cases": cases,
    }


def main() -> None:
    args = parse_args(__doc__, slots=200, json_path="bench/results/consensus_cpu.json")
    result = run(args.slots)
    print(f"consensus_cpu: 5 directors, {args.slots} slots per case, {result['machine']['platform']}")
    print(
        f"{'case':<26} {'CPU ms/slot':>12} {'broadcasts':>11} {'deliveries':>11} {'rounds':>7} {'deliv/CPU s':>12}"
    )
    for name, c in result["cases"].items():
        print(
            f"{name:<26} {c['cpu_ms_per_slot']:>12.2f} {c['broadcasts_per_slot']:>11.1f} "
            f"{c['deliveries_per_slot']:>11.1f} {c['rounds_per_slot']:>7.2f} {c['deliveries_per_cpu_sec']:>12.0f}"
        )
    write_json(result, args.json)


if __name__ == "__main__":
    main()
