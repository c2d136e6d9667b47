"""The private names of kombu, Celery and redis-py the runtime relies on (``celery_ecs.upstream``)
are there, as recorded, on the installed releases; and the list misses none the runtime
overrides."""

from __future__ import annotations

import importlib.metadata
import inspect
import pkgutil
import re
from collections.abc import Iterator
from pathlib import Path
from types import CodeType
from typing import Any

import pytest
import redis
from kombu import Connection
from kombu.common import QoS as PrefetchCount
from packaging.version import Version

from app.celery_app import app
from celery_ecs.consumer import Consumer, HeldMessagesQoS
from celery_ecs.liveness import ResolvedConnection, WorkerKeys
from celery_ecs.results import ResultBackend, ResultBackendLoader
from celery_ecs.transport import Channel, QoS
from celery_ecs.upstream import NAMES, VERIFIED, UpstreamName
from tests.support import ROOT

#: The app's classes that extend a library's: every underscored name they define that a base
#: class also has is an override of a private name, and must be listed.
EXTENDING = (Channel, QoS, Consumer, HeldMessagesQoS, ResultBackend, ResultBackendLoader,
             ResolvedConnection)  # fmt: skip


def package_of(name: UpstreamName) -> str:
    return name.path.split(".", 1)[0]


def installed(package: str) -> Version:
    return Version(importlib.metadata.version(package))


@pytest.mark.parametrize("package", sorted(VERIFIED))
def test_the_installed_release_is_a_verified_one(package: str) -> None:
    # A new release: read each name of celery_ecs.upstream in its source, then add it to VERIFIED.
    version = importlib.metadata.version(package)
    assert version in VERIFIED[package], (
        f"{package} {version} is not among the releases celery_ecs.upstream was verified on "
        f"({', '.join(VERIFIED[package])}): check each of its names in that release's source"
    )


@pytest.fixture
def live_objects(redis_url: str) -> Iterator[dict[str, Any]]:
    """Objects of the owners of the names set by ``__init__``, made as the runtime makes them."""
    keys = WorkerKeys("upstream", "names")
    options = {**app.conf.broker_transport_options, **keys.transport_options()}
    with Connection(redis_url, transport=app.conf.broker_transport,
                    transport_options=options) as connection:  # fmt: skip
        channel = connection.default_channel
        yield {
            "kombu.transport.redis:Channel": channel,
            "kombu.transport.virtual:Channel": channel,
            "kombu.transport.virtual:QoS": channel.qos,
            "kombu.transport.virtual:Message": channel.Message(
                {"properties": {"delivery_tag": "upstream"}}, channel=channel
            ),
            "kombu.transport.redis:MultiChannelPoller": connection.transport.cycle,
            "kombu.common:QoS": PrefetchCount(lambda prefetch_count: None, 1),
            "celery.backends.redis:RedisBackend": ResultBackend(app=app, url=redis_url),
            # Not connected: _sock is set (to None) by __init__.
            "redis.connection:AbstractConnection": redis.Connection(),
        }


@pytest.mark.parametrize(
    "name",
    # A name set by __init__ is read on a live object, made against a real Redis.
    [pytest.param(name, marks=[pytest.mark.redis] if name.instance else []) for name in NAMES],
    ids=[name.path for name in NAMES],
)
def test_each_name_is_as_recorded(name: UpstreamName, request: pytest.FixtureRequest) -> None:
    package = package_of(name)
    if name.since and installed(package) < Version(name.since):
        pytest.skip(f"{name.path}: only from {package} {name.since}")
    module, _, qualname = name.path.partition(":")
    owner_name, _, attribute = qualname.rpartition(".")
    owner_path = f"{module}:{owner_name}" if owner_name else module
    owner = pkgutil.resolve_name(owner_path)
    if name.instance:
        objects: dict[str, Any] = request.getfixturevalue("live_objects")
        found = hasattr(objects[owner_path], attribute)
        assert found, f"{name.path}: no longer set by {owner_path}.__init__ ({name.relies_on})"
        return
    assert hasattr(owner, attribute), f"{name.path}: gone from {package} {installed(package)}"
    value = getattr(owner, attribute)
    if name.closure:
        closure, _, variable = name.closure.partition(":")
        made = [code for code in value.__code__.co_consts
                if isinstance(code, CodeType) and code.co_name == closure]  # fmt: skip
        assert len(made) == 1, f"{name.path}: no longer makes {closure} ({name.relies_on})"
        assert variable in made[0].co_freevars, (
            f"{name.path}: its {closure} no longer reads {variable} ({name.relies_on})"
        )
        return
    if name.signature is None:
        assert not callable(value), f"{name.path}: recorded as an attribute, now a callable"
        return
    signature = str(inspect.signature(value))
    assert signature == name.signature, (
        f"{name.path}: its signature changed in {package} {installed(package)}: "
        f"{name.signature} -> {signature} (relied on: {name.relies_on})"
    )


def test_the_list_names_every_private_override() -> None:
    listed = {name.path.rpartition(":")[2].rpartition(".")[2] for name in NAMES}
    missing = {
        f"{cls.__name__}.{attribute}"
        for cls in EXTENDING
        for attribute in vars(cls)
        if attribute.startswith("_") and not attribute.startswith("__")
        and any(hasattr(base, attribute) for base in cls.__mro__[1:])
        and attribute not in listed
    }
    assert not missing, f"overrides of private names not listed in celery_ecs.upstream: {missing}"


def test_names_are_listed_once() -> None:
    paths = [name.path for name in NAMES]
    assert len(paths) == len(set(paths))


# --- the version matrix (noxfile.py) --------------------------------------------------------------


def test_the_matrix_runs_the_verified_releases_and_the_images_pair() -> None:
    import noxfile

    assert {celery for celery, _ in noxfile.PAIRS.values()} == set(VERIFIED["celery"])
    assert {kombu for _, kombu in noxfile.PAIRS.values()} == set(VERIFIED["kombu"])
    constraints = (ROOT / "app" / "constraints.txt").read_text()
    image = tuple(re.search(rf"^{name}==(\S+)$", constraints, re.MULTILINE)[1]  # type: ignore[index]
                  for name in ("celery", "kombu"))  # fmt: skip
    assert image in noxfile.PAIRS.values()


def test_a_matrix_session_installs_the_project_with_only_its_pair_replaced(
    tmp_path: Path,
) -> None:
    import noxfile

    requirements = noxfile.pinned_requirements(tmp_path, "9.8.7", "6.5.4")
    assert requirements.read_text() == (ROOT / "requirements-dev.txt").read_text()
    for name in ("app/requirements.txt", "app/constraints.txt"):
        original = (ROOT / name).read_text().splitlines()
        rewritten = (tmp_path / name).read_text().splitlines()
        changed = {new for old, new in zip(original, rewritten, strict=True) if old != new}
        assert changed == {line for line in rewritten if re.match(r"(celery|kombu)(\[|==)", line)}
        assert changed <= {"celery==9.8.7", "celery[redis]==9.8.7", "kombu==6.5.4"}
        assert len(changed) == 2
