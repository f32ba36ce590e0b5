"""Plugin errors. Each names the plugin (and, for manifests, the file and key)."""

from __future__ import annotations

from generation.errors import VortexError


class PluginError(VortexError, RuntimeError):
    """A plugin could not run, or its run failed; the slot carries on without it."""


class ManifestError(PluginError, ValueError):
    """A manifest is missing or malformed; the message names the file and the key."""


class PolicyRefusal(PluginError):
    """The operator's policy does not allow this plugin; the message says why."""


class PluginTimeout(PluginError):
    """The plugin ran past its declared latency and was cancelled (or killed)."""


class SchemaViolation(PluginError, ValueError):
    """A plugin's input or output does not match its declared JSON Schema."""
