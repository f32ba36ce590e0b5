"""The isolated process an untrusted plugin runs in: one call, JSON in on stdin, JSON out on stdout.

Run by file path (`python -I worker.py DIR ENTRYPOINT MEMORY_MB`) so that it imports
nothing of the node. The parent kills it at the plugin's declared latency; an
address-space limit keeps a runaway plugin from starving the node of memory.
Exit codes: 0 ok (result on stdout), 3 the plugin raised (message on stderr).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import resource
import sys
from pathlib import Path


def main() -> int:
    directory, entrypoint, memory_mb = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    if memory_mb > 0:
        limit = memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from loader import load_entrypoint  # a sibling file, imported without the engine's packages

    payload = json.loads(sys.stdin.read())
    try:
        instance = load_entrypoint(directory, entrypoint)()
        result = instance.run(payload)
        if inspect.isawaitable(result):
            result = asyncio.run(_await(result))
    except Exception as exc:
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 3
    sys.stdout.write(json.dumps(result))
    return 0


async def _await(awaitable):
    return await awaitable


if __name__ == "__main__":
    sys.exit(main())
