"""The result backend (``app.results``) against a real Redis: one atomic write per state."""

from __future__ import annotations

import json

import pytest
import redis
from celery import states

from app.celery_app import app
from app.results import ResultBackend

TASK_ID = "9c9b7f56-9f43-4f0e-8c2b-4c33c1a2c3a1"


@pytest.fixture
def backend(redis_url: str) -> ResultBackend:
    return ResultBackend(app=app, url=redis_url)


def stored(client: redis.Redis) -> dict[str, object]:
    return json.loads(client.get(f"celery-task-meta-{TASK_ID}"))


def test_the_app_stores_results_through_it() -> None:
    assert isinstance(app.backend, ResultBackend)


def test_a_state_is_stored_with_its_expiry_and_published(
    backend: ResultBackend, redis_client: redis.Redis
) -> None:
    listener = redis_client.pubsub()
    listener.subscribe(f"celery-task-meta-{TASK_ID}")
    listener.get_message(timeout=5)  # the subscription's confirmation

    backend.store_result(TASK_ID, {"applied": True}, states.SUCCESS)

    meta = stored(redis_client)
    assert meta["status"] == states.SUCCESS and meta["result"] == {"applied": True}
    assert 0 < redis_client.ttl(f"celery-task-meta-{TASK_ID}") <= app.conf.result_expires
    message = listener.get_message(timeout=5)
    assert message is not None and json.loads(message["data"])["status"] == states.SUCCESS
    assert backend.get_task_meta(TASK_ID)["status"] == states.SUCCESS


def test_a_later_state_replaces_anything_but_success(
    backend: ResultBackend, redis_client: redis.Redis
) -> None:
    backend.store_result(TASK_ID, None, states.STARTED)
    backend.store_result(TASK_ID, {"applied": True}, states.SUCCESS)
    # A second run of a redelivered message (at least once) starts, or fails, after the first
    # succeeded: the success stands.
    backend.store_result(TASK_ID, None, states.STARTED)
    backend.store_result(TASK_ID, ValueError("late"), states.FAILURE)

    assert stored(redis_client)["status"] == states.SUCCESS
    assert stored(redis_client)["result"] == {"applied": True}
