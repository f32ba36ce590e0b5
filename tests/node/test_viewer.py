"""The viewer page in a real headless Chromium (Debian's chromium and chromium-driver) against a real node."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.node.conftest import playing_node

pytestmark = [
    pytest.mark.trio,
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("chromium") is None or shutil.which("chromedriver") is None,
        reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
    ),
]

ON_SCREEN = """
const v = [...document.querySelectorAll('video')].find(v => !v.classList.contains('off'));
return {slot: document.getElementById('screen').dataset.slot ?? null, time: v.currentTime,
        error: v.error ? v.error.code : null, paused: v.paused};
"""
CERTIFICATES = "return [...document.querySelectorAll('a.certificate')].map(a => a.textContent);"
CLIP = "return [...document.querySelectorAll('tr')].map(r => [r.dataset.slot, r.querySelector('td.clip')?.textContent]);"


def browser() -> Any:
    from selenium import webdriver

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or ""
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--autoplay-policy=no-user-gesture-required", "--window-size=800,1000"):  # fmt: skip
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})  # the page's console, for script errors
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    return webdriver.Chrome(options=options, service=service)


def watch(url: str, shot: Path, timeout: float) -> dict[str, Any]:
    """Open the page; follow what is on screen until it has played across a slot boundary."""
    driver = browser()
    try:
        driver.get(url)
        deadline = time.monotonic() + timeout
        seen: dict[str, list[float]] = {}
        errors = []
        while time.monotonic() < deadline:
            state = driver.execute_script(ON_SCREEN)
            if state["error"] is not None:
                errors.append(state)
            if state["slot"] is not None:
                seen.setdefault(state["slot"], []).append(state["time"])
            advanced = [s for s, times in seen.items() if max(times) > min(times) + 0.2]
            if len(advanced) >= 2:
                break
            time.sleep(0.1)
        driver.save_screenshot(str(shot))
        console = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        script_errors = [m for m in console if "favicon.ico" not in m]  # the page names no icon
        return {
            "seen": seen,
            "errors": errors + script_errors,
            "certificates": driver.execute_script(CERTIFICATES),
            "clip": dict(driver.execute_script(CLIP)[1:]),  # slot -> the CLIP column, header row left out
        }
    finally:
        driver.quit()


async def test_the_viewer_plays_the_channel_across_a_slot_boundary(
    tmp_path: Path, node_engine: object
) -> None:
    async with playing_node(tmp_path, node_engine, slots=1) as node:
        assert node.public_port
        shot = tmp_path / "viewer.png"
        result = await trio.to_thread.run_sync(watch, f"http://127.0.0.1:{node.public_port}/", shot, 60.0)
        assert not result["errors"], result["errors"]
        advanced = sorted(int(s) for s, t in result["seen"].items() if max(t) > min(t) + 0.2)
        assert len(advanced) >= 2 and advanced[1] > advanced[0], result[
            "seen"
        ]  # played on into the next slot
        for slot in advanced:
            assert node.ledger.recent[slot].hash.hex() in result["certificates"]
            # the one director's own announcement is the canonical output: agreement 1.0, 1 of 1 seats
            assert result["clip"][str(slot)] == "B 1.000 \u00b7 L 1.000 \u00b7 1/1 same file", result["clip"]
        assert shot.stat().st_size > 10_000
