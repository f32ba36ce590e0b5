"""Operator config errors name their key; init, config check, run (and Ctrl-C), status and submit."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from node.cli import EXIT_BAD_INPUT, EXIT_OK, main
from node.settings import NodeConfigError, NodeSettings
from tests.network.conftest import identity
from tests.node.conftest import single_node_config

KEY = identity(0).public_key.hex()
MINIMAL = f"""
[chain]
genesis_time = 1700000000
[[chain.validators]]
public_key = "{KEY}"
region = "eu"
"""


@pytest.mark.parametrize(
    "toml, needle",
    [
        ("[chain\n", "not valid TOML"),
        ("[node]\nkey_file = 'k'\n", "chain: Field required"),
        (MINIMAL + "[node]\nhttp_addr = 'nowhere'\n", "node.http_addr: 'nowhere' is not host:port"),
        (MINIMAL + "[node]\nlog_format = 'xml'\n", "node.log_format"),
        (MINIMAL.replace(KEY, "zz"), "chain.validators.0.public_key: not hex"),
        (MINIMAL + "[slot]\nagreement_end = 99.0\n", "slot phases must end in order"),
        (MINIMAL + "[network]\nbootstrap = ['/ip4/1.2.3.4/tcp/1']\n", "network: bootstrap: "),
        (MINIMAL + "[generation.vram]\nhard_limit_gb = -1\n", "[generation]: vram.hard_limit_gb"),
        (MINIMAL + "[agreement]\ntimeout_propose = 0\n", "agreement.timeout_propose"),
        (MINIMAL + "[limits]\nrecipe_queue = 0\n", "limits.recipe_queue"),
        (MINIMAL + "[mystery]\nx = 1\n", "mystery: unknown key"),
        (MINIMAL + "[node]\ngeneration_config = 'e.yaml'\n[generation]\n", "both given"),
        (MINIMAL + "[node]\ngeneration_config = 'missing.yaml'\n", "missing.yaml: config file not found"),
        (
            MINIMAL.replace(
                'region = "eu"',
                'region = "eu"\n[[chain.validators]]\npublic_key = "' + KEY + '"\nregion = "us"',
            ),
            "share a public key",
        ),
    ],
)
def test_malformed_config_files_each_name_their_problem(tmp_path: Path, toml: str, needle: str) -> None:
    path = tmp_path / "node.toml"
    path.write_text(toml)
    with pytest.raises(NodeConfigError) as err:
        NodeSettings.load(path)
    assert needle in str(err.value), str(err.value)
    assert str(path) in str(err.value)


def test_missing_config_and_relative_paths(tmp_path: Path) -> None:
    with pytest.raises(NodeConfigError, match="config file not found"):
        NodeSettings.load(tmp_path / "absent.toml")
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "node.toml"
    path.write_text(MINIMAL + "[node]\nkey_file = 'keys/n.key'\nstorage_dir = 'state'\n")
    s = NodeSettings.load(path)
    assert s.node.key_file == str(tmp_path / "sub" / "keys" / "n.key")
    assert s.node.storage_dir == str(tmp_path / "sub" / "state")


def test_init_writes_a_config_that_checks(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "node.toml"
    assert main(["init", "--out", str(cfg)]) == EXIT_OK
    assert (tmp_path / "node.key").exists()
    assert main(["config", "check", str(cfg)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "ok" in out and "a validator" in out and "chain id" in out
    assert main(["init", "--out", str(cfg)]) == EXIT_BAD_INPUT  # never overwritten silently
    os.chmod(tmp_path / "node.key", 0o644)
    assert main(["config", "check", str(cfg)]) == EXIT_BAD_INPUT
    assert "chmod 600" in capsys.readouterr().err


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


@pytest.mark.slow
def test_run_commits_slots_answers_status_and_stops_cleanly_on_ctrl_c(
    tmp_path: Path, tiny_cache: Path
) -> None:
    single_node_config(tmp_path, tiny_cache, start_in=8.0, engine={"speech__source": "none"})
    http = int(NodeSettings.load(tmp_path / "node.toml").node.http_addr.rsplit(":", 1)[1])
    proc = subprocess.Popen(
        [sys.executable, "-m", "node.cli", "run", "--config", str(tmp_path / "node.toml")],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.time() + 90
        info = None
        while time.time() < deadline and proc.poll() is None:
            try:
                info = _get(f"http://127.0.0.1:{http}/status")
                if info["last_certificate"] is not None:
                    break
            except OSError:
                pass
            time.sleep(0.3)
        assert info and info["last_certificate"] is not None, (
            proc.stdout.read() if proc.poll() is not None else info
        )
        assert main(["status", "--node", f"http://127.0.0.1:{http}"]) == EXIT_OK
        recipe = tmp_path / "r.json"
        recipe.write_text(
            '{"audio_track": {"script": "Hello.", "voice_id": "morty"}, "visual_track": {"prompt": "x"}}'
        )
        assert main(["submit", str(recipe), "--node", f"http://127.0.0.1:{http}"]) == EXIT_OK
        time.sleep(0.2)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=10)
        stopped_in = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    log = proc.stdout.read()
    assert proc.returncode == 0, log[-3000:]
    assert stopped_in < 2.0, stopped_in
    assert "slot=" in log and "phase=" in log  # structured lines carry slot and phase
    from node.storage import Storage

    settings = NodeSettings.load(tmp_path / "node.toml")
    storage = Storage(Path(settings.node.storage_dir) / "node.sqlite", settings.chain.genesis().chain_id)
    assert storage.last_certified_slot() is not None  # consistent and readable after the shutdown
