"""The revoke records in Redis (``celery_ecs.revokes``): the longest keep wins, expired ones go."""

from __future__ import annotations

import time

import redis
from celery.worker import state as worker_state

from celery_ecs.revokes import REVOKED_KEY, keep_seconds, record, recorded


def test_a_record_keeps_the_longest_keep_and_expired_ones_are_dropped(
    redis_client: redis.Redis,
) -> None:
    record(redis_client, ["long", "short"], keep=100)
    record(redis_client, ["long"], keep=10)  # another pool's shorter keep: not shortened
    record(redis_client, ["short"], keep=1000)
    now = time.time()
    assert 90 < float(redis_client.zscore(REVOKED_KEY, "long") or 0) - now <= 100
    assert 990 < float(redis_client.zscore(REVOKED_KEY, "short") or 0) - now <= 1000

    redis_client.zadd(REVOKED_KEY, {"expired": now - 1})
    assert sorted(recorded(redis_client)) == ["long", "short"]
    record(redis_client, ["new"], keep=100)  # every record drops the expired ones
    assert redis_client.zscore(REVOKED_KEY, "expired") is None


def test_a_revoke_is_kept_as_long_as_celery_keeps_it_or_the_visibility_timeout() -> None:
    assert keep_seconds(60) == worker_state.REVOKE_EXPIRES
    assert keep_seconds(worker_state.REVOKE_EXPIRES * 2) == worker_state.REVOKE_EXPIRES * 2
