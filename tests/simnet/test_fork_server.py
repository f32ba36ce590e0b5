"""The fork server: node processes forked from one engine, their exits reported as subprocess reports them."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from simnet.layout import build
from simnet.processes import WORKER_ENV
from simnet.scenario import Scenario
from simnet.zygote import ForkServer


@pytest.mark.slow
def test_forked_node_processes_report_a_failure_a_kill_and_the_server_exits_cleanly(
    tmp_path: Path, tiny_cache: Path
) -> None:
    layout = build(
        Scenario.model_validate({"name": "fork", "nodes": 1, "slots": 1}), tmp_path, 0.0, tiny_cache
    )
    files = layout.nodes[0]
    server = ForkServer(tmp_path / "engine.yaml", tmp_path / "fork-server.log", {**os.environ, **WORKER_ENV})
    try:
        broken = server.start(tmp_path / "missing.toml", files.control, None, tmp_path / "broken.log", 600)
        assert broken.wait(60) == 1  # a node that cannot start fails loudly, with its traceback
        assert "missing.toml" in (tmp_path / "broken.log").read_text()
        node = server.start(files.config, files.control, None, tmp_path / "node.log", 60)
        deadline = time.time() + 60
        while not files.engine_ready.exists():  # the engine came from the server: ready at once
            assert node.poll() is None and time.time() < deadline, (tmp_path / "node.log").read_text()
            time.sleep(0.05)
        assert node.poll() is None  # waiting for the genesis
        node.kill()
        assert node.wait(10) == -9
    finally:
        server.close()
    assert server.proc.returncode == 0
