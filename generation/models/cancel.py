"""Cancellation points for model code running in worker threads.

A worker thread cannot be interrupted, but it can ask whether the task that
started it has been cancelled (its cancel scope expired): `anyio.from_thread.
check_cancelled()` then raises the backend's cancellation exception in the
thread. Model loops call `cancel_point()` between steps, so a slot past its
deadline stops within one step and its thread ends before the scope exits:
no thread is left writing into buffers the next slot uses.
"""

from __future__ import annotations

from contextlib import suppress

from anyio import NoEventLoopError, from_thread


def cancel_point() -> None:
    """Raise if the anyio task that runs this thread was cancelled; a no-op outside anyio threads."""
    with suppress(NoEventLoopError):  # NoEventLoopError: a plain synchronous call, not an anyio worker thread
        from_thread.check_cancelled()
