"""pytest plugin: kombu's unit tests of its Redis transport on the runtime's classes.

kombu's ``t/unit/transport/test_redis.py`` tests ``kombu.transport.redis`` through subclasses
of its ``Channel`` and ``Transport`` (a fake redis client underneath), made when the module is
imported, and through ``redis.QoS``, ``redis.Channel`` and ``redis.Transport`` directly. This
plugin, loaded by a conftest at the root of the unpacked suite, makes those three names of
``kombu.transport.redis`` the runtime's (``celery_ecs.transport``, subclasses of kombu's, so kombu's
own module keeps working) before the test module is imported: every test then runs on the
runtime's classes, and the contract kombu's tests state holds for them or the test fails.

A run where the replacement did not happen cannot pass: after collection the plugin checks
that the test module's ``Channel``/``Transport`` derive from the runtime's, and writes what it
checked to ``$UPSTREAM_PROOF`` (JSON), which the nox session requires.

Exclusions (``devtools.upstream.suites``) are deselected by node id, as for Celery's suite.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
from kombu import Connection
from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis
from kombu.utils.imports import symbol_by_name

from celery_ecs import transport
from devtools.upstream.suites import KOMBU_INTEGRATION, KOMBU_UNIT, deselect

#: The names of kombu's Redis module that become the runtime's classes.
REPLACED: dict[str, type] = {
    "Channel": transport.Channel,
    "QoS": transport.QoS,
    "Transport": transport.Transport,
}

#: The module of kombu's unit tests whose test classes must derive from the runtime's.
UNIT_MODULE = "t.unit.transport.test_redis"


def pytest_configure(config: pytest.Config) -> None:
    for name, runtime_class in REPLACED.items():
        setattr(kombu_redis, name, runtime_class)


def check_replacement() -> dict[str, str]:
    """What makes the collected tests run on the runtime's classes; AssertionError if not."""
    for name, runtime_class in REPLACED.items():
        assert getattr(kombu_redis, name) is runtime_class, f"kombu.transport.redis.{name}"
    # What kombu.Connection("redis://...") resolves, as kombu's integration tests connect.
    transport_class = Connection("redis://127.0.0.1:1").transport_cls
    resolved = symbol_by_name(transport_class, TRANSPORT_ALIASES)
    assert resolved is transport.Transport, f"redis:// resolves to {resolved!r}"
    found = {"redis://": f"{resolved.__module__}.{resolved.__qualname__}"}
    module = sys.modules.get(UNIT_MODULE)
    for name in ("Channel", "Transport") if module is not None else ():
        test_class = getattr(module, name)
        assert issubclass(test_class, REPLACED[name]), (
            f"{UNIT_MODULE}.{name} does not derive from the runtime's {REPLACED[name]!r}"
        )
        found[f"{UNIT_MODULE}.{name}"] = " < ".join(
            f"{cls.__module__}.{cls.__qualname__}" for cls in test_class.__mro__[:3]
        )
    return found


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(
    session: pytest.Session, config: pytest.Config, items: list[pytest.Item]
) -> None:
    proof = {"classes": check_replacement()}
    for suite in (KOMBU_UNIT, KOMBU_INTEGRATION):  # each matches only its own tests
        deselect(suite, config, items)
    target = os.environ.get("UPSTREAM_PROOF")
    if target:
        Path(target).write_text(json.dumps(proof, indent=2))
