"""An operator's first run, as a process: `init`, `config check`, `run`, with no edits to the written config."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import av
import pytest

pytestmark = pytest.mark.slow


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=5) as response:
        data: bytes = response.read()
        return data


def test_init_check_and_run_on_this_machine_commit_and_play_slots(tmp_path: Path) -> None:
    made = cli("init", "--slot-sec", "8", "--start-in", "20", cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    text = (tmp_path / "node.toml").read_text()
    assert "no CUDA device" in text  # this machine: the tiny CPU engine, said so in the file
    checked = cli("config", "check", "node.toml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stderr
    assert "watch the channel at http://127.0.0.1:8080/" in checked.stdout
    log = open(tmp_path / "run.log", "w")  # noqa: SIM115 - handed to the process
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "run", "--config", "node.toml"],
        cwd=tmp_path,
        stdout=log,
        stderr=log,
    )
    try:
        deadline, played = time.time() + 120, None
        while time.time() < deadline and proc.poll() is None and played is None:
            time.sleep(1.0)
            try:
                schedule = json.loads(fetch("http://127.0.0.1:8080/schedule.json"))
            except OSError:
                continue  # still loading its models
            held = [s for s in schedule["slots"] if s["committed"] and s.get("held")]
            if held:
                played = held[0]
        assert played is not None, (tmp_path / "run.log").read_text()[-3000:]
        mp4 = tmp_path / "slot.mp4"
        mp4.write_bytes(fetch(f"http://127.0.0.1:8080{played['mp4']}"))
        with av.open(str(mp4)) as container:
            assert sum(1 for _ in container.decode(video=0)) > 0
        assert b"Interdimensional Cable Network" in fetch("http://127.0.0.1:8080/")
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
        log.close()
    assert code == 0, (tmp_path / "run.log").read_text()[-3000:]
