"""The benchmarks run in CI at tiny sizes, so they cannot rot."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_engine_cpu_benchmark_runs_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "engine_cpu.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "engine_cpu.py"), "--slots", "2", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "generate_slot P99" in proc.stdout
    data = json.loads(out.read_text())
    assert data["config"]["slots"] == 2
    assert data["cold_start_sec"]["empty_cache"] > 0
    assert 0 < data["slot_ms"]["p50"] <= data["slot_ms"]["p99"]
    assert set(data["stage_ms"]) == {"audio", "actor", "warp", "verify"}


def test_percentile_is_nearest_rank() -> None:
    sys.path.insert(0, str(ROOT / "bench"))
    from common import percentile

    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 99) == 99.0
    assert percentile([3.0, 1.0, 2.0], 99) == 3.0
    assert percentile([5.0], 50) == 5.0


def test_consensus_cpu_benchmark_runs_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "consensus_cpu.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "consensus_cpu.py"), "--slots", "2", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    correct, silent = data["cases"]["all correct"], data["cases"]["silent round-0 proposer"]
    assert correct["rounds_per_slot"] == 1.0 and silent["rounds_per_slot"] == 2.0
    assert correct["deliveries_per_slot"] == 4 * correct["broadcasts_per_slot"]
    assert correct["cpu_ms_per_slot"] > 0


def test_tts_cpu_benchmark_runs_and_writes_json(tmp_path: Path) -> None:
    out = tmp_path / "tts_cpu.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "tts_cpu.py"), "--slots", "1", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = json.loads(out.read_text())
    assert data["audio_sec"] > 30 and 0 < data["rtf_median"] == data["rtf_max"]
