"""Enqueue one task and exit: what an EventBridge schedule runs instead of beat.

    celery-ecs-enqueue app.tasks.nightly_report --queue default --name nightly-report \
        --slot 2026-11-24T02:30:00Z
    celery-ecs-enqueue app.tasks.noop [--args '[1]'] [--kwargs '{"a": 1}'] [--queue default]

``--app`` names the equipped Celery app as ``celery --app`` does (``module``, ``module:attribute``;
default: ``$CELERY_APP``, which the stack sets), imported with the current directory on the path.
An EventBridge rule of the stack's ``schedule`` runs the first form: the entry's task, queue and
arguments, its name, and the slot (EventBridge's event time). With ``--slot`` the publish happens
at most once per name (default: the task) and slot: EventBridge delivers at least once, so the
same slot may start this command twice. The slot's claim is a key in the broker's Redis.

Exit status: 0 enqueued (or already enqueued for that slot), 1 broker unreachable, 2 bad usage
(unknown task, malformed arguments, unsafe configuration). One JSON line on stdout says
what happened.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypedDict, TypeVar

import redis
from celery import Celery
from celery.app.utils import find_app
from kombu.exceptions import OperationalError
from kombu.utils.url import maybe_sanitize_url

from celery_ecs.settings import CELERY_APP as APP_ENV
from celery_ecs.settings import ConfigError

log = logging.getLogger("celery_ecs.enqueue")
T = TypeVar("T")

#: Seconds a slot's claim is kept: far longer than EventBridge takes to redeliver.
SLOT_TTL = 7 * 24 * 3600
#: Attempts and first back-off (seconds, doubling) when the broker does not answer.
BROKER_ATTEMPTS = 4
BROKER_BACKOFF = 0.5


class UsageError(Exception):
    """Bad input: exit status 2."""


class BrokerUnreachable(Exception):
    """The broker did not answer after every attempt: exit status 1."""


@dataclass(frozen=True)
class Request:
    """What to publish, with which app, and the slot it is claimed for."""

    app: str
    task: str
    kwargs: dict[str, object] = field(default_factory=dict)
    args: tuple[object, ...] = ()
    queue: str | None = None
    slot: str | None = None
    key: str = ""  # what the slot is claimed for: the entry's name, or the task name


class SendOptions(TypedDict, total=False):
    """The options of ``send_task`` the command sets: the queue only when one is named."""

    task_id: str
    queue: str


def parse(argv: list[str] | None) -> Request:
    parser = argparse.ArgumentParser(prog="celery-ecs-enqueue", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--app", "-A", default=os.environ.get(APP_ENV, ""),
                        help=f"the Celery app, as celery --app names it (default: ${APP_ENV})")
    parser.add_argument("task", help="registered task name, e.g. app.tasks.noop")
    parser.add_argument("--args", default="[]", help="JSON list of positional arguments")
    parser.add_argument("--kwargs", default="{}", help="JSON object of keyword arguments")
    parser.add_argument("--queue", help="queue (default: the task's route)")
    parser.add_argument("--slot", help="schedule slot; enqueue at most once per name and slot")
    parser.add_argument("--name", help="schedule entry's name: what a slot is claimed for "
                        "(default: the task)")  # fmt: skip
    args = parser.parse_args(argv)
    slot = args.slot.strip() if args.slot else None
    if args.slot is not None and not slot:
        raise UsageError("--slot is empty")
    if args.name is not None and not args.name.strip():
        raise UsageError("--name is empty")
    if not args.app.strip():
        raise UsageError(f"name the Celery app with --app or ${APP_ENV}")
    positional = _json_argument("--args", args.args, list)
    kwargs = _json_argument("--kwargs", args.kwargs, dict)
    return Request(args.app.strip(), args.task, kwargs, tuple(positional), args.queue, slot,
                   args.name or args.task)  # fmt: skip


def _json_argument(option: str, text: str, kind: type[T]) -> T:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{option} is not valid JSON: {exc}") from None
    if not isinstance(value, kind):
        raise UsageError(f"{option} must be a JSON {'list' if kind is list else 'object'}")
    return value


def load_app(name: str) -> Celery:
    """The equipped Celery app ``name`` (``celery --app``'s rules, the current directory on the
    path); a usage error if it cannot be imported or is not a Celery app."""
    try:
        app = find_app(name)
    except (ImportError, AttributeError) as error:
        raise UsageError(f"--app {name}: cannot import it ({error})") from None
    if not isinstance(app, Celery):
        raise UsageError(f"--app {name}: {app!r} is not a Celery app")
    return app


def broker_client(broker_url: str) -> redis.Redis:
    """A client of the broker's Redis, for the slot claims. redis-py verifies the server
    certificate of a rediss:// URL (``Settings`` requires ``ssl_cert_reqs=required``)."""
    return redis.Redis.from_url(broker_url, socket_timeout=10, socket_connect_timeout=5)


def with_retries(action: Callable[[], T], broker: str) -> T:
    delay = BROKER_BACKOFF
    for attempt in range(1, BROKER_ATTEMPTS + 1):
        try:
            return action()
        except (redis.ConnectionError, redis.TimeoutError, OperationalError) as exc:
            if attempt == BROKER_ATTEMPTS:
                raise BrokerUnreachable(
                    f"broker {broker} unreachable after {attempt} attempts: {exc}"
                ) from exc
            log.warning("broker %s: %s (attempt %d, retry in %.1fs)", broker, exc, attempt, delay)
            time.sleep(delay)
            delay *= 2
    raise AssertionError("unreachable")


def release_claim(client: redis.Redis, claim: str) -> None:
    """Release a slot whose publish failed, so a redelivery of the same event can publish it."""
    try:
        client.delete(claim)
    except redis.RedisError as exc:
        log.error("could not release %s (%s): this slot stays claimed until it expires", claim, exc)


def enqueue(request: Request) -> dict[str, object]:
    # Imported here so that usage errors are reported without importing Celery's worker parts.
    from celery_ecs.runtime import publish_only, settings_of

    app = load_app(request.app)
    try:
        settings = settings_of(app)
    except LookupError as error:
        raise UsageError(f"--app {request.app}: {error}") from None
    publish_only()
    app.loader.import_default_modules()
    if request.task not in app.tasks or request.task.startswith("celery."):
        raise UsageError(f"unknown task {request.task!r}")
    broker = maybe_sanitize_url(settings.broker_url)
    task_id = str(uuid.uuid4())
    claim = None
    client = broker_client(settings.broker_url)
    if request.slot:
        # The same slot always maps to the same task id and claim; SET NX lets one run publish.
        claim = f"enqueue:slot:{request.key}:{request.slot}"
        task_id = str(uuid.uuid5(uuid.NAMESPACE_URL, claim))
        claimed = with_retries(lambda: client.set(claim, task_id, nx=True, ex=SLOT_TTL), broker)
        if not claimed:
            return {"status": "duplicate", "task": request.task, "id": task_id,
                    "slot": request.slot}
    options: SendOptions = {"task_id": task_id}
    if request.queue:
        options["queue"] = request.queue
    try:
        with_retries(
            lambda: app.send_task(
                request.task, args=request.args, kwargs=request.kwargs,
                retry=True, retry_policy={"max_retries": 1, "interval_start": 0.5}, **options,
            ),
            broker,
        )
    except BaseException:
        if claim:
            release_claim(client, claim)
        raise
    return {"status": "enqueued", "task": request.task, "id": task_id, "slot": request.slot}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        outcome = enqueue(parse(argv))
    except (UsageError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokerUnreachable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(outcome))
    return 0


if __name__ == "__main__":
    sys.exit(main())
