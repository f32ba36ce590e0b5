import logging

import pytest

from generation.errors import MemoryPressureError
from generation.utils.memory import format_bytes, get_vram_stats, log_vram_snapshot
from generation.vram import VRAMMonitor


@pytest.mark.parametrize(
    ("size", "text"),
    [
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.00 KiB"),
        (1536, "1.50 KiB"),
        (5 * 1024**3, "5.00 GiB"),
        (-2048, "-2.00 KiB"),
    ],
)
def test_format_bytes(size: int, text: str) -> None:
    assert format_bytes(size) == text


def test_cpu_stats_describe_this_process() -> None:
    stats = get_vram_stats("cpu")
    assert stats["device"] == "cpu"
    assert 0.01 < stats["allocated_gb"] <= stats["total_gb"]
    assert stats["reserved_gb"] >= stats["allocated_gb"]
    assert stats["max_allocated_gb"] >= stats["allocated_gb"]
    assert 0 < stats["free_gb"] <= stats["total_gb"]


def test_stats_follow_allocations_on_cpu() -> None:
    import mmap

    before = get_vram_stats("cpu")["allocated_gb"]
    # fresh anonymous pages, touched: a malloc'd block could reuse memory earlier tests freed
    block = mmap.mmap(-1, 64 * 1024**2)
    block.write(b"\x01" * len(block))
    after = get_vram_stats("cpu")["allocated_gb"]
    assert after - before > 0.05
    block.close()


def test_snapshot_logs_its_label(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="generation.utils.memory"):
        stats = log_vram_snapshot("after_model_load", "cpu")
    assert "after_model_load" in caplog.text
    assert stats["device"] == "cpu"


def _fixed(gb: float):
    return lambda: {"device": "fake", "reserved_gb": gb, "allocated_gb": gb}


def test_monitor_below_soft_limit_is_quiet(caplog: pytest.LogCaptureFixture) -> None:
    monitor = VRAMMonitor(11.0, 11.5, stats_fn=_fixed(10.9))
    monitor.check("actor")
    assert monitor.soft_warnings == 0 and not caplog.records


def test_monitor_soft_limit_warns_and_continues(caplog: pytest.LogCaptureFixture) -> None:
    monitor = VRAMMonitor(11.0, 11.5, stats_fn=_fixed(11.2))
    with caplog.at_level(logging.WARNING):
        stats = monitor.check("warp")
    assert stats["reserved_gb"] == 11.2
    assert monitor.soft_warnings == 1
    assert "memory pressure before 'warp'" in caplog.text


def test_monitor_hard_limit_raises_naming_the_stage() -> None:
    monitor = VRAMMonitor(11.0, 11.5, stats_fn=_fixed(11.5))
    with pytest.raises(
        MemoryPressureError, match=r"'verify' not started: 11.50 GB .* hard limit of 11.50 GB"
    ):
        monitor.check("verify")
    assert monitor.hard_violations == 1


def test_monitor_measures_the_cpu_process_by_default() -> None:
    with pytest.raises(MemoryPressureError, match="on cpu"):
        VRAMMonitor(0.001, 0.002, "cpu").check("actor")


@pytest.mark.parametrize(("soft", "hard"), [(0, 1), (2, 1), (-1, 1)])
def test_monitor_rejects_bad_limits(soft: float, hard: float) -> None:
    with pytest.raises(ValueError, match="soft_limit_gb"):
        VRAMMonitor(soft, hard)
