"""Example tasks: the patterns a production Celery app needs.

- ``apply_credit``: a side effect made idempotent with a key in Redis, so a redelivered or
  duplicated message (at-least-once delivery) has one effect.
- ``purge_expired_records``: periodic maintenance, scheduled by the stack's default ``schedule``.
- ``generate_report``: a long task that checkpoints its progress and honours the soft time
  limit by continuing in a fresh message instead of being killed mid-step.
- ``nightly_report``: the periodic entry point that starts a report.
- ``noop``: the cheapest possible task (benchmarks, smoke tests).
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any, cast

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded

from app.celery_app import app
from app.store import client

log = logging.getLogger(__name__)

#: Seconds an idempotency key and a ledger log entry are kept.
RECORD_TTL = 7 * 24 * 3600
LEDGER = "ledger:balances"
LEDGER_LOG = "ledger:log"

# Claim the key and apply the effect in one atomic step: there is no moment where the key is
# taken but the effect not applied, so a crash can neither lose nor double the credit.
_APPLY_ONCE = """
if redis.call('SET', KEYS[1], ARGV[4], 'NX', 'EX', ARGV[3]) then
  local balance = redis.call('HINCRBY', KEYS[2], ARGV[1], ARGV[2])
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[4])
  return {1, balance}
end
return {0, tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')}
"""


# track_started: the tasks that can run long enough for someone to see them running.
@app.task(name="app.tasks.apply_credit", bind=True, track_started=True)
def apply_credit(
    self: Task[Any, Any], idempotency_key: str, account: str, amount: int, work_seconds: float = 0.0
) -> dict[str, object]:
    """Credit ``amount`` to ``account`` once per ``idempotency_key``.

    ``work_seconds`` stands in for slow work done before the effect (a call to another
    service); it makes the crash tests' window visible.
    """
    store = client()
    store.incr(f"attempts:{idempotency_key}")
    store.expire(f"attempts:{idempotency_key}", RECORD_TTL)
    time.sleep(work_seconds)
    keys = (f"idem:{idempotency_key}", LEDGER, LEDGER_LOG)
    arguments = (account, amount, RECORD_TTL, idempotency_key, time.time())
    # redis-py annotates a script's arguments as strings, though it encodes numbers as for any
    # command. It types every reply for its synchronous and asyncio clients alike (a value or an
    # awaitable), so the casts in this module say what this synchronous client returns.
    reply = store.eval(_APPLY_ONCE, len(keys), *keys, *arguments)  # type: ignore[arg-type]
    applied, balance = cast(list[int], reply)
    if not applied:
        log.info("credit %s already applied; skipping", idempotency_key)
    return {"applied": bool(applied), "account": account, "balance": int(balance)}


@app.task(name="app.tasks.purge_expired_records")
def purge_expired_records(retention_seconds: int = RECORD_TTL) -> dict[str, int]:
    """Drop ledger log entries older than the retention (idempotency keys expire by TTL)."""
    cutoff = time.time() - retention_seconds
    removed = cast(int, client().zremrangebyscore(LEDGER_LOG, "-inf", cutoff))
    client().set("maintenance:last-purge", datetime.now(UTC).isoformat())
    return {"removed": int(removed)}


@app.task(name="app.tasks.generate_report", bind=True, max_retries=100, track_started=True)
def generate_report(
    self: Task[Any, Any], report_id: str, steps: int = 10, step_seconds: float = 1.0
) -> dict[str, object]:
    """Run ``steps`` steps, saving progress after each.

    When the soft time limit fires, the current step is abandoned and the task continues from
    the last checkpoint in a new message (``retry``), so no run is ever hard-killed and no
    finished step is redone.
    """
    store = client()
    progress_key = f"report:{report_id}:progress"
    done = int(cast(str | None, store.get(progress_key)) or 0)
    try:
        while done < steps:
            time.sleep(step_seconds)
            done = cast(int, store.incr(progress_key))
            store.expire(progress_key, RECORD_TTL)
    except SoftTimeLimitExceeded:
        log.info("report %s: soft time limit at step %d/%d; continuing", report_id, done, steps)
        raise self.retry(countdown=0) from None
    return {"report_id": report_id, "steps": done, "continuations": self.request.retries}


@app.task(name="app.tasks.nightly_report")
def nightly_report() -> str:
    """Periodic entry: start the night's report (one id per UTC date) on the ``long`` queue."""
    report_id = f"nightly-{datetime.now(UTC).date().isoformat()}"
    generate_report.delay(report_id=report_id)
    return report_id


@app.task(name="app.tasks.noop")
def noop() -> None:
    return None
