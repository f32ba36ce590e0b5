"""Importing a plugin's entrypoint (`module:Class` or `file.py:Class`) from its own directory.

Kept free of the rest of the engine: the isolated worker process imports only
this file and the standard library before it loads the plugin.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any


def load_entrypoint(directory: Path, entrypoint: str) -> Any:
    """The plugin class named by `entrypoint`, imported from `directory` (or, for `module:Class`, installed)."""
    target, _, class_name = entrypoint.rpartition(":")
    if target.endswith(".py"):
        file = (directory / target).resolve()
    else:
        file = (directory / Path(*target.split("."))).with_suffix(".py").resolve()
    if file.is_file():
        if directory.resolve() not in file.parents:
            raise ImportError(f"entrypoint {entrypoint!r} points outside the plugin directory")
        module_name = f"icn_plugin_{abs(hash(str(file)))}"
        spec = importlib.util.spec_from_file_location(module_name, file)
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot load {file}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
    elif target.endswith(".py"):
        raise ImportError(f"entrypoint file {target} not found in {directory}")
    else:
        module = importlib.import_module(target)
    try:
        return getattr(module, class_name)
    except AttributeError:
        raise ImportError(f"entrypoint {entrypoint!r}: no {class_name} in {target}") from None
