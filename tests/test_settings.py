"""The app's configuration: reliable defaults, and unsafe settings refused with a clear message."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis

from celery_ecs.settings import (
    DEFAULT_LIVENESS_TIMEOUT,
    ENV_VARS,
    LIVENESS_TIMEOUT,
    ConfigError,
    Settings,
)
from tests.support import ROOT

BROKER = {"CELERY_BROKER_URL": "redis://localhost:6379/0"}


def test_defaults_are_the_reliable_ones() -> None:
    config = Settings.from_env(BROKER).celery_config()

    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["worker_prefetch_multiplier"] == 1
    assert config["broker_connection_retry_on_startup"] is True
    assert config["accept_content"] == ["json"]
    assert config["result_accept_content"] == ["json"]
    assert config["task_serializer"] == config["result_serializer"] == "json"
    assert config["result_expires"] == 86400
    # A plain URL: celery_ecs.results.ResultBackendLoader makes it the app's backend.
    assert config["result_backend"] == BROKER["CELERY_BROKER_URL"]
    assert config["broker_transport"] == "celery_ecs.transport:Transport"
    assert config["task_track_started"] is False  # only tasks that declare it
    vt = config["broker_transport_options"]["visibility_timeout"]
    assert vt == config["result_backend_transport_options"]["visibility_timeout"] == 3600


def test_pool_level_keys_are_named_after_the_pool() -> None:
    # Workers keep their messages under keys of their own (celery_ecs.liveness); the pool-level keys
    # are what workers of earlier versions used, swept after the pool's visibility timeout.
    config = Settings.from_env({**BROKER, "CELERY_POOL_NAME": "long"}).celery_config()

    options = config["broker_transport_options"]
    assert options["unacked_key"] == "unacked:long"
    assert options["unacked_index_key"] == "unacked_index:long"
    assert options["unacked_mutex_key"] == "unacked_mutex:long"


def test_verified_tls_is_accepted() -> None:
    url = "rediss://:t0ken@broker.example:6379/0?ssl_cert_reqs=required"
    assert Settings.from_env({"CELERY_BROKER_URL": url}).broker_url == url


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "CELERY_BROKER_URL is not set"),
        ({"CELERY_BROKER_URL": "amqp://x"}, "scheme 'amqp' is not supported"),
        ({"CELERY_BROKER_URL": "rediss://h:6379/0"}, "must end with ?ssl_cert_reqs=required"),
        ({"CELERY_BROKER_URL": "rediss://h:6379/0?ssl_cert_reqs=none"}, "ssl_cert_reqs=required"),
        ({**BROKER, "CELERY_RESULT_BACKEND": "rediss://h/0"}, "CELERY_RESULT_BACKEND: a rediss"),
        ({**BROKER, "CELERY_TASK_TIME_LIMIT": "abc"}, "CELERY_TASK_TIME_LIMIT='abc': expected"),
        (
            {**BROKER, "CELERY_TASK_SOFT_TIME_LIMIT": "60", "CELERY_TASK_TIME_LIMIT": "60"},
            "CELERY_TASK_TIME_LIMIT=60 must be above CELERY_TASK_SOFT_TIME_LIMIT=60",
        ),
        (
            {**BROKER, "CELERY_VISIBILITY_TIMEOUT": "600"},
            "CELERY_VISIBILITY_TIMEOUT=600 must exceed",
        ),
        ({**BROKER, "CELERY_PREFETCH_MULTIPLIER": "0"}, "CELERY_PREFETCH_MULTIPLIER=0: must be"),
        ({**BROKER, "CELERY_TASK_PROTECTION": "maybe"}, "expected true or false"),
        ({**BROKER, "APP_LOG_LEVEL": "LOUD"}, "APP_LOG_LEVEL='LOUD'"),
        ({**BROKER, "CELERY_POOL_NAME": "a b"}, "CELERY_POOL_NAME='a b'"),
        ({**BROKER, "CELERY_LIVENESS_TIMEOUT": "2"}, "CELERY_LIVENESS_TIMEOUT=2: must be >= 3"),
    ],
)
def test_unsafe_configuration_is_refused(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError) as error:
        Settings.from_env(env)
    assert message in str(error.value)


@pytest.mark.redis  # starts a celery worker process
def test_worker_refuses_to_start_with_unverified_tls() -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT),
           "CELERY_BROKER_URL": "rediss://:tok@broker.example:6379/0"}
    result = subprocess.run(
        [sys.executable, "-m", "celery", "--app", "app.celery_app", "worker"],
        env=env, capture_output=True, text=True, timeout=60, cwd=ROOT,
    )
    assert result.returncode != 0
    assert "a rediss:// URL must end with ?ssl_cert_reqs=required" in result.stderr


def test_the_docs_list_every_variable() -> None:
    readme = (ROOT / "docs" / "reference" / "environment.md").read_text()
    for name, (default, _) in ENV_VARS.items():
        assert f"`{name}`" in readme, name
        assert default in readme, (name, default)


def test_the_visibility_timeout_must_exceed_the_longest_unacknowledged_time_strictly() -> None:
    # held per slot 3 x hard limit 100 + max countdown 50 = 350 seconds unacknowledged at most.
    limits = {**BROKER, "CELERY_HELD_PER_SLOT": "3", "CELERY_TASK_SOFT_TIME_LIMIT": "90",
              "CELERY_TASK_TIME_LIMIT": "100", "CELERY_MAX_COUNTDOWN": "50"}  # fmt: skip
    with pytest.raises(ConfigError, match=r"CELERY_HELD_PER_SLOT x .* = 350"):
        Settings.from_env({**limits, "CELERY_VISIBILITY_TIMEOUT": "350"})
    accepted = Settings.from_env({**limits, "CELERY_VISIBILITY_TIMEOUT": "351"})
    assert accepted.visibility_timeout == 351


def test_the_held_messages_default_and_bound() -> None:
    defaults = Settings.from_env(BROKER)
    assert defaults.held_per_slot == 4
    # Celery's worker_eta_task_limit: per worker, so per slot times the pool's slots.
    assert defaults.eta_task_limit(concurrency=2) == 8
    # The default visibility timeout (3600) covers the default limits: 4 x 330 + 300 = 1620.
    assert defaults.visibility_timeout > 4 * defaults.time_limit + defaults.max_countdown


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"CELERY_HELD_PER_SLOT": "0"}, "CELERY_HELD_PER_SLOT=0: must be >= 1"),
        ({"CELERY_HELD_PER_SLOT": "many"}, "CELERY_HELD_PER_SLOT='many': expected a whole number"),
        (
            {"CELERY_HELD_PER_SLOT": "2", "CELERY_PREFETCH_MULTIPLIER": "3"},
            "CELERY_HELD_PER_SLOT=2 must be >= CELERY_PREFETCH_MULTIPLIER=3",
        ),
    ],
)
def test_a_held_messages_limit_below_the_prefetch_is_refused(
    env: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.from_env({**BROKER, **env})


def test_a_countdown_beyond_the_maximum_is_refused_at_publish(redis_url: str) -> None:
    # The worker holds an ETA message unacknowledged until it is due; the visibility timeout is
    # sized for CELERY_MAX_COUNTDOWN, so a longer one would be delivered twice.
    from app.celery_app import app, settings

    limit = settings.max_countdown
    with app.connection_for_write(redis_url) as connection:
        with pytest.raises(ValueError, match=f"exceeds CELERY_MAX_COUNTDOWN={limit}"):
            app.send_task("app.tasks.noop", connection=connection, countdown=limit + 5,
                          ignore_result=True)  # fmt: skip
        accepted = app.send_task("app.tasks.noop", connection=connection, countdown=limit,
                                 ignore_result=True)  # fmt: skip
    assert accepted.id
    queued = redis.Redis.from_url(redis_url).lrange("default", 0, -1)
    assert [json.loads(message)["headers"]["id"] for message in queued] == [accepted.id]


def test_the_liveness_timeout_default_is_the_documented_one() -> None:
    # Issue 21 chose it from bench.liveness_timeouts (docs/explanation/measured.md); the table of
    # variables (and so the docs, test above) says the same.
    assert Settings.from_env(BROKER).liveness_timeout == DEFAULT_LIVENESS_TIMEOUT == 10
    assert ENV_VARS[LIVENESS_TIMEOUT][0] == str(DEFAULT_LIVENESS_TIMEOUT)
