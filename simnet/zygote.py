"""The simnet's fork server: torch imported and the engine built once, every node process forked from it.

A node process that starts from nothing spends about 13 s of CPU importing torch
and building the tiny engine, and holds its own copy of every page of it: on
two cores that is what limits how many nodes a simnet can hold. Every simnet
node runs the same engine (`engine.yaml` of the layout), so one process, the
zygote, imports the node's code, builds that engine and freezes its heap
(`gc.freeze`, so the copy-on-write pages stay shared); each node process is
then a `fork` of it that loads only its own config and key and runs
`simnet.worker.run` with the inherited engine. The zygote never starts trio or
a thread pool before forking (one maths thread, `WORKER_ENV`), which is what
makes forking it safe.

    python -m simnet.zygote ENGINE_YAML      # driven by `ForkServer`, over its stdin and stdout

Protocol, one JSON object a line: in, `{"config", "control", "behaviour", "log"}`
(fork a node); out, `{"ready": true}` once the engine is built, `{"started": PID}`
after each fork, `{"exited": PID, "code": CODE}` when a node process ends (the
code as `subprocess` gives it: negative for a signal).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import IO, Any

REAP_INTERVAL_SEC = 0.1


def _fork_node(request: dict[str, Any], engine: Any, protocol: IO[str]) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:  # the node process: its own session, log file and stdin, then the worker's life
        os.setsid()
        protocol.close()
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
        from simnet.worker import run

        code = run(Path(request["config"]), Path(request["control"]), request.get("behaviour"), engine)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def serve(engine_yaml: Path) -> None:
    """The zygote's life: build the engine, then fork on request and report exits, until stdin closes."""
    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever the libraries print goes to the zygote's log, not into the protocol
    from generation.config import GenerationSettings
    from node.engine import build_engine, freeze_resident_heap

    engine = build_engine(GenerationSettings.from_yaml(engine_yaml))
    freeze_resident_heap()
    protocol.write(json.dumps({"ready": True}) + "\n")
    pending = b""
    children: set[int] = set()
    while True:
        readable, _, _ = select.select([0], [], [], REAP_INTERVAL_SEC)
        if readable:
            chunk = os.read(0, 65536)
            if not chunk:
                break
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                pid = _fork_node(json.loads(line), engine, protocol)
                children.add(pid)
                protocol.write(json.dumps({"started": pid}) + "\n")
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                children.discard(pid)
                protocol.write(json.dumps({"exited": pid, "code": os.waitstatus_to_exitcode(status)}) + "\n")


class ForkedProcess:
    """A node process forked by the zygote: the part of `subprocess.Popen` the process backend uses."""

    def __init__(self, pid: int, server: ForkServer) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._server = server

    def poll(self) -> int | None:
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        with self._server.changed:
            if not self._server.changed.wait_for(lambda: self.returncode is not None, timeout):
                raise subprocess.TimeoutExpired(f"node process {self.pid}", timeout or 0.0)
        assert self.returncode is not None
        return self.returncode

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # exited already: its report is on the way
                os.kill(self.pid, signal.SIGKILL)


class ForkServer:
    """The harness's side: starts the zygote, asks it for node processes, follows their exits."""

    def __init__(self, engine_yaml: Path, log: Path, env: dict[str, str]) -> None:
        self._log = log
        with open(log, "w") as log_file:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "simnet.zygote", str(engine_yaml)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=log_file,
                env=env,
                start_new_session=True,
            )
        self.changed = threading.Condition()
        self.ready = False
        self._started: list[int] = []
        self._processes: dict[int, ForkedProcess] = {}
        self._early_exits: dict[int, int] = {}
        self._reader = threading.Thread(target=self._read, name="fork-server", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            report = json.loads(line)
            with self.changed:
                if "ready" in report:
                    self.ready = True
                elif "started" in report:
                    self._started.append(report["started"])
                elif "exited" in report:
                    process = self._processes.get(report["exited"])
                    if process is None:
                        self._early_exits[report["exited"]] = report["code"]
                    else:
                        process.returncode = report["code"]
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def start(
        self, config: Path, control: Path, behaviour: str | None, log: Path, timeout: float
    ) -> ForkedProcess:
        """Fork a node process (waiting, the first time, for the zygote to build the engine)."""
        assert self.proc.stdin is not None
        with self.changed:
            if not self.changed.wait_for(lambda: self.ready or self.proc.poll() is not None, timeout):
                raise RuntimeError(f"the fork server built no engine in {timeout:.0f} s (see {self._log})")
            if not self.ready:
                raise RuntimeError(f"the fork server exited with {self.proc.returncode} (see {self._log})")
            request = {
                "config": str(config),
                "control": str(control),
                "behaviour": behaviour,
                "log": str(log),
            }
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
            if not self.changed.wait_for(lambda: self._started or self.proc.poll() is not None, 30):
                raise RuntimeError(f"the fork server did not fork (see {self._log})")
            if not self._started:
                raise RuntimeError(f"the fork server exited with {self.proc.returncode} (see {self._log})")
            process = ForkedProcess(self._started.pop(0), self)
            process.returncode = self._early_exits.pop(process.pid, None)
            self._processes[process.pid] = process
        return process

    def close(self, timeout: float = 10.0) -> None:
        """Close the zygote's stdin (it exits) once its node processes are gone."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        deadline = time.time() + timeout
        while self.proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._reader.join(timeout)


if __name__ == "__main__":
    serve(Path(sys.argv[1]))
