"""Finding a user's :class:`~streamtask.model.app.App` from a ``module:attribute`` reference."""

from __future__ import annotations

import importlib
import os
import sys

from streamtask.errors import ConfigurationError
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
        raise ConfigurationError(
            f"cannot import module {module_name!r} ({exc}); run from the directory that "
            "contains it or add it to PYTHONPATH") from exc
    app = getattr(module, attribute, None)
    if not isinstance(app, App):
        raise ConfigurationError(
            f"{reference!r} is {type(app).__name__}, not a streamtask.App; point at the App "
            "object, e.g. module:app")
    return app
