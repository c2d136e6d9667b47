"""celery-ecs: the runtime that makes a Celery app safe to run on ECS Fargate with a Redis broker.

Adopting it is one call where the app is defined (see ``docs/runtime-api.md``)::

    import celery_ecs
    app = Celery("proj")
    settings = celery_ecs.equip(app)

The public names are those in ``__all__``; everything else in the package may change between
releases. This module imports nothing outside the standard library: the names that need Celery
are loaded on first use (PEP 562), so the Pulumi program reads ``celery_ecs.settings``,
``celery_ecs.names`` and ``celery_ecs.schedule`` without Celery installed.
"""

from __future__ import annotations

import importlib
import tomllib
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celery_ecs.settings import ApiKeysSettings, ConfigError, Settings, WebSettings

if TYPE_CHECKING:
    from celery_ecs.runtime import (
        BROKER_OUTAGE_ERRORS,
        RequeueOnBrokerOutage,
        equip,
        publish_only,
        settings_of,
    )

__all__ = [
    "BROKER_OUTAGE_ERRORS",
    "ApiKeysSettings",
    "ConfigError",
    "RequeueOnBrokerOutage",
    "Settings",
    "WebSettings",
    "__version__",
    "equip",
    "publish_only",
    "settings_of",
]

#: Public names that need Celery, and the module that defines each.
_LAZY = {
    "BROKER_OUTAGE_ERRORS": "celery_ecs.runtime",
    "RequeueOnBrokerOutage": "celery_ecs.runtime",
    "equip": "celery_ecs.runtime",
    "publish_only": "celery_ecs.runtime",
    "settings_of": "celery_ecs.runtime",
}


def _version() -> str:
    """The installed distribution's version; in a source checkout, ``pyproject.toml``'s."""
    try:
        return metadata.version("celery-ecs")
    except metadata.PackageNotFoundError:
        pyproject = Path(__file__).resolve().parent.parent / "pyproject.toml"
        with pyproject.open("rb") as file:
            return str(tomllib.load(file)["project"]["version"])


__version__ = _version()


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'celery_ecs' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
