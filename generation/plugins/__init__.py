"""Pluggable renderers with declared schemas and resource and latency guarantees.

    from generation.plugins import PluginHost
    host = PluginHost.from_config()
    print(host.registry.list_plugins())

See README.md beside this file for the manifest schema and the renderer contract.
"""

from generation.plugins.errors import (
    ManifestError,
    PluginError,
    PluginTimeout,
    PolicyRefusal,
    SchemaViolation,
)
from generation.plugins.host import PluginHost
from generation.plugins.manifest import PluginManifest, load_manifest
from generation.plugins.registry import PluginRegistry

__all__ = [
    "ManifestError",
    "PluginError",
    "PluginHost",
    "PluginManifest",
    "PluginRegistry",
    "PluginTimeout",
    "PolicyRefusal",
    "SchemaViolation",
    "load_manifest",
]
