"""The runtime's wiring into a Celery app: ``equip(app)`` (public as ``celery_ecs.equip``).

Configured only from environment variables (``celery_ecs.settings``). An unsafe configuration
is refused by ``equip``, that is when the module defining the app is imported, before any
process connects to anything.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from functools import partial
from types import CodeType, FunctionType
from typing import TYPE_CHECKING, Any, TypeVar, cast
from weakref import WeakKeyDictionary

import redis
from celery import Celery, Task, bootsteps, signals
from celery._state import (  # type: ignore[attr-defined]  # private (see publish_only): no stub
    _set_task_join_will_block,
)
from celery.app import trace
from celery.app.amqp import AMQP
from celery.exceptions import Reject
from celery.loaders import get_loader_cls
from celery.loaders.app import AppLoader
from celery.schedules import crontab, schedule
from celery.worker import strategy
from kombu.exceptions import OperationalError
from kombu.utils.imports import symbol_by_name

from celery_ecs.consumer import BoundedPrefetch, RestoreLostDeliveries
from celery_ecs.health import HeartbeatFile
from celery_ecs.liveness import ConsumerLiveness, Deadlines, Lease, LivenessStep, WorkerKeys
from celery_ecs.metrics import QueueMetricsStep, stamp_published_at
from celery_ecs.protection import TaskProtectionStep
from celery_ecs.recovery import RestoreGoneWorkers, UnackedSweepStep
from celery_ecs.results import ResultBackendLoader
from celery_ecs.revokes import LoadRevokes  # also replaces Celery's revoke and terminate commands
from celery_ecs.schedule import Cron, Every, PeriodicEntry
from celery_ecs.settings import Settings

#: What a task gets when Redis (the broker, the result backend, or a store on the same Redis) is
#: unreachable: a restart, failover or network blip, not a bug in the task.
BROKER_OUTAGE_ERRORS = (redis.ConnectionError, redis.TimeoutError, OperationalError)

#: Seconds between heartbeats of the worker and beat (see ``celery_ecs.health``).
HEARTBEAT_INTERVAL = 10.0

#: The settings each equipped app was given (``settings_of``). Weak: an app dropped by a test
#: takes its entry with it.
_EQUIPPED: WeakKeyDictionary[Celery, Settings] = WeakKeyDictionary()
#: The settings of apps given the runtime's classes by hand, by module path (Celery's own
#: suites on the runtime: ``devtools.upstream``), read from the environment once each.
_BY_HAND: WeakKeyDictionary[Celery, Settings] = WeakKeyDictionary()

if TYPE_CHECKING:
    # celery-types makes Task generic (arguments, result); Celery's class cannot be subscripted.
    AnyTask = Task[Any, Any]
else:
    AnyTask = Task


class RequeueOnBrokerOutage(AnyTask):
    """The base of every task of an equipped app: a task that fails because Redis is unreachable
    goes back on its queue.

    Celery acknowledges a late-acknowledged message whose task raised, so the task would end as
    FAILURE and its message would be gone. Rejecting it with ``requeue`` keeps the message: put
    back now if Redis answers again, otherwise left unacknowledged for the worker to restore
    once it reconnects (``celery_ecs.consumer``). Tasks must be idempotent, so running again is
    safe.

    ``equip`` makes it the app's task class. A task declared with a base class of its own
    (``@app.task(base=MyTask)``) needs it too: ``class MyTask(RequeueOnBrokerOutage): ...``. A
    worker refuses to start with a task that lacks it (``TaskClassCheck``).
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except BROKER_OUTAGE_ERRORS as error:
            raise Reject(f"Redis unreachable ({error!r}): requeued", requeue=True) from error

    # The task's tracer, which Celery builds and sets here in a worker (celery_ecs.upstream:
    # Task.__trace__), given without its "succeeded" line while PerTaskLines drops it anyway.
    @property
    def __trace__(self) -> Any:
        return self.__dict__.get("_celery_ecs_tracer")

    @__trace__.setter
    def __trace__(self, tracer: Any) -> None:
        self.__dict__["_celery_ecs_tracer"] = without_per_task_line(tracer)

    def start_strategy(self, app: Any, consumer: Any, **kwargs: Any) -> Any:
        """Celery's handler of this task's messages in the worker, without its "received" line
        while PerTaskLines drops it anyway."""
        return without_per_task_line(super().start_strategy(app, consumer, **kwargs))


class LimitedDelayAmqp(AMQP):
    """Celery's message factory, refusing a countdown or ETA beyond CELERY_MAX_COUNTDOWN.

    A message waiting for its ETA stays unacknowledged in a worker; past the visibility timeout
    Redis would deliver it a second time, and the budget sizes that timeout for this limit.
    Every publish (``apply_async``, ``send_task``, retries, beat) builds its message here; a
    ``before_task_publish`` receiver could not refuse anything, as Celery logs and swallows
    receivers' exceptions.
    """

    def as_task_v2(
        self,
        task_id: str,
        name: str,
        args: Any = None,
        kwargs: Any = None,
        countdown: float | None = None,
        eta: datetime | str | None = None,
        *more: Any,
        **options: Any,
    ) -> Any:
        if countdown:
            delay = float(countdown)
        elif eta:
            when = datetime.fromisoformat(eta) if isinstance(eta, str) else eta
            when = when if when.tzinfo else when.replace(tzinfo=UTC)
            delay = (when - datetime.now(UTC)).total_seconds()
        else:
            delay = 0.0
        max_countdown = runtime_settings(self.app).max_countdown
        if delay > max_countdown:
            raise ValueError(
                f"{name}: a countdown of {delay:.0f}s exceeds CELERY_MAX_COUNTDOWN="
                f"{max_countdown}s (the visibility timeout is sized for it)"
            )
        # Celery takes the ETA as an ISO string too (passed through as is); celery-types says
        # datetime only.
        message = super().as_task_v2(
            task_id, name, args, kwargs, countdown, eta, *more, **options  # type: ignore[arg-type]
        )
        # Every message carries its publish time: the queue-age metric reads it
        # (celery_ecs.metrics).
        stamp_published_at(message.headers, time.time())
        return message


def settings_of(app: Celery) -> Settings:
    """The settings ``equip`` read for ``app``; ``LookupError`` if it was not equipped."""
    try:
        return _EQUIPPED[app]
    except KeyError:
        raise LookupError(
            f"the Celery app {app.main!r} was not given to celery_ecs.equip"
        ) from None


def runtime_settings(app: Celery) -> Settings:
    """The settings the runtime's classes and bootsteps use in ``app``: those ``equip`` read,
    or, for an app given them by hand, the environment's (read once per app)."""
    settings = _EQUIPPED.get(app) or _BY_HAND.get(app)
    if settings is None:
        settings = _BY_HAND[app] = Settings.from_env()
    return settings


def publish_only() -> None:
    """Declare that this process publishes tasks but never waits on their results.

    Told so, Celery's Redis result backend skips subscribing to each published task's result
    channel (a SUBSCRIBE and UNSUBSCRIBE per publish on one more connection). With Redis
    unreachable that subscription retries for about 20 s and then raises "must be restarted",
    bypassing the caller's own bounded retries. A web process (after its fork) and any other
    producer that never calls ``AsyncResult.get()`` calls this; beat and the enqueue command do
    it themselves, and Celery's prefork pool sets the same (private) flag in its children.
    """
    _set_task_join_will_block(True)


def beat_publishes_only(sender: Any, **_: Any) -> None:
    """Beat of an equipped app never waits on results (``beat_init``)."""
    if sender.app in _EQUIPPED:
        publish_only()


def keys_of_equipped_worker(sender: str, instance: Any, conf: Any, **_: Any) -> None:
    """``keys_of_this_worker`` at ``celeryd_init``, for a worker of an equipped app only."""
    if instance.app in _EQUIPPED:
        keys_of_this_worker(sender, instance, conf)


def keys_of_this_worker(sender: str, instance: Any, conf: Any, **_: Any) -> None:
    """Give this worker process keys of its own (``celery_ecs.liveness``) before anything
    connects.

    ``sender`` is the worker's hostname; the keys add a random part, so two processes never
    share them, whatever their hostnames.
    """
    settings = runtime_settings(instance.app)
    keys = WorkerKeys.new(settings.worker_pool, sender)
    conf.broker_transport_options = {**conf.broker_transport_options, **keys.transport_options()}
    instance.liveness = Lease(keys, Deadlines(settings.liveness_timeout))


def bound_what_this_worker_holds(sender: Any, **_: Any) -> None:
    """Set Celery's ``worker_eta_task_limit`` for this worker's pool size before its consumer
    starts (``worker_init``): the most messages it may hold (``Settings.eta_task_limit``),
    which the visibility timeout is sized for (``infra.budget.WorkerBudget.longest_unacked``).
    Without it Celery raises the prefetch count for every countdown/ETA message and a worker
    holds any number."""
    settings = _EQUIPPED.get(sender.app)
    if settings is not None:
        sender.app.conf.worker_eta_task_limit = settings.eta_task_limit(sender.concurrency)


def celery_schedule(entry: PeriodicEntry) -> Any:
    """The Celery schedule (``schedule`` or ``crontab``) of one entry."""
    spec = entry.schedule
    if isinstance(spec, Every):
        return schedule(run_every=spec.seconds)
    if isinstance(spec, Cron):
        return crontab(
            minute=spec.minute,
            hour=spec.hour,
            day_of_month=spec.day_of_month,
            month_of_year=spec.month_of_year,
            day_of_week=spec.day_of_week,
        )
    raise TypeError(f"{entry.name}: unknown schedule {spec!r}")


def beat_schedule(entries: Iterable[PeriodicEntry]) -> dict[str, dict[str, Any]]:
    """Celery's ``beat_schedule`` for ``entries`` (beat's, from ``CELERY_BEAT_SCHEDULE_JSON``)."""
    return {
        entry.name: {
            "task": entry.task,
            "schedule": celery_schedule(entry),
            "args": entry.args,
            "kwargs": entry.kwargs,
            # Nobody learns the ids of what beat sends, so nobody could read their results.
            "options": {"queue": entry.queue, "ignore_result": True},
        }
        for entry in entries
    }


class WorkerHeartbeat(bootsteps.StartStopStep):
    """Touches the worker's heartbeat file while its consumer runs.

    The timer fires from the worker's event loop, so a blocked main process or a consumer that
    lost the broker (the step is stopped until it reconnects) lets the file go stale, and the
    container health check (``celery-ecs-health worker``) fails without asking the broker or
    any other worker.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.tref: Any = None
        self.heartbeat = HeartbeatFile("worker", runtime_settings(parent.app).heartbeat_dir)

    def start(self, parent: Any) -> None:
        self.heartbeat.touch()
        self.tref = parent.timer.call_repeatedly(HEARTBEAT_INTERVAL, self.heartbeat.touch)

    def stop(self, parent: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None

    def shutdown(self, parent: Any) -> None:
        self.stop(parent)
        self.heartbeat.remove()


class TaskClassCheck(bootsteps.Step):
    """Worker bootstep: refuses to start a worker with a task that would lose its message when
    Redis is unreachable, one whose class does not derive from ``RequeueOnBrokerOutage`` (a task
    declared with a ``base=`` of its own). Celery's own tasks (``celery.*``) are left out.

    A bootstep, not a signal receiver: Celery logs and swallows a receiver's exception.
    """

    label = "Task class check"

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        lacking = sorted(
            name
            for name, task in parent.app.tasks.items()
            if not name.startswith("celery.") and not isinstance(task, RequeueOnBrokerOutage)
        )
        if lacking:
            raise RuntimeError(
                f"task(s) {', '.join(lacking)}: their base class does not derive from "
                "celery_ecs.RequeueOnBrokerOutage, so a run that finds Redis unreachable would "
                "lose its message; declare the base class as "
                "class MyTask(celery_ecs.RequeueOnBrokerOutage): ..."
            )


class PerTaskLines(logging.Filter):
    """Drops Celery's "Task … received" and "Task … succeeded" lines (APP_LOG_TASKS=false).

    Two lines per task cost about 15 % of a short task's CPU in the worker (measured with
    ``bench.worker_budget``) and two log events each; Celery's defaults log neither. The lines
    are not even built (``without_per_task_line``) by the closures Celery makes after this
    filter is on their logger: what it catches is what Celery logs otherwise.
    """

    LINES = (trace.LOG_RECEIVED, trace.LOG_SUCCESS)
    #: The loggers of the two lines.
    LOGGERS = ("celery.worker.strategy", "celery.app.trace")

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self.LINES

    @classmethod
    def on(cls, logger: str) -> bool:
        """Whether one is on the logger ``logger``: its per-task line would be dropped."""
        return any(isinstance(each, cls) for each in logging.getLogger(logger).filters)


def _closure_code(builder: Any, closure: str) -> CodeType | None:
    """The code of the function named ``closure`` that ``builder`` makes and returns, if it
    reads the free variable ``_does_info``; else None (a Celery that changed: nothing is done)."""
    for constant in builder.__code__.co_consts:
        if (isinstance(constant, CodeType) and constant.co_name == closure
                and "_does_info" in constant.co_freevars):  # fmt: skip
            return constant
    return None


#: The code of Celery's two closures that log a line per task, with the logger of that line
#: (celery_ecs.upstream): the tracer (``build_tracer``'s ``trace_task``, "Task … succeeded",
#: in the pool) and the default strategy's message handler (``task_message_handler``,
#: "Task … received", in the worker's main process). Both read the free variable
#: ``_does_info`` (``logger.isEnabledFor(INFO)`` when they were made) only to log that line.
PER_TASK_LINE_CLOSURES = {
    code: logger
    for code, logger in (
        (_closure_code(trace.build_tracer, "trace_task"), "celery.app.trace"),
        (_closure_code(strategy.default, "task_message_handler"), "celery.worker.strategy"),
    )
    if code is not None
}

_Function = TypeVar("_Function")


def without_per_task_line(function: _Function) -> _Function:
    """``function``; if it is one of Celery's closures that log a line per task
    (``PER_TASK_LINE_CLOSURES``) and ``PerTaskLines`` is on that line's logger, which would
    drop the line, with its ``_does_info`` set False: the line is no longer built (its
    context, the arguments' repr, the LogRecord and its caller lookup), every other line of
    the logger is logged as before (retries, ignored, expected failures...).

    Only that closure changes (its own cell, made for it by Celery): a tracer or handler built
    without the filter, or any other function, is returned untouched."""
    code = getattr(function, "__code__", None)
    logger = PER_TASK_LINE_CLOSURES.get(code) if isinstance(code, CodeType) else None
    if logger is not None and PerTaskLines.on(logger):
        cells = cast(FunctionType, function).__closure__ or ()
        cells[cast(CodeType, code).co_freevars.index("_does_info")].cell_contents = False
    return function


def configure_logging(settings: Settings | None = None, **_: Any) -> None:
    """One log format and level (APP_LOG_LEVEL) for every process: Celery's ``setup_logging``
    (connected by ``equip``), and the gunicorn workers (``celery_ecs.gunicorn_conf``)."""
    settings = settings or Settings.from_env()
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
        force=True,
    )
    if not settings.log_tasks:
        for name in PerTaskLines.LOGGERS:
            logging.getLogger(name).addFilter(PerTaskLines())


def _replace_default(app: Celery, what: str, current: Any, default: type, ours: type) -> type:
    """``ours`` if the app's ``what`` class is Celery's default (or already derives from
    ``ours``); otherwise the app chose a class of its own, which would silently drop ours."""
    chosen = symbol_by_name(current) if isinstance(current, str) else current
    if isinstance(chosen, type) and issubclass(chosen, ours):
        return chosen
    if chosen is default:
        return ours
    raise TypeError(
        f"celery_ecs.equip({app.main!r}): the app's {what} {chosen!r} is not Celery's default; "
        f"derive it from {ours.__module__}.{ours.__qualname__} so the runtime keeps its behaviour"
    )


def _with_requeue(app: Celery, current: Any) -> type:
    """The app's task class with ``RequeueOnBrokerOutage`` in front of it: Celery's default
    gives ours; a class of the app's own (``Celery(task_cls=...)``, or the ``DjangoTask`` that
    Celery's Django fix-up sets, celery/fixups/django.py) keeps its methods and gets ours around
    ``__call__``, so no app has to know the runtime's class to keep its behaviour."""
    chosen = symbol_by_name(current) if isinstance(current, str) else current
    if not (isinstance(chosen, type) and issubclass(chosen, Task)):
        raise TypeError(f"celery_ecs.equip({app.main!r}): the app's task class {chosen!r} is "
                        "not a Celery Task class")  # fmt: skip
    if chosen is Task or issubclass(chosen, RequeueOnBrokerOutage):
        return RequeueOnBrokerOutage if chosen is Task else chosen
    # celery-types types a Task class's __name__ as its instances' name attribute.
    name = cast(str, chosen.__name__)
    namespace: dict[str, Any] = {"__module__": chosen.__module__, "__doc__": chosen.__doc__,
                                 "__qualname__": chosen.__qualname__}  # fmt: skip
    composed: type = type(name, (RequeueOnBrokerOutage, chosen), namespace)
    return composed


def equip(app: Celery) -> Settings:
    """Give ``app`` the runtime; returns the settings read from the environment.

    Call it once, where the app is defined, after its own configuration
    (``config_from_object``...) and before anything uses it (its tasks may be declared before
    or after: Celery creates them lazily). It:

    - reads and checks ``Settings.from_env()`` (``celery_ecs.settings``; ``ConfigError`` names
      the variable of an unsafe configuration) and applies ``Settings.celery_config()``: the
      Redis transport (``celery_ecs.transport``), late acknowledgement, JSON only, the time
      limits and the visibility timeout. These override the app's own values;
    - makes ``RequeueOnBrokerOutage`` the task class, ``LimitedDelayAmqp`` the message factory
      (countdowns up to ``CELERY_MAX_COUNTDOWN`` seconds) and ``ResultBackendLoader`` the loader
      (``redis://``/``rediss://`` result backends store each state atomically). An app's own
      task class (Django's ``DjangoTask`` included) gets ours in front of it; an app given a
      message factory or loader of its own must derive it from ours (``TypeError`` otherwise);
    - sets the worker's consumer (``celery_ecs.consumer``), its bootsteps (heartbeat file
      every ``HEARTBEAT_INTERVAL`` s, liveness, bounded prefetch, restores, revokes, the
      visibility sweep; ECS task protection with ``CELERY_TASK_PROTECTION``, queue metrics
      with ``CELERY_METRICS_NAMESPACE``) and beat's scheduler (celery-redbeat with a heartbeat);
    - connects the signals: each worker's keys and lease, its held-message limit, beat
      publishing without result subscriptions, and one log format at ``APP_LOG_LEVEL``.

    The periodic entries are the stack's (its ``schedule`` key): beat reads them from
    ``CELERY_BEAT_SCHEDULE_JSON`` when it starts (``celery_ecs.beat``), next to any
    ``beat_schedule`` the app sets itself.

    Raises ``RuntimeError`` if the app already created its task class (``app.Task``), its
    message factory or its loader: they could no longer be replaced.
    """
    created = [name for name in ("Task", "amqp", "loader") if name in vars(app)]
    if created == ["loader"] and type(vars(app)["loader"]) is AppLoader:
        # Celery's Django fix-up (celery/fixups/django.py, run by Celery() when
        # DJANGO_SETTINGS_MODULE is set, as "First steps with Django" sets it) creates the
        # default loader at construction and patches it: keep that instance, give it our
        # backends; processes that unpickle the app create ours (loader_cls, below).
        vars(app)["loader"].override_backends = ResultBackendLoader.override_backends_of()
        created = []
    if created:
        raise RuntimeError(
            f"celery_ecs.equip({app.main!r}) comes too late: the app already created its "
            f"{', '.join(created)}; call it right after the app's own configuration, before "
            "anything uses the app"
        )
    settings = Settings.from_env()
    task_cls = _with_requeue(app, app.task_cls)
    amqp_cls = _replace_default(app, "amqp class", app.amqp_cls, AMQP, LimitedDelayAmqp)
    loader_cls = _replace_default(
        app, "loader", get_loader_cls(app.loader_cls or "app"), AppLoader, ResultBackendLoader
    )
    # celery-types has these as strings; Celery takes a class as well (its constructor's
    # task_cls, amqp and loader arguments: celery/app/base.py).
    app.task_cls = task_cls  # type: ignore[assignment]
    app.amqp_cls = amqp_cls  # type: ignore[assignment]
    app.loader_cls = loader_cls  # type: ignore[assignment]
    app.conf.update(settings.celery_config())
    app.conf.update(
        # Beat keeps its schedule state and a lock in Redis (celery-redbeat): a replaced beat
        # task resumes where the old one stopped, and a second beat blocks on the lock instead
        # of sending. Survives broker restarts without losing tasks or exiting
        # (see celery_ecs.consumer).
        worker_consumer="celery_ecs.consumer:Consumer",
        beat_scheduler="celery_ecs.beat:HeartbeatRedBeatScheduler",
        beat_max_loop_interval=5,
        redbeat_lock_timeout=30,
        timezone="UTC",
        enable_utc=True,
    )
    _EQUIPPED[app] = settings

    app.steps["consumer"].update(
        {
            WorkerHeartbeat,
            ConsumerLiveness,
            BoundedPrefetch,
            RestoreLostDeliveries,
            RestoreGoneWorkers,
            LoadRevokes,
        }
    )
    app.steps["worker"].update({TaskClassCheck, LivenessStep, UnackedSweepStep})
    if settings.task_protection:
        app.steps["worker"].add(TaskProtectionStep)
    if settings.metrics_namespace:
        app.steps["worker"].add(QueueMetricsStep)

    # Receivers of every app in the process: each finds its app's settings (or none).
    signals.beat_init.connect(beat_publishes_only, dispatch_uid="celery_ecs.beat_init")
    signals.celeryd_init.connect(keys_of_equipped_worker, dispatch_uid="celery_ecs.celeryd_init")
    signals.worker_init.connect(bound_what_this_worker_holds, dispatch_uid="celery_ecs.worker_init")
    # Any receiver replaces Celery's own logging setup: connected only for an equipped app.
    signals.setup_logging.connect(
        partial(configure_logging, settings), weak=False, dispatch_uid="celery_ecs.setup_logging"
    )
    return settings
