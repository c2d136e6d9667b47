"""The runtime's public API (``celery_ecs``): ``equip`` gives any Celery app the runtime, refuses
what would silently drop part of it, and the example app uses only the public names."""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import pytest
import redis
from celery import Celery, Task, signals
from celery.app.amqp import AMQP
from celery.exceptions import Reject

import celery_ecs
from celery_ecs import runtime
from celery_ecs.results import ResultBackendLoader
from celery_ecs.settings import BROKER_URL, MAX_COUNTDOWN, VISIBILITY_TIMEOUT, ConfigError
from tests.support import ROOT

#: Modules of the runtime that are public as modules: the stack's contract modules (names, the
#: environment, the schedule's types) and the gunicorn settings (``--config python:...``).
PUBLIC_MODULES = frozenset(
    {"celery_ecs", "celery_ecs.settings", "celery_ecs.names", "celery_ecs.schedule",
     "celery_ecs.gunicorn_conf"}
)  # fmt: skip


@pytest.fixture
def broker_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The one variable ``equip`` requires; nothing connects to it here."""
    monkeypatch.setenv(BROKER_URL, "redis://127.0.0.1:1/0")


@pytest.fixture
def user_app(broker_env: None) -> Iterator[Celery]:
    """An app written without this project in mind, as the seed tutorial's ``celery_app.py``."""
    app = Celery("tutorial", set_as_current=False)

    @app.task(name="tutorial.send_email", shared=False)
    def send_email(to: str) -> str:
        return to

    yield app


def test_equip_gives_a_plain_app_the_runtime(user_app: Celery) -> None:
    settings = celery_ecs.equip(user_app)

    assert celery_ecs.settings_of(user_app) is settings
    task = user_app.tasks["tutorial.send_email"]
    assert isinstance(task, celery_ecs.RequeueOnBrokerOutage)
    assert isinstance(user_app.amqp, runtime.LimitedDelayAmqp)
    assert isinstance(user_app.loader, ResultBackendLoader)
    conf = user_app.conf
    assert conf.broker_transport == "celery_ecs.transport:Transport"
    assert conf.worker_consumer == "celery_ecs.consumer:Consumer"
    assert conf.beat_scheduler == "celery_ecs.beat:HeartbeatRedBeatScheduler"
    assert conf.task_acks_late is True and conf.accept_content == ["json"]
    assert conf.broker_transport_options["visibility_timeout"] == settings.visibility_timeout
    steps = {step.__name__ for part in user_app.steps.values() for step in part}
    assert {"WorkerHeartbeat", "ConsumerLiveness", "LivenessStep", "TaskClassCheck"} <= steps
    # Celery's own logging setup gives way to the runtime's format and level.
    assert any(key[0] == "celery_ecs.setup_logging" for key, _ in signals.setup_logging.receivers)


def test_the_countdown_limit_holds_in_a_users_app(
    user_app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(MAX_COUNTDOWN, "60")
    monkeypatch.setenv(VISIBILITY_TIMEOUT, "3600")
    celery_ecs.equip(user_app)
    amqp = user_app.amqp

    message = amqp.as_task_v2("id-1", "tutorial.send_email", countdown=60)
    assert "published_at" in message.headers
    with pytest.raises(ValueError, match="exceeds CELERY_MAX_COUNTDOWN=60s"):
        amqp.as_task_v2("id-2", "tutorial.send_email", countdown=61)
    later = datetime.now(UTC) + timedelta(seconds=120)
    with pytest.raises(ValueError, match="CELERY_MAX_COUNTDOWN"):
        amqp.as_task_v2("id-3", "tutorial.send_email", eta=later)


def test_equip_refuses_an_unsafe_configuration(
    user_app: Celery, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(BROKER_URL, "rediss://broker.example:6379/0")
    with pytest.raises(ConfigError, match="ssl_cert_reqs=required"):
        celery_ecs.equip(user_app)
    with pytest.raises(LookupError, match=r"not given to celery_ecs\.equip"):
        celery_ecs.settings_of(user_app)


def test_equip_too_late_is_refused(user_app: Celery) -> None:
    """Once the app made its task class, tasks would not get the requeue: say so."""
    user_app.finalize()  # creates app.Task, as the first use of a task does
    with pytest.raises(RuntimeError, match="comes too late: the app already created its Task"):
        celery_ecs.equip(user_app)


class LoaderAtConstruction:
    """A fix-up that patches the app's loader when the app is created, as Celery's Django
    fix-up does (celery/fixups/django.py: ``self.app.loader.now = ...``) whenever
    ``DJANGO_SETTINGS_MODULE`` is set."""

    def __init__(self, app: Celery) -> None:
        app.loader.now = lambda utc=True: datetime.now(UTC)  # type: ignore[method-assign]


def test_a_loader_a_fixup_created_at_construction_gets_the_runtime_s_backends(
    broker_env: None,
) -> None:
    """A Django project's app (Celery's "First steps with Django") has its loader before any
    line of the project runs: equip keeps it, with the fix-up's patch, and adds the backends."""
    app = Celery("proj", fixups=[f"{__name__}:LoaderAtConstruction"], set_as_current=False)
    patched = app.loader
    celery_ecs.equip(app)
    assert app.loader is patched and callable(patched.now)
    assert patched.override_backends == {
        "redis": "celery_ecs.results:ResultBackend", "rediss": "celery_ecs.results:ResultBackend"
    }  # fmt: skip
    assert app.loader_cls is ResultBackendLoader  # what a process unpickling the app creates


def test_an_apps_own_task_class_gets_the_runtimes_in_front(broker_env: None) -> None:
    """As Celery's Django fix-up sets ``DjangoTask``: the app's class keeps its methods, and a
    broker outage in a task still requeues it (the runtime's ``__call__`` comes first)."""

    class OwnTask(Task):  # type: ignore[type-arg]
        def on_commit(self) -> str:
            return "own"

    own = Celery("own", task_cls=OwnTask, set_as_current=False)
    celery_ecs.equip(own)

    @own.task(shared=False)
    def lost_broker() -> None:
        raise redis.ConnectionError("gone")

    assert issubclass(own.Task, OwnTask) and issubclass(own.Task, celery_ecs.RequeueOnBrokerOutage)
    order = own.Task.__mro__
    assert order.index(celery_ecs.RequeueOnBrokerOutage) < order.index(OwnTask)
    assert lost_broker.on_commit() == "own"
    with pytest.raises(Reject):
        lost_broker()
    with pytest.raises(TypeError, match=r"task class .* is not a Celery Task class"):
        celery_ecs.equip(Celery("not-a-task", task_cls=dict, set_as_current=False))


def test_a_factory_or_loader_of_the_apps_own_must_derive_from_the_runtimes(
    broker_env: None,
) -> None:
    class OwnRequeueTask(celery_ecs.RequeueOnBrokerOutage):
        pass

    with pytest.raises(TypeError, match=r"amqp class .* derive it from .*LimitedDelayAmqp"):
        celery_ecs.equip(Celery("own", amqp=type("OwnAmqp", (AMQP,), {}), set_as_current=False))

    kept = Celery("own", task_cls=OwnRequeueTask, set_as_current=False)
    celery_ecs.equip(kept)
    assert issubclass(kept.Task, OwnRequeueTask)


def test_a_worker_refuses_a_task_whose_base_lacks_the_requeue(user_app: Celery) -> None:
    celery_ecs.equip(user_app)

    class PlainBase(Task):  # type: ignore[type-arg]
        pass

    class RequeueBase(celery_ecs.RequeueOnBrokerOutage):
        pass

    @user_app.task(name="tutorial.with_base", base=RequeueBase, shared=False)
    def with_base() -> None:
        return None

    worker = SimpleNamespace(app=user_app)
    runtime.TaskClassCheck(worker)  # every task has it so far: the worker starts

    @user_app.task(name="tutorial.plain_base", base=PlainBase, shared=False)
    def plain_base() -> None:
        return None

    with pytest.raises(RuntimeError, match=r"tutorial\.plain_base: their base class does not"):
        runtime.TaskClassCheck(worker)


def test_signals_leave_an_app_that_was_not_equipped_alone(user_app: Celery) -> None:
    plain = Celery("plain", set_as_current=False)
    worker = SimpleNamespace(app=plain)
    conf = SimpleNamespace(broker_transport_options={})

    runtime.keys_of_equipped_worker(sender="w@h", instance=worker, conf=conf)
    assert conf.broker_transport_options == {} and not hasattr(worker, "liveness")

    celery_ecs.equip(user_app)
    equipped = SimpleNamespace(app=user_app)
    runtime.keys_of_equipped_worker(sender="w@h", instance=equipped, conf=conf)
    assert conf.broker_transport_options["unacked_key"].startswith("unacked:default:w@h")
    assert equipped.liveness.keys.lease.startswith("liveness:default:w@h")


def test_every_public_name_resolves_and_says_what_it_is() -> None:
    for name in celery_ecs.__all__:
        value = getattr(celery_ecs, name)
        if name in ("__version__", "BROKER_OUTAGE_ERRORS"):
            continue
        assert (value.__doc__ or "").strip(), f"celery_ecs.{name} has no docstring"
    assert celery_ecs.__version__ == "0.1.0"
    with pytest.raises(AttributeError, match="no attribute 'transport_internals'"):
        _ = celery_ecs.transport_internals


def imports_of(path: Path) -> Iterator[tuple[str, str | None, int]]:
    """(module, imported name or None, line) of every ``celery_ecs`` import in ``path``."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "celery_ecs":
                    yield alias.name, None, node.lineno
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "celery_ecs":
            for alias in node.names:
                yield node.module or "", alias.name, node.lineno


def test_the_example_app_uses_only_public_names() -> None:
    """``app/`` is an example of a user's app: it may use ``celery_ecs``'s ``__all__`` and its
    public modules, nothing the package may change between releases."""
    private = []
    for path in sorted((ROOT / "app").glob("*.py")):
        for module, name, line in imports_of(path):
            submodule = f"{module}.{name}" if name else module
            if module == "celery_ecs" and name is not None and name not in celery_ecs.__all__:
                if submodule not in PUBLIC_MODULES:
                    private.append(f"{path.name}:{line} {submodule}")
            elif module != "celery_ecs" and module not in PUBLIC_MODULES:
                private.append(f"{path.name}:{line} {module}")
    assert not private, f"app/ imports private runtime names: {private}"


def test_the_check_catches_a_private_import(tmp_path: Path) -> None:
    example = tmp_path / "example.py"
    example.write_text(
        "import celery_ecs\nfrom celery_ecs.runtime import settings_of\n"
        "from celery_ecs import transport, names, equip\n"
    )
    found = [(m, n) for m, n, _ in imports_of(example)]
    assert found == [
        ("celery_ecs", None), ("celery_ecs.runtime", "settings_of"),
        ("celery_ecs", "transport"), ("celery_ecs", "names"), ("celery_ecs", "equip"),
    ]  # fmt: skip
    public = {"celery_ecs", "celery_ecs.names"} | {f"celery_ecs.{n}" for n in celery_ecs.__all__}
    assert {f"{m}.{n}" if n else m for m, n in found} - public - PUBLIC_MODULES == {
        "celery_ecs.runtime.settings_of", "celery_ecs.transport",
    }  # fmt: skip


@pytest.mark.redis
def test_the_package_imports_without_celery_until_a_name_needs_it() -> None:
    """The Pulumi program's virtualenv holds no Celery: ``import celery_ecs`` and its contract
    modules must not import it; ``celery_ecs.equip`` loads it on first use."""
    code = (
        "import sys, celery_ecs, celery_ecs.settings, celery_ecs.names, celery_ecs.schedule\n"
        "print('celery' in sys.modules, end=' ')\n"
        "celery_ecs.equip\n"
        "print('celery' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.stdout == "False True\n", result.stderr


def test_runtime_classes_plugged_in_by_hand_read_the_environment(
    broker_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Celery's own suites get the runtime by module path, not through ``equip``
    (``devtools.upstream``): its classes then read the settings from the environment."""
    monkeypatch.setenv(MAX_COUNTDOWN, "30")
    app = Celery("by-hand", amqp="celery_ecs.runtime:LimitedDelayAmqp", set_as_current=False)

    with pytest.raises(ValueError, match="exceeds CELERY_MAX_COUNTDOWN=30s"):
        app.amqp.as_task_v2("id-1", "t", countdown=31)
    with pytest.raises(LookupError):  # still not equipped: equip's own checks never ran
        celery_ecs.settings_of(app)
    worker = SimpleNamespace(app=app)
    conf = SimpleNamespace(broker_transport_options={})
    runtime.keys_of_this_worker(sender="w@h", instance=worker, conf=conf)
    assert conf.broker_transport_options["unacked_key"].startswith("unacked:default:w@h")
