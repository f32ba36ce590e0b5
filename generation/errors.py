"""Errors raised by the Vortex engine.

One base class so callers (the node, the CLI) can catch everything the engine
raises on purpose and tell it apart from bugs. Each error carries a message that
names the offending thing: the config key, the recipe field, the model, the file.
"""

from __future__ import annotations


class VortexError(Exception):
    """Base of every error the engine raises deliberately."""


class ConfigError(VortexError, ValueError):
    """The engine configuration is malformed; the message names the key."""


class RecipeError(VortexError, ValueError):
    """A slot recipe is malformed; the message names the field."""


class WeightsError(VortexError, FileNotFoundError):
    """A weights directory is missing files or holds malformed ones."""


class ModelInitError(VortexError, RuntimeError):
    """A model could not be built or moved to its device at start-up."""


class UnknownModelError(VortexError, KeyError):
    """`ModelRegistry.get_model` was asked for a name it does not hold."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the sentence readable
        return str(self.args[0]) if self.args else "unknown model"


class MemoryPressureError(VortexError, RuntimeError):
    """Device memory is above the hard limit: the stage is not started."""


class InvalidFrameError(VortexError, ValueError):
    """Frames handed to verification hold NaN, Inf or denormal values."""


class StageError(VortexError, RuntimeError):
    """A pipeline stage failed; `stage` names it."""

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"stage '{stage}': {message}")
        self.stage = stage
