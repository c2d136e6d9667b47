"""Enqueue one task and exit: what an EventBridge schedule runs instead of beat.

    python -m app.enqueue --entry nightly-report --slot 2026-11-24T02:30:00Z
    python -m app.enqueue app.tasks.noop [--kwargs '{"a": 1}'] [--queue default] [--slot S]

``--entry`` takes the task, arguments and queue from ``app.schedule``. With ``--slot`` (the
schedule slot, EventBridge's event time) the publish happens at most once per task and slot:
EventBridge delivers at least once, so the same slot may start this command twice.

Exit status: 0 enqueued (or already enqueued for that slot), 1 broker unreachable, 2 bad usage
(unknown task or entry, malformed arguments, unsafe configuration). One JSON line on stdout says
what happened.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypedDict, TypeVar

import redis
from kombu.exceptions import OperationalError
from kombu.utils.url import maybe_sanitize_url

from app.schedule import SCHEDULE
from app.settings import ConfigError

log = logging.getLogger("app.enqueue")
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
    task: str
    kwargs: dict[str, object] = field(default_factory=dict)
    args: tuple[object, ...] = ()
    queue: str | None = None
    slot: str | None = None
    key: str = ""  # what the slot is claimed for: the entry name, or the task name


class SendOptions(TypedDict, total=False):
    """The options of ``send_task`` the command sets: the queue only when one is named."""

    task_id: str
    queue: str


def parse(argv: list[str] | None) -> Request:
    parser = argparse.ArgumentParser(prog="python -m app.enqueue", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("task", nargs="?", help="registered task name, e.g. app.tasks.noop")
    target.add_argument("--entry", help="name of a periodic entry in app.schedule")
    parser.add_argument("--kwargs", default="{}", help="JSON object of keyword arguments")
    parser.add_argument("--queue", help="queue (default: the task's route)")
    parser.add_argument("--slot", help="schedule slot; enqueue at most once per slot")
    args = parser.parse_args(argv)
    slot = args.slot.strip() if args.slot else None
    if args.slot is not None and not slot:
        raise UsageError("--slot is empty")
    if args.entry:
        entries = {entry.name: entry for entry in SCHEDULE}
        if args.entry not in entries:
            raise UsageError(f"unknown entry {args.entry!r}; known: {', '.join(sorted(entries))}")
        entry = entries[args.entry]
        return Request(entry.task, dict(entry.kwargs), entry.args, entry.queue, slot, entry.name)
    try:
        kwargs = json.loads(args.kwargs)
    except json.JSONDecodeError as exc:
        raise UsageError(f"--kwargs is not valid JSON: {exc}") from None
    if not isinstance(kwargs, dict):
        raise UsageError("--kwargs must be a JSON object")
    return Request(args.task, kwargs, (), args.queue, slot, args.task)


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


def release_claim(claim: str) -> None:
    """Release a slot whose publish failed, so a redelivery of the same event can publish it."""
    from app.store import client

    try:
        client().delete(claim)
    except redis.RedisError as exc:
        log.error("could not release %s (%s): this slot stays claimed until it expires", claim, exc)


def enqueue(request: Request) -> dict[str, object]:
    # Imported here so that usage errors are reported without configuring the app.
    from app.celery_app import app, publish_only, settings
    from app.store import client

    publish_only()
    app.loader.import_default_modules()
    if request.task not in app.tasks or request.task.startswith("celery."):
        raise UsageError(f"unknown task {request.task!r}")
    broker = maybe_sanitize_url(settings.broker_url)
    task_id = str(uuid.uuid4())
    claim = None
    if request.slot:
        # The same slot always maps to the same task id and claim; SET NX lets one run publish.
        claim = f"enqueue:slot:{request.key}:{request.slot}"
        task_id = str(uuid.uuid5(uuid.NAMESPACE_URL, claim))
        claimed = with_retries(lambda: client().set(claim, task_id, nx=True, ex=SLOT_TTL), broker)
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
            release_claim(claim)
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
