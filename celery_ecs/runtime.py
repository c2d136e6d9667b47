"""The one Celery app: the ``-A`` target of the worker, beat, the web and the enqueue command.

Configured only from environment variables (``app.settings``). An unsafe configuration is
refused here, at import, before any process connects to anything.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import redis
from celery import Celery, Task, bootsteps, signals
from celery._state import (  # type: ignore[attr-defined]  # private (see publish_only): no stub
    _set_task_join_will_block,
)
from celery.app import trace
from celery.app.amqp import AMQP
from celery.exceptions import Reject
from celery.schedules import crontab, schedule
from kombu import Exchange, Queue
from kombu.exceptions import OperationalError

from app import routing
from app.consumer import BoundedPrefetch, RestoreLostDeliveries
from app.health import HeartbeatFile
from app.liveness import ConsumerLiveness, Deadlines, Lease, LivenessStep, WorkerKeys
from app.metrics import QueueMetricsStep, stamp_published_at
from app.protection import TaskProtectionStep
from app.recovery import RestoreGoneWorkers, UnackedSweepStep
from app.results import ResultBackendLoader
from app.revokes import LoadRevokes  # also replaces Celery's revoke and terminate commands
from app.schedule import SCHEDULE, Cron, Every, PeriodicEntry
from app.settings import Settings

settings = Settings.from_env()

#: What a task gets when Redis (the broker, result backend and the example tasks' store) is
#: unreachable: a restart, failover or network blip, not a bug in the task.
BROKER_OUTAGE_ERRORS = (redis.ConnectionError, redis.TimeoutError, OperationalError)

if TYPE_CHECKING:
    # celery-types makes Task generic (arguments, result); Celery's class cannot be subscripted.
    AnyTask = Task[Any, Any]
else:
    AnyTask = Task


class RequeueOnBrokerOutage(AnyTask):
    """Every task of the app: one that fails because Redis is unreachable goes back on its queue.

    Celery acknowledges a late-acknowledged message whose task raised, so the task would end as
    FAILURE and its message would be gone. Rejecting it with ``requeue`` keeps the message: put
    back now if Redis answers again, otherwise left unacknowledged for the worker to restore
    once it reconnects (``app.consumer``). Tasks are idempotent, so running again is safe.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except BROKER_OUTAGE_ERRORS as error:
            raise Reject(f"Redis unreachable ({error!r}): requeued", requeue=True) from error


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
        if delay > settings.max_countdown:
            raise ValueError(
                f"{name}: a countdown of {delay:.0f}s exceeds CELERY_MAX_COUNTDOWN="
                f"{settings.max_countdown}s (the visibility timeout is sized for it)"
            )
        # Celery takes the ETA as an ISO string too (passed through as is); celery-types says
        # datetime only.
        message = super().as_task_v2(
            task_id, name, args, kwargs, countdown, eta, *more, **options  # type: ignore[arg-type]
        )
        # Every message carries its publish time: the queue-age metric reads it (app.metrics).
        stamp_published_at(message.headers, time.time())
        return message


app = Celery(
    "celery_ecs",
    include=["app.tasks"],
    task_cls=RequeueOnBrokerOutage,
    amqp=LimitedDelayAmqp,
    # redis:// and rediss:// result backends are app.results.ResultBackend.
    loader=ResultBackendLoader,
)
app.conf.update(settings.celery_config())
app.conf.update(
    task_queues=[Queue(name, Exchange(name), routing_key=name) for name in routing.QUEUES],
    task_default_queue=routing.DEFAULT_QUEUE,
    task_routes={task: {"queue": queue} for task, queue in routing.ROUTES.items()},
    # Beat keeps its schedule state and a lock in Redis (celery-redbeat): a replaced beat task
    # resumes where the old one stopped, and a second beat blocks on the lock instead of sending.
    # Survives broker restarts without losing tasks or exiting (see app.consumer).
    worker_consumer="app.consumer:Consumer",
    beat_scheduler="app.beat:HeartbeatRedBeatScheduler",
    beat_max_loop_interval=5,
    redbeat_lock_timeout=30,
)


def publish_only() -> None:
    """Declare that this process publishes tasks but never waits on their results.

    Told so, Celery's Redis result backend skips subscribing to each published task's result
    channel (a SUBSCRIBE and UNSUBSCRIBE per publish on one more connection). With Redis
    unreachable that subscription retries for about 20 s and then raises "must be restarted",
    bypassing the caller's own bounded retries. The web, beat and the enqueue command call this;
    Celery's prefork pool sets the same (private) flag in its child processes.
    """
    _set_task_join_will_block(True)


@signals.beat_init.connect
def beat_publishes_only(**_: Any) -> None:
    publish_only()


@signals.celeryd_init.connect
def keys_of_this_worker(sender: str, instance: Any, conf: Any, **_: Any) -> None:
    """Give this worker process keys of its own (``app.liveness``) before anything connects.

    ``sender`` is the worker's hostname; the keys add a random part, so two processes never
    share them, whatever their hostnames.
    """
    keys = WorkerKeys.new(settings.worker_pool, sender)
    conf.broker_transport_options = {**conf.broker_transport_options, **keys.transport_options()}
    instance.liveness = Lease(keys, Deadlines(settings.liveness_timeout))


@signals.worker_init.connect
def bound_what_this_worker_holds(sender: Any, **_: Any) -> None:
    """Set Celery's ``worker_eta_task_limit`` for this worker's pool size before its consumer
    starts: the most messages it may hold (``Settings.eta_task_limit``), which the visibility
    timeout is sized for (``infra.budget.WorkerBudget.longest_unacked``). Without it Celery
    raises the prefetch count for every countdown/ETA message and a worker holds any number."""
    sender.app.conf.worker_eta_task_limit = settings.eta_task_limit(sender.concurrency)


#: Seconds between heartbeats of the worker and beat (see ``app.health``).
HEARTBEAT_INTERVAL = 10.0


def celery_schedule(entry: PeriodicEntry) -> Any:
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


app.conf.beat_schedule = {
    entry.name: {
        "task": entry.task,
        "schedule": celery_schedule(entry),
        "args": entry.args,
        "kwargs": entry.kwargs,
        # Nobody learns the ids of what beat sends, so nobody could read their results.
        "options": {"queue": entry.queue, "ignore_result": True},
    }
    for entry in SCHEDULE
}
app.conf.update(timezone="UTC", enable_utc=True)


class WorkerHeartbeat(bootsteps.StartStopStep):
    """Touches the worker's heartbeat file while its consumer runs.

    The timer fires from the worker's event loop, so a blocked main process or a consumer that
    lost the broker (the step is stopped until it reconnects) lets the file go stale, and the
    container health check (``python -m app.health worker``) fails without asking the broker or
    any other worker.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.tref: Any = None
        self.heartbeat = HeartbeatFile("worker", settings.heartbeat_dir)

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


app.steps["consumer"].add(WorkerHeartbeat)
app.steps["consumer"].add(ConsumerLiveness)
app.steps["consumer"].add(BoundedPrefetch)
app.steps["consumer"].add(RestoreLostDeliveries)
app.steps["consumer"].add(RestoreGoneWorkers)
app.steps["consumer"].add(LoadRevokes)
app.steps["worker"].add(LivenessStep)
app.steps["worker"].add(UnackedSweepStep)
if settings.task_protection:
    app.steps["worker"].add(TaskProtectionStep)
if settings.metrics_namespace:
    app.steps["worker"].add(QueueMetricsStep)


class PerTaskLines(logging.Filter):
    """Drops Celery's "Task … received" and "Task … succeeded" lines (APP_LOG_TASKS=false).

    Two lines per task cost about 15 % of a short task's CPU in the worker (measured with
    ``bench.worker_budget``) and two log events each; Celery's defaults log neither.
    """

    LINES = (trace.LOG_RECEIVED, trace.LOG_SUCCESS)

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self.LINES


@signals.setup_logging.connect
def configure_logging(**_: Any) -> None:
    """One log format and level (APP_LOG_LEVEL) for every process."""
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s",
        force=True,
    )
    if not settings.log_tasks:
        for name in ("celery.worker.strategy", "celery.app.trace"):
            logging.getLogger(name).addFilter(PerTaskLines())
