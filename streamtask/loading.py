"""Finding a user's :class:`~streamtask.model.app.App` from a ``module:attribute`` reference."""

from __future__ import annotations

import importlib
import os
import sys
import traceback

from streamtask.errors import ConfigurationError, StreamtaskError
from streamtask.model.app import App


def load_app(reference: str) -> App:
    """Import ``module:attribute`` (the current directory is importable) and return the App."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(
            f"app reference {reference!r} must look like module:attribute, e.g. photos_app:app")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and not _is_part_of(module_name, exc.name):
            raise ConfigurationError(
                f"module {module_name!r} imports {exc.name!r}, which is not installed") from exc
        raise ConfigurationError(
            f"cannot import module {module_name!r} ({exc}); run from the directory that "
            "contains it or add it to PYTHONPATH") from exc
    except StreamtaskError:  # a definition the app declares is invalid: its own message
        raise
    except Exception as exc:  # the user's module failed: say where, not "a bug"
        raise ConfigurationError(
            f"importing {module_name!r} failed: {_where(exc)}") from exc
    if not hasattr(module, attribute):
        raise ConfigurationError(
            f"module {module_name!r} has no attribute {attribute!r}; point at the App "
            "object, e.g. module:app")
    app = getattr(module, attribute)
    if not isinstance(app, App):
        raise ConfigurationError(
            f"{reference!r} is {type(app).__name__}, not a streamtask.App; point at the App "
            "object, e.g. module:app")
    return app


def _is_part_of(module_name: str, missing: str) -> bool:
    """True when ``missing`` is ``module_name`` or one of its parent packages."""
    return module_name == missing or module_name.startswith(f"{missing}.")


def _where(exc: Exception) -> str:
    """The error and the line of the user's code it came from, on one line."""
    if isinstance(exc, SyntaxError):
        return f"SyntaxError: {exc.msg} ({exc.filename}, line {exc.lineno})"
    frames = traceback.extract_tb(exc.__traceback__)
    user = [frame for frame in frames if "importlib" not in frame.filename]
    at = f" ({user[-1].filename}, line {user[-1].lineno})" if user else ""
    return f"{type(exc).__name__}: {exc}{at}"
