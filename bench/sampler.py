"""A sampling profiler in the process itself, for benchmarks that run for hours.

py-spy cannot attach on this workplace's machines (it fails to read the target's
memory), and cProfile doubles the cost of the trio thread, which moves slot
deadlines. This samples every thread's stack with `sys._current_frames()` a
fixed number of times a second from a daemon thread (about 1 % of a core at
100 Hz) and writes the counts in the collapsed-stack format flame graph tools
read: `frame;frame;...;leaf count` per line, outermost first.

Samples land when the sampler gets the GIL, so a thread holding it for long
stretches in C code is under-counted; comparing two windows of the same
process, the bias is the same in both.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
import threading
from pathlib import Path
from types import FrameType

MAX_DEPTH = 64


def _stack(frame: FrameType | None) -> str:
    names: list[str] = []
    while frame is not None and len(names) < MAX_DEPTH:
        code = frame.f_code
        names.append(f"{Path(code.co_filename).name}:{code.co_name}")
        frame = frame.f_back
    return ";".join(reversed(names))


class Sampler:
    """Start, stop, then `write` the counts: one window of one process."""

    def __init__(self, hz: float = 100.0) -> None:
        self.interval = 1.0 / hz
        self.counts: collections.Counter[str] = collections.Counter()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sampler", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        me = threading.get_ident()
        while not self._stop.wait(self.interval):
            for ident, frame in sys._current_frames().items():
                if ident != me:
                    self.counts[_stack(frame)] += 1
            self.samples += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"{stack} {n}" for stack, n in self.counts.most_common()]
        path.write_text("\n".join(lines) + "\n")


# leaves of a parked thread: trio's idle worker threads, its epoll wait, the stdlib's waits
IDLE = ("_work", "get_events", "wait", "_wait_for_tstate_lock", "select", "poll", "sleep")


def by_function(
    path: Path, *, exclude_idle: tuple[str, ...] = IDLE
) -> tuple[int, dict[str, int], dict[str, int]]:
    """Busy samples, and per function the samples it was running (self) and on the stack (inclusive).

    Stacks whose leaf is one of `exclude_idle` (a thread parked in a wait) are dropped."""
    total = 0
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, n_text = line.rpartition(" ")
        frames = stack.split(";")
        if frames[-1].split(":")[-1] in exclude_idle:
            continue
        n = int(n_text)
        total += n
        own[frames[-1]] += n
        for name in set(frames):
            inclusive[name] += n
    return total, dict(own), dict(inclusive)


def compare(a: Path, b: Path, slots_a: int, slots_b: int, top: int = 30) -> list[str]:
    """The functions whose inclusive samples per slot grew most from window `a` to window `b`."""
    _, _, inc_a = by_function(a)
    _, _, inc_b = by_function(b)
    rows = []
    for name in set(inc_a) | set(inc_b):
        x, y = inc_a.get(name, 0) / slots_a, inc_b.get(name, 0) / slots_b
        rows.append((y - x, x, y, name))
    rows.sort(reverse=True)
    lines = [f"{'per slot A':>10} {'per slot B':>10} {'change':>8}  function"]
    lines += [f"{x:10.1f} {y:10.1f} {d:+8.1f}  {name}" for d, x, y, name in rows[:top]]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description="compare two windows sampled by bench/soak.py --profile")
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    slots = []
    for path in (args.a, args.b):
        match = re.search(r"-(\d+)-(\d+)\.txt$", path.name)
        if match is None:
            parser.error(f"{path.name}: not a <stem>-profile-FROM-TO.txt file")
        slots.append(int(match[2]) - int(match[1]))
    busy = [by_function(p)[0] for p in (args.a, args.b)]
    print(f"busy samples per slot: A {busy[0] / slots[0]:.1f}, B {busy[1] / slots[1]:.1f}")
    print("\n".join(compare(args.a, args.b, slots[0], slots[1], args.top)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
