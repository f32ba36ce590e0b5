"""Discovering plugins in a directory and applying the operator's policy to each.

One subfolder per plugin, each with a `manifest.yaml`. A bad manifest or a
refused plugin is recorded with its reason and never stops the others loading.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from generation.config import PluginSettings
from generation.plugins.errors import ManifestError, PluginError, PolicyRefusal
from generation.plugins.manifest import PluginManifest, load_manifest

logger = logging.getLogger(__name__)


def check_policy(manifest: PluginManifest, policy: PluginSettings) -> bool:
    """Raise `PolicyRefusal` with the reason if `policy` does not allow `manifest`; return whether it is trusted."""
    name = manifest.name
    if policy.allowlist and name not in policy.allowlist:
        raise PolicyRefusal(f"plugin '{name}': not in the allowlist")
    trusted = name in policy.trusted
    if not trusted and not policy.allow_untrusted:
        raise PolicyRefusal(
            f"plugin '{name}': untrusted plugins are not allowed (plugins.allow_untrusted is false)"
        )
    if manifest.vram_gb > policy.max_vram_gb:
        raise PolicyRefusal(
            f"plugin '{name}': declares {manifest.vram_gb} GB of VRAM, the policy allows {policy.max_vram_gb} GB"
        )
    for lane in manifest.supported_lanes:
        ceiling = getattr(policy.latency_ceiling_ms, lane)
        if manifest.max_latency_ms > ceiling:
            raise PolicyRefusal(
                f"plugin '{name}': declares {manifest.max_latency_ms} ms for {lane}, the ceiling is {ceiling} ms"
            )
    return trusted


@dataclass
class LoadedPlugin:
    manifest: PluginManifest
    trusted: bool


@dataclass
class PluginRegistry:
    plugins: dict[str, LoadedPlugin] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # manifest path -> what is wrong with it
    refused: dict[str, str] = field(default_factory=dict)  # plugin name -> why the policy refused it

    @classmethod
    def discover(cls, directory: str | Path, policy: PluginSettings) -> PluginRegistry:
        reg = cls()
        root = Path(directory)
        if not root.is_dir():
            reg.errors[str(root)] = f"{root}: plugin directory does not exist"
            return reg
        for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))):
            manifest_path = sub / "manifest.yaml"
            try:
                manifest = load_manifest(manifest_path)
            except ManifestError as exc:
                reg.errors[str(manifest_path)] = str(exc)
                logger.warning("plugin skipped: %s", exc)
                continue
            if manifest.name in reg.plugins or manifest.name in reg.refused:
                reg.errors[str(manifest_path)] = f"{manifest_path}: name: '{manifest.name}' is already taken"
                continue
            try:
                trusted = check_policy(manifest, policy)
            except PolicyRefusal as exc:
                reg.refused[manifest.name] = str(exc)
                logger.warning("plugin refused: %s", exc)
                continue
            reg.plugins[manifest.name] = LoadedPlugin(manifest, trusted)
        return reg

    def list_plugins(self) -> list[str]:
        return sorted(self.plugins)

    def get(self, name: str) -> LoadedPlugin:
        if name in self.plugins:
            return self.plugins[name]
        if name in self.refused:
            raise PluginError(self.refused[name])
        raise PluginError(f"no plugin named '{name}' (loaded: {', '.join(self.list_plugins()) or 'none'})")
