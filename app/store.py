"""The example tasks' data store: the broker's Redis, reached with the same URL and TLS rules.

A real application would keep its data in its own database; the idempotency pattern is the same.
"""

from __future__ import annotations

from functools import lru_cache

import redis

from app.celery_app import settings


@lru_cache(maxsize=1)
def client() -> redis.Redis:
    # redis-py verifies the server certificate for rediss:// URLs (ssl_cert_reqs=required is
    # enforced by Settings); retries cover a failover's DNS switch.
    return redis.Redis.from_url(
        settings.broker_url,
        decode_responses=True,
        socket_timeout=10,
        socket_connect_timeout=5,
        health_check_interval=30,
    )
