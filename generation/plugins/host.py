"""PluginHost: runs plugins under their declared schemas, latency and concurrency.

Trusted plugins run inside the node: `run(payload)` in a worker thread (or
awaited, if it is a coroutine function) under a cancel scope of the declared
latency. A sync plugin that overruns cannot be stopped inside a thread, so its
thread is abandoned and the caller moves on; that is why plugins the operator
does not trust run isolated: each call in its own process, killed at the
deadline, with an address-space limit. Every failure is contained (raised as a
`PluginError` to the caller, who falls back to the built-in path) and counted.
"""

from __future__ import annotations

import inspect
import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import anyio
from jsonschema import Draft202012Validator

from generation.config import GenerationSettings, PluginSettings
from generation.plugins.errors import PluginError, PluginTimeout, SchemaViolation
from generation.plugins.loader import load_entrypoint
from generation.plugins.manifest import PluginManifest
from generation.plugins.registry import LoadedPlugin, PluginRegistry

logger = logging.getLogger(__name__)
WORKER = Path(__file__).resolve().parent / "worker.py"
ISOLATED_MEMORY_MB = 2048


def _validate(validator: Draft202012Validator, data: Any, what: str, name: str) -> None:
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    if errors:
        e = errors[0]
        where = ".".join(str(p) for p in e.absolute_path) or "<root>"
        raise SchemaViolation(f"plugin '{name}': {what} {where}: {e.message}")


class PluginHost:
    def __init__(self, registry: PluginRegistry, policy: PluginSettings) -> None:
        self.registry = registry
        self.policy = policy
        self.stats: dict[str, Counter[str]] = {name: Counter() for name in registry.plugins}
        self._instances: dict[str, Any] = {}
        self._limiters: dict[str, anyio.CapacityLimiter] = {}
        self._validators: dict[tuple[str, str], Draft202012Validator] = {}  # built once per plugin and side

    @classmethod
    def from_config(
        cls, config_path: str | Path | None = None, *, settings: GenerationSettings | None = None
    ) -> PluginHost:
        """A host for the plugins the config enables (none when `plugins.enabled` is false)."""
        settings = settings if settings is not None else GenerationSettings.load(config_path)
        policy = settings.plugins
        if not policy.enabled or policy.directory is None:
            return cls(PluginRegistry(), policy)
        return cls(PluginRegistry.discover(policy.directory, policy), policy)

    def manifest(self, name: str) -> PluginManifest:
        return self.registry.get(name).manifest

    async def run(self, name: str, payload: dict, *, lane: str = "lane1") -> dict:
        """Run plugin `name` on `payload` in `lane`; its validated output, or a `PluginError`."""
        plugin = self.registry.get(name)
        m = plugin.manifest
        stats = self.stats.setdefault(name, Counter())
        stats["calls"] += 1
        try:
            if lane not in m.supported_lanes:
                raise PluginError(f"plugin '{name}' does not support {lane}")
            _validate(self._validator(m, "input"), payload, "input", name)
            limiter = self._limiters.setdefault(name, anyio.CapacityLimiter(m.max_concurrency))
            async with limiter:
                try:
                    with anyio.fail_after(m.max_latency_ms / 1000):
                        result = await (
                            self._call_trusted(plugin, payload)
                            if plugin.trusted
                            else self._call_isolated(m, payload)
                        )
                except TimeoutError:
                    raise PluginTimeout(
                        f"plugin '{name}' ran past its declared {m.max_latency_ms} ms"
                    ) from None
            _validate(self._validator(m, "output"), result, "output", name)
        except PluginTimeout:
            stats["timeouts"] += 1
            raise
        except SchemaViolation:
            stats["schema_violations"] += 1
            raise
        except PluginError:
            stats["failures"] += 1
            raise
        stats["ok"] += 1
        return result

    def _validator(self, m: PluginManifest, side: str) -> Draft202012Validator:
        key = (m.name, side)
        if key not in self._validators:
            self._validators[key] = Draft202012Validator(
                m.input_schema if side == "input" else m.output_schema
            )
        return self._validators[key]

    async def _call_trusted(self, plugin: LoadedPlugin, payload: dict) -> Any:
        m = plugin.manifest
        try:
            if m.name not in self._instances:
                self._instances[m.name] = load_entrypoint(m.directory, m.entrypoint)()
            run = self._instances[m.name].run
            if inspect.iscoroutinefunction(run):
                return await run(payload)
            return await anyio.to_thread.run_sync(run, payload, abandon_on_cancel=True)
        except Exception as exc:
            logger.warning("plugin '%s' failed", m.name, exc_info=True)
            raise PluginError(f"plugin '{m.name}' failed: {type(exc).__name__}: {exc}") from exc

    async def _call_isolated(self, m: PluginManifest, payload: dict) -> Any:
        command = [sys.executable, "-I", str(WORKER), str(m.directory), m.entrypoint, str(ISOLATED_MEMORY_MB)]
        proc = await anyio.run_process(
            command, input=json.dumps(payload).encode(), check=False
        )  # killed on cancel
        if proc.returncode != 0:
            detail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or [
                f"exit code {proc.returncode}"
            ]
            raise PluginError(f"plugin '{m.name}' failed in its process: {detail[0]}")
        try:
            return json.loads(proc.stdout)
        except ValueError:
            raise PluginError(f"plugin '{m.name}' wrote output that is not JSON") from None
