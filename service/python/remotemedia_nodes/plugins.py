"""Loading plug-in directories: every ``*.py`` file and every package (a directory with an
``__init__.py``) directly inside each directory is imported, so its ``@node`` classes register.
"""

from __future__ import annotations

import importlib.util
import sys
import traceback
from pathlib import Path


class PluginError(Exception):
    """A plug-in failed to import; the message names the file and line."""


def _where(e: BaseException, path: Path) -> str:
    if isinstance(e, SyntaxError) and e.filename:
        return f"{e.filename}:{e.lineno}"
    frames = [f for f in traceback.extract_tb(e.__traceback__) if Path(f.filename).resolve().is_relative_to(path.parent.resolve())]
    last = frames[-1] if frames else None
    return f"{last.filename}:{last.lineno}" if last else str(path)


def load_dir(directory: str) -> list[str]:
    """Imports the plug-ins in `directory`; returns the module names loaded."""
    root = Path(directory)
    if not root.is_dir():
        raise PluginError(f"python_nodes_path {directory} is not a directory")
    loaded = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(("_", ".")):
            continue
        if entry.is_file() and entry.suffix == ".py":
            location = entry
        elif entry.is_dir() and (entry / "__init__.py").is_file():
            location = entry / "__init__.py"
        else:
            continue
        name = f"remotemedia_plugin_{entry.stem}"
        spec = importlib.util.spec_from_file_location(name, location, submodule_search_locations=[str(entry)] if entry.is_dir() else None)
        if spec is None or spec.loader is None:
            raise PluginError(f"cannot import plug-in {location}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            sys.modules.pop(name, None)
            raise PluginError(f"plug-in {location} failed to load at {_where(e, location)}: {type(e).__name__}: {e}") from e
        loaded.append(name)
    return loaded
