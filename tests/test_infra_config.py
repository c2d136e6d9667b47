"""Stack config validation (infra/config.py): defaults, and every invalid value names its key
path and what is allowed."""

from __future__ import annotations

import json
import re

import pytest

from celery_ecs.schedule import ENTRY_KEYS, Cron, Every, PeriodicEntry
from infra.budget import web_budget, worker_budget
from infra.config import (
    ConfigError,
    ExistingVpc,
    ImageBuild,
    NewVpc,
    PrebuiltImage,
    load,
    placeholders,
)
from infra.config_keys import (
    Described,
    Fields,
    Key,
    Number,
    Object,
    ObjectList,
    Section,
    Text,
)
from infra.config_tables import (
    BROKER,
    DEFAULT_QUEUES,
    DEFAULT_TASK_TIMEOUT,
    EXISTING_VPC_KEYS,
    FARGATE_MEMORY,
    SCHEDULE_ENTRY,
    SECTIONS,
    WEB,
)

#: The example app's queues (app.routing), which the default pool consumes.
QUEUES = DEFAULT_QUEUES
POOL = {"name": "all", "queues": list(QUEUES)}
CERTIFICATE = "arn:aws:acm:us-east-1:210987654321:certificate/11111111-2222-3333-4444-555555555555"


def test_empty_config_gives_a_deployable_default_stack() -> None:
    config = load({})
    assert config.scheduler == "beat"
    assert config.max_countdown == 300
    assert config.network == NewVpc(cidr="10.0.0.0/16", nat_gateways="none")
    assert config.broker.engine == "valkey"
    assert config.broker.parameter_group_family == "valkey8"
    assert config.cpu_architecture == "ARM64"
    assert config.container_insights is False
    assert config.broker.node_type == "cache.t4g.micro"
    assert config.broker.replicas == 0
    assert config.broker.auth_token_generation == 1
    assert config.web.certificate_arn is None
    (pool,) = config.workers
    assert pool.name == "default"
    assert pool.queues == QUEUES
    assert pool.min_count >= 1
    assert pool.budget == worker_budget(pool.task_timeout, max_stop_timeout=120, max_countdown=300)
    assert config.web.budget == web_budget(30)


def test_the_app_keys_default_to_the_example_app() -> None:
    """The repository's own stacks deploy the example in app/ (tests/test_plan.py renders them)."""
    config = load({})
    assert config.celery_app == "app.celery_app"
    assert config.image == ImageBuild(context=".", dockerfile="Dockerfile")
    assert config.image_uri is None
    assert config.web.command == (
        "gunicorn", "--config", "python:app.gunicorn_conf", "app.web:create_app()",
    )  # fmt: skip
    assert (config.web.port, config.web.liveness_path) == (8000, "/livez")
    assert config.schedule == (
        PeriodicEntry("purge-expired-idempotency-keys", "app.tasks.purge_expired_records",
                      Every(3600), queue="default"),
        PeriodicEntry("nightly-report", "app.tasks.nightly_report",
                      Cron(minute="30", hour="2"), queue="default"),
    )  # fmt: skip


def test_a_stack_points_at_another_app() -> None:
    """What a stack of a user's own app gives: its image, -A target, web, queues and schedule."""
    config = load({
        "celeryApp": "proj.celery:app",
        "image": json.dumps({"context": "examples/tutorial"}),
        "web": {"command": ["gunicorn", "proj.wsgi"], "port": 8080, "livenessPath": "/healthz"},
        "workers": [{"name": "mail", "queues": ["celery", "emails"]}],
        "schedule": [
            {"name": "digest", "task": "proj.tasks.send_digest", "cron": "0 9 * * mon-fri",
             "queue": "emails", "args": ["daily"], "kwargs": {"limit": 50}},
            {"name": "ping", "task": "proj.tasks.ping", "every": 300, "queue": "celery"},
        ],
    })  # fmt: skip
    assert config.celery_app == "proj.celery:app"
    assert config.image == ImageBuild("examples/tutorial", "examples/tutorial/Dockerfile")
    assert (config.web.command, config.web.port) == (("gunicorn", "proj.wsgi"), 8080)
    assert config.web.liveness_path == "/healthz"
    assert config.workers[0].queues == ("celery", "emails")
    digest, ping = config.schedule
    assert digest == PeriodicEntry(
        "digest", "proj.tasks.send_digest", Cron("0", "9", "*", "*", "mon-fri"),
        ("daily",), {"limit": 50}, "emails",
    )  # fmt: skip
    assert ping.schedule == Every(300) and ping.queue == "celery"
    # No schedule at all, and a prebuilt image.
    other = load({"celeryApp": "proj.celery", "image": {"uri": "registry.example/proj@sha256:ab"},
                  "web": {"command": ["w"]}, "workers": [{"name": "a", "queues": ["q"]}],
                  "schedule": []})  # fmt: skip
    assert other.image == PrebuiltImage("registry.example/proj@sha256:ab")
    assert other.image_uri == "registry.example/proj@sha256:ab" and other.schedule == ()


def test_the_default_schedule_needs_a_pool_on_its_queue() -> None:
    """The example's entries go to "default": a stack whose pools do not consume it is refused."""
    with pytest.raises(ConfigError, match=r"^schedule\[0\]\.queue: no pool consumes queue "
                       r"'default'; allowed: a queue of workers\[\]\.queues: long$"):  # fmt: skip
        load({"workers": [{"name": "long", "queues": ["long"]}]})
    assert load({"workers": [{"name": "long", "queues": ["long"]}], "schedule": []}).schedule == ()


def test_a_pool_sets_how_many_messages_a_worker_holds_per_slot() -> None:
    """``heldPerSlot`` reaches the budget, its environment and its visibility timeout."""
    (default,) = load({}).workers
    assert default.budget.held_per_slot == 4
    pool = {"name": "long", "queues": list(QUEUES), "taskTimeout": 3600, "heldPerSlot": 1}
    (held_one,) = load({"workers": [pool]}).workers
    assert held_one.budget == worker_budget(3600, held_per_slot=1)
    assert held_one.budget.environment()["CELERY_HELD_PER_SLOT"] == "1"
    # One message per slot: a long pool's visibility timeout is a quarter of the default's.
    assert held_one.budget.longest_unacked == 3660 + 300


def test_a_pool_reserves_two_messages_per_slot_unless_its_tasks_are_long_or_it_says() -> None:
    """``prefetchMultiplier`` reaches the budget and the environment; absent, the budget's
    default for the pool's ``taskTimeout``."""
    (default,) = load({}).workers
    assert default.budget.environment()["CELERY_PREFETCH_MULTIPLIER"] == "2"
    long_pool = {"name": "long", "queues": list(QUEUES), "taskTimeout": 3600}
    assert load({"workers": [long_pool]}).workers[0].budget.prefetch_multiplier == 1
    (one,) = load({"workers": [{**long_pool, "taskTimeout": 60, "prefetchMultiplier": 1}]}).workers
    assert one.budget.environment()["CELERY_PREFETCH_MULTIPLIER"] == "1"
    (held_one,) = load({"workers": [{**long_pool, "taskTimeout": 60, "heldPerSlot": 1}]}).workers
    assert held_one.budget.prefetch_multiplier == 1


def test_cpu_architecture_and_fargate_spot() -> None:
    # Graviton unless a pool asks for Spot, which runs X86_64 only.
    assert load({}).cpu_architecture == "ARM64"
    assert load({}).uses_fargate_spot is False
    spot = {"name": "short", "queues": list(QUEUES), "taskTimeout": 100, "fargateSpot": True}
    config = load({"workers": [spot]})
    assert config.cpu_architecture == "X86_64"
    (pool,) = config.workers
    assert pool.fargate_spot is True and config.uses_fargate_spot is True
    assert pool.budget.shutdown == "warm" and pool.budget.finishes_within_spot_notice
    assert load({"cpuArchitecture": "X86_64"}).cpu_architecture == "X86_64"
    with pytest.raises(ConfigError, match=r"workers\[0\]\.fargateSpot"):
        load({"cpuArchitecture": "ARM64", "workers": [spot]})


def test_the_dashboard_is_off_unless_asked_or_production() -> None:
    assert load({}).dashboard is False
    assert load({"dashboard": True}).dashboard is True
    assert load({"production": True, **PRODUCTION_NEEDS}).dashboard is True
    assert load({"production": True, "dashboard": False, **PRODUCTION_NEEDS}).dashboard is False
    with pytest.raises(ConfigError, match=r"^dashboard: .*true, false"):
        load({"dashboard": "sometimes"})


def test_default_task_sizes_are_fargates_smallest() -> None:
    """What bench.task_sizes measured of the example's worker, web and beat fits 0.25 vCPU and
    512 MiB with the stated headroom (the docs' "Task sizes")."""
    config = load({})
    (pool,) = config.workers
    assert (pool.cpu, pool.memory) == (256, 512)
    assert (config.web.cpu, config.web.memory) == (256, 512)
    assert (min(FARGATE_MEMORY), FARGATE_MEMORY[256][0]) == (256, 512)


def test_container_insights_is_off_unless_asked_or_production() -> None:
    assert load({}).container_insights is False
    assert load({"containerInsights": True}).container_insights is True
    assert load({"production": True, **PRODUCTION_NEEDS}).container_insights is True
    production_without = {"production": True, "containerInsights": False, **PRODUCTION_NEEDS}
    assert load(production_without).container_insights is False
    with pytest.raises(ConfigError, match="containerInsights"):
        load({"containerInsights": "sometimes"})


#: What production requires: a certificate and an alert target (each has a named opt-out).
PRODUCTION_NEEDS: dict[str, object] = {
    "web": {"certificateArn": CERTIFICATE},
    "alerts": {"email": "ops@celery.io"},
}


def test_production_switches_to_safe_defaults() -> None:
    config = load({"production": "true", **PRODUCTION_NEEDS})
    assert config.network == NewVpc(cidr="10.0.0.0/16", nat_gateways="perAz")
    assert config.broker.replicas == 1
    assert config.log_retention_days == 365
    assert config.web.deletion_protection is True
    assert config.web.min_count == 2


def test_production_opts_out_only_by_name() -> None:
    """A production stack without a certificate or an alert target loads only when it says
    what it gives up; a dev stack needs neither."""
    config = load(
        {
            "production": True,
            "web": {"allowPlainHttp": True},
            "alerts": {"allowNoNotifications": True},
        }
    )
    assert config.web.certificate_arn is None and config.web.allow_plain_http
    assert not config.alerts.notifies and config.alerts.allow_no_notifications
    assert load({}).web.allow_plain_http is False
    assert load({}).alerts.allow_no_notifications is False


def test_documentation_placeholders_are_named() -> None:
    sample = "arn:aws:acm:us-east-1:123456789012:certificate/0"
    config = load(
        {
            "web": {"certificateArn": sample},
            "alerts": {"email": "ops@Mail.Example.com"},
        }
    )
    found = placeholders(config)
    assert [message.split(":", 1)[0] for message in found] == ["web.certificateArn", "alerts.email"]
    assert "123456789012" in found[0] and "example.com" in found[1]
    topic = load({"alerts": {"topicArn": "arn:aws:sns:us-east-1:123456789012:ops-alerts"}})
    assert [message.split(":", 1)[0] for message in placeholders(topic)] == ["alerts.topicArn"]
    for address in ("ops@corp.test", "me@mail.invalid", "ops@example.org"):
        assert placeholders(load({"alerts": {"email": address}})), address
    # The user's own values are no placeholders (a domain that merely contains "example" too).
    own = {"web": {"certificateArn": CERTIFICATE}, "alerts": {"email": "ops@examples.com"}}
    assert placeholders(load(own)) == ()


def test_values_arrive_as_cli_text_or_parsed() -> None:
    """The CLI hands top-level values over as strings (objects as JSON); both forms load."""
    workers = [
        {"name": "fast", "queues": ["default"]},
        {"name": "slow", "queues": ["long"], "taskTimeout": 1800},
    ]
    as_text = load(
        {"maxCountdown": "60", "workers": json.dumps(workers), "web": json.dumps({"minCount": 2})}
    )
    parsed = load({"maxCountdown": 60, "workers": workers, "web": {"minCount": 2}})
    assert as_text == parsed
    assert [pool.name for pool in parsed.workers] == ["fast", "slow"]
    assert parsed.workers[1].budget.task_protection is True
    assert parsed.workers[0].budget.max_countdown == 60


def test_existing_vpc() -> None:
    network = {
        "vpcId": "vpc-0123456789abcdef0",
        "publicSubnetIds": ["subnet-00000001", "subnet-00000002"],
        "privateSubnetIds": ["subnet-00000003", "subnet-00000004"],
        "privateSubnetsReachAws": "vpcEndpoints",
    }
    config = load({"network": network})
    assert config.network == ExistingVpc(
        vpc_id="vpc-0123456789abcdef0",
        public_subnet_ids=("subnet-00000001", "subnet-00000002"),
        private_subnet_ids=("subnet-00000003", "subnet-00000004"),
        aws_access="vpcEndpoints",
    )
    assert not config.tasks_in_public_subnets


@pytest.mark.parametrize(
    "engine, version, family",
    [
        ("redis", None, "redis7"),
        ("valkey", None, "valkey8"),
        ("valkey", "7.2", "valkey7"),
        ("redis", "7.0", "redis7"),
    ],
)
def test_parameter_group_family_follows_engine_and_version(
    engine: str, version: str | None, family: str
) -> None:
    broker = {"engine": engine} | ({"engineVersion": version} if version else {})
    assert load({"broker": broker}).broker.parameter_group_family == family


def test_every_fargate_size_is_accepted() -> None:
    for cpu, memories in FARGATE_MEMORY.items():
        for memory in memories:
            load({"web": {"cpu": cpu, "memory": memory}})


def pools(*overrides: dict[str, object]) -> list[dict[str, object]]:
    """A valid pool list (first pool consumes every queue) with fields replaced."""
    result: list[dict[str, object]] = [dict(POOL), {"name": "second", "queues": ["default"]}]
    for index, override in enumerate(overrides):
        result[index] = {**result[index], **override}
    return result


# (raw config, key path the error must start with, text the allowed part must contain)
INVALID = [
    pytest.param({"maxCountdown": "soon"}, "maxCountdown", "an integer 0..86400", id="type"),
    pytest.param({"web": {"minCount": "2"}}, "web.minCount", "an integer >= 1", id="type-nested"),
    pytest.param(
        {"web": {"deletionProtection": "yes"}},
        "web.deletionProtection",
        "true, false",
        id="type-bool",
    ),
    pytest.param({"workers": "{}"}, "workers", "a list of worker pool objects", id="type-list"),
    pytest.param({"scheduler": "cron"}, "scheduler", "beat, eventbridge", id="enum-scheduler"),
    pytest.param(
        {"broker": {"engine": "memcached"}}, "broker.engine", "redis, valkey", id="enum-engine"
    ),
    pytest.param(
        {"network": {"natGateways": "two"}},
        "network.natGateways",
        "none, single, perAz",
        id="enum-nat",
    ),
    pytest.param({"logLevel": "verbose"}, "logLevel", "DEBUG, INFO", id="enum-log-level"),
    pytest.param(
        {"logRetentionDays": 10}, "logRetentionDays", "1, 3, 5, 7, 14, 30", id="retention"
    ),
    pytest.param({"colour": "blue"}, "colour", "production, scheduler", id="unknown-top"),
    pytest.param({"web": {"cpus": 256}}, "web.cpus", "cpu, memory", id="unknown-web"),
    pytest.param(
        {"workers": pools({"threads": 2})}, "workers[0].threads", "name, queues", id="unknown-pool"
    ),
    pytest.param(
        {"workers": pools({}, {"minCount": 0})},
        "workers[1].minCount",
        "an integer >= 1",
        id="min-count-zero",
    ),
    pytest.param(
        {"workers": pools({"minCount": 3, "maxCount": 2})},
        "workers[0].maxCount",
        "an integer >= 3",
        id="max-below-min",
    ),
    pytest.param(
        {"web": {"minCount": 3, "maxCount": 2}},
        "web.maxCount",
        "an integer >= 3",
        id="web-max-below-min",
    ),
    pytest.param(
        {"workers": pools({}, {"queues": ["default", "a,b"]})},
        "workers[1].queues[1]",
        "queue names: 1-80 letters, digits",
        id="queue-name-with-comma",
    ),
    pytest.param(
        {"workers": pools({}, {"queues": []})},
        "workers[1].queues",
        "a list of queue names",
        id="no-queues",
    ),
    pytest.param(
        {"workers": [{"name": "only", "queues": ["default"]}],
         "schedule": [{"name": "r", "task": "t.t", "every": 60, "queue": "long"}]},
        "schedule[0].queue",
        "a queue of workers[].queues: default",
        id="schedule-queue-nobody-consumes",
    ),
    pytest.param(
        {"schedule": [{"name": "r", "task": "t.t", "cron": "61 * * * *", "queue": "default"}]},
        "schedule[0].cron",
        "five crontab fields",
        id="schedule-cron-out-of-range",
    ),
    pytest.param(
        {"schedule": [{"name": "r", "task": "t.t", "cron": "30 2 * *", "queue": "default"}]},
        "schedule[0].cron",
        "minute hour day_of_month month_of_year day_of_week",
        id="schedule-cron-four-fields",
    ),
    pytest.param(
        {"schedule": [{"name": "r", "task": "t.t", "every": 60, "cron": "* * * * *",
                       "queue": "default"}]},
        "schedule[0].cron",
        "either cron",
        id="schedule-cron-and-every",
    ),
    pytest.param(
        {"schedule": [{"name": "r", "task": "t.t", "queue": "default"}]},
        "schedule[0].cron",
        "either cron",
        id="schedule-no-timing",
    ),
    pytest.param(
        {"schedule": [{"name": "r", "task": "t.t", "every": 0, "queue": "default"}]},
        "schedule[0].every",
        "an integer 1..",
        id="schedule-every-zero",
    ),
    pytest.param(
        {"schedule": [{"name": "r", "task": "t.t", "every": 60}]},
        "schedule[0].queue",
        "1-80 letters",
        id="schedule-queue-required",
    ),
    pytest.param(
        {"schedule": [{"name": "r r", "task": "t.t", "every": 60, "queue": "default"}]},
        "schedule[0].name",
        "1-40 letters",
        id="schedule-name",
    ),
    pytest.param(
        {"schedule": [{"name": "r", "task": "t t", "every": 60, "queue": "default"}]},
        "schedule[0].task",
        "a task name",
        id="schedule-task",
    ),
    pytest.param(
        {"schedule": [{"name": "r", "task": "t.t", "every": 60, "queue": "default",
                       "args": {"a": 1}}]},
        "schedule[0].args",
        "a JSON list",
        id="schedule-args-not-a-list",
    ),
    pytest.param(
        {"schedule": [{"name": "r", "task": "t.t", "every": 60, "queue": "default",
                       "kwargs": [1]}]},
        "schedule[0].kwargs",
        "a JSON object",
        id="schedule-kwargs-not-an-object",
    ),
    pytest.param(
        {"schedule": [{"name": "r", "task": "t.t", "every": 60, "queue": "default",
                       "when": "now"}]},
        "schedule[0].when",
        "name, task, cron, every, queue, args, kwargs",
        id="schedule-unknown-key",
    ),
    pytest.param(
        {"schedule": [{"name": "r", "task": "t.t", "every": 60, "queue": "default"},
                      {"name": "r", "task": "t.u", "every": 60, "queue": "default"}]},
        "schedule[1].name",
        "a name used by no other entry",
        id="schedule-duplicate-name",
    ),
    pytest.param({"schedule": {"a": 1}}, "schedule", "a list of schedule entries",
                 id="schedule-not-a-list"),
    pytest.param({"celeryApp": "proj/celery.py"}, "celeryApp", "a Python module path",
                 id="celery-app-a-file"),
    pytest.param({"celeryApp": "proj.celery"}, "image", "{context, dockerfile}",
                 id="other-app-needs-its-image"),
    pytest.param(
        {"celeryApp": "proj.celery", "image": {"uri": "x/y:1"}},
        "web.command",
        "your web server's command",
        id="other-app-needs-its-web-command",
    ),
    pytest.param(
        {"celeryApp": "proj.celery", "image": {"uri": "x/y:1"}, "web": {"command": ["w"]}},
        "workers",
        "pools consuming your app's queues",
        id="other-app-needs-its-workers",
    ),
    pytest.param(
        {"celeryApp": "proj.celery", "image": {"uri": "x/y:1"}, "web": {"command": ["w"]},
         "workers": [{"name": "a", "queues": ["celery"]}]},
        "schedule",
        "or [] for none",
        id="other-app-needs-its-schedule",
    ),
    pytest.param({"image": {"uri": "x/y:1", "context": "."}}, "image.context",
                 "not both", id="image-uri-and-build"),
    pytest.param({"image": {"uri": "x y"}}, "image.uri", "an image reference",
                 id="image-uri-space"),
    pytest.param({"image": {"context": "/abs"}}, "image.context",
                 "relative to the project directory", id="image-context-absolute"),
    pytest.param({"image": {"tag": "1"}}, "image.tag", "context, dockerfile, uri",
                 id="image-unknown-key"),
    pytest.param({"imageUri": "x/y:1"}, "imageUri", "image: {uri:", id="image-uri-renamed"),
    pytest.param({"web": {"command": "gunicorn app"}}, "web.command",
                 "a non-empty list of arguments", id="web-command-a-string"),
    pytest.param({"web": {"command": []}}, "web.command", "a non-empty list",
                 id="web-command-empty"),
    pytest.param({"web": {"command": ["gunicorn", ""]}}, "web.command[1]",
                 "a non-empty list of arguments", id="web-command-empty-argument"),
    pytest.param({"web": {"port": 80}}, "web.port", "an integer 1024..65535",
                 id="web-port-privileged"),
    pytest.param({"web": {"livenessPath": "livez"}}, "web.livenessPath",
                 "a URL path starting with /", id="web-liveness-path-relative"),
    pytest.param(
        {"workers": pools({}, {"name": "all"})},
        "workers[1].name",
        "a name used by no other pool",
        id="duplicate-pool",
    ),
    pytest.param(
        {"workers": pools({"name": "Big_Pool"})},
        "workers[0].name",
        "lowercase letters, digits and dashes",
        id="pool-name-not-dns-safe",
    ),
    pytest.param(
        {"workers": pools({"cpu": 1024, "memory": 1024})},
        "workers[0].memory",
        "2048, 3072, 4096, 5120, 6144, 7168, 8192",
        id="cpu-memory-pair",
    ),
    pytest.param(
        {"workers": pools({"cpu": 300})},
        "workers[0].cpu",
        "256, 512, 1024, 2048, 4096, 8192, 16384",
        id="cpu-size",
    ),
    pytest.param(
        {"workers": pools({"taskTimeout": 0})},
        "workers[0].taskTimeout",
        "1..86400",
        id="task-timeout-low",
    ),
    pytest.param(
        {"workers": pools({"taskTimeout": 86_401})},
        "workers[0].taskTimeout",
        "1..86400",
        id="task-timeout-high",
    ),
    pytest.param(
        {"workers": pools({}, {"maxStopTimeout": 121})},
        "workers[1].maxStopTimeout",
        "11..120",
        id="max-stop-timeout-high",
    ),
    pytest.param(
        {"workers": pools({"maxStopTimeout": 10})},
        "workers[0].maxStopTimeout",
        "11..120",
        id="max-stop-timeout-low",
    ),
    pytest.param(
        {"workers": pools({"heldPerSlot": 0})},
        "workers[0].heldPerSlot",
        "1..64",
        id="held-per-slot-low",
    ),
    pytest.param(
        {"workers": pools({}, {"heldPerSlot": 65})},
        "workers[1].heldPerSlot",
        "1..64",
        id="held-per-slot-high",
    ),
    pytest.param(
        {"workers": pools({"prefetchMultiplier": 0})},
        "workers[0].prefetchMultiplier",
        "1..64",
        id="prefetch-low",
    ),
    pytest.param(
        {"workers": pools({}, {"prefetchMultiplier": 3, "heldPerSlot": 2})},
        "workers[1].prefetchMultiplier",
        "1..2, or a larger heldPerSlot",
        id="prefetch-above-held",
    ),
    pytest.param(
        {"workers": pools({"maxQueueSeconds": 10})},
        "workers[0].maxQueueSeconds",
        "30..86400",
        id="max-queue-seconds-low",
    ),
    pytest.param(
        {"workers": pools({}, {"typicalTaskSeconds": 0})},
        "workers[1].typicalTaskSeconds",
        "a number > 0 and <= 300",
        id="typical-task-seconds-zero",
    ),
    pytest.param(
        {"workers": pools({"taskTimeout": 30, "typicalTaskSeconds": 31})},
        "workers[0].typicalTaskSeconds",
        "<= 30",
        id="typical-task-longer-than-timeout",
    ),
    pytest.param(
        {"workers": pools({"typicalTaskSeconds": "fast"})},
        "workers[0].typicalTaskSeconds",
        "a number",
        id="typical-task-seconds-type",
    ),
    pytest.param(
        {
            "alerts": {
                "email": "ops@example.com",
                "topicArn": "arn:aws:sns:eu-west-1:123456789012:a",
            }
        },
        "alerts.topicArn",
        "either email",
        id="alerts-both-targets",
    ),
    pytest.param(
        {"alerts": {"brokerMemoryPercent": 96}},
        "alerts.brokerMemoryPercent",
        "10..95",
        id="alerts-memory",
    ),
    pytest.param(
        {"web": {"requestTimeout": 111}},
        "web.requestTimeout",
        "1..110",
        id="request-timeout-too-long",
    ),
    pytest.param(
        {"web": {"certificateArn": "my-cert"}},
        "web.certificateArn",
        "certificate ARN",
        id="certificate-arn",
    ),
    pytest.param(
        {"broker": {"engine": "redis", "engineVersion": "8.0"}},
        "broker.engineVersion",
        "major 7",
        id="engine-version",
    ),
    pytest.param({"broker": {"replicas": 6}}, "broker.replicas", "0..5", id="replicas"),
    pytest.param(
        {"broker": {"authTokenGeneration": 0}},
        "broker.authTokenGeneration",
        ">= 1",
        id="token-generation",
    ),
    pytest.param({"network": {"cidr": "10.0.0.0/28"}}, "network.cidr", "/16../24", id="cidr"),
    pytest.param(
        {
            "network": {
                "vpcId": "vpc-01234567",
                "publicSubnetIds": ["subnet-00000001"],
                "privateSubnetIds": ["subnet-00000002", "subnet-00000003"],
            }
        },
        "network.publicSubnetIds",
        "at least two",
        id="one-subnet",
    ),
    pytest.param(
        {
            "network": {
                "vpcId": "vpc-01234567",
                "publicSubnetIds": ["subnet-00000001", "subnet-00000002"],
                "privateSubnetIds": ["subnet-00000003", "subnet-00000004"],
            }
        },
        "network.privateSubnetsReachAws",
        "vpcEndpoints (an S3 gateway endpoint on the private subnets' route tables and "
        "interface endpoints ecr.api, ecr.dkr, logs, secretsmanager",
        id="existing-vpc-without-stated-access",
    ),
    pytest.param(
        {
            "network": {
                "vpcId": "vpc-01234567",
                "publicSubnetIds": ["subnet-00000001", "subnet-00000002"],
                "privateSubnetIds": ["subnet-00000003", "subnet-00000004"],
                "privateSubnetsReachAws": "internet",
            }
        },
        "network.privateSubnetsReachAws",
        "nat (a NAT gateway or another route to the internet)",
        id="existing-vpc-unknown-access",
    ),
    pytest.param(
        {"network": {"vpcId": "vpc-01234567", "cidr": "10.0.0.0/16"}},
        "network.cidr",
        "either {cidr, natGateways}",
        id="mixed-network",
    ),
    pytest.param(
        {"production": True, **PRODUCTION_NEEDS, "network": {"natGateways": "none"}},
        "network.natGateways",
        "single, perAz",
        id="production-public-ip",
    ),
    pytest.param(
        {"production": True, "alerts": {"email": "ops@celery.io"}},
        "web.certificateArn",
        "or web.allowPlainHttp: true to accept plain HTTP",
        id="production-without-certificate",
    ),
    pytest.param(
        {"production": True, "web": {"certificateArn": CERTIFICATE}},
        "alerts.email",
        "or alerts.allowNoNotifications: true to accept alarms that notify nobody",
        id="production-without-alert-target",
    ),
    pytest.param(
        {"web": {"certificateArn": CERTIFICATE, "allowPlainHttp": True}},
        "web.allowPlainHttp",
        "false, or leave web.certificateArn out",
        id="plain-http-with-certificate",
    ),
    pytest.param(
        {
            "alerts": {
                "topicArn": "arn:aws:sns:us-east-1:210987654321:ops",
                "allowNoNotifications": True,
            }
        },
        "alerts.allowNoNotifications",
        "false, or no alerts.email/alerts.topicArn",
        id="silence-with-topic",
    ),
    pytest.param(
        {"web": {"allowPlainHttp": "yes"}},
        "web.allowPlainHttp",
        "true, false",
        id="type-plain-http",
    ),
    pytest.param({"cpuArchitecture": "arm64"}, "cpuArchitecture", "X86_64, ARM64", id="enum-arch"),
    pytest.param(
        {"workers": pools({"fargateSpot": "yes"})},
        "workers[0].fargateSpot",
        "true, false",
        id="type-spot",
    ),
    pytest.param(
        {"workers": pools({"taskTimeout": 101, "fargateSpot": True})},
        "workers[0].fargateSpot",
        "false, or taskTimeout <= 100",
        id="spot-cold-pool",
    ),
    pytest.param(
        {"workers": pools({"taskTimeout": 46, "maxStopTimeout": 60, "fargateSpot": True})},
        "workers[0].fargateSpot",
        "false, or taskTimeout <= 45",
        id="spot-cold-pool-lower-cap",
    ),
    pytest.param(
        {"cpuArchitecture": "ARM64", "workers": pools({"taskTimeout": 60, "fargateSpot": True})},
        "workers[0].fargateSpot",
        "false, or cpuArchitecture: X86_64",
        id="spot-arm64",
    ),
]


@pytest.mark.parametrize("raw, key_path, allowed", INVALID)
def test_invalid_config_names_key_and_allowed_values(
    raw: dict[str, object], key_path: str, allowed: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load(raw)
    message = str(caught.value)
    assert message.startswith(f"{key_path}: "), message
    assert allowed in message, message


@pytest.mark.parametrize(
    "pool, target",
    [
        ({}, 20),  # nothing to derive from: 10 messages per slot, concurrency 2
        ({"typicalTaskSeconds": 1}, 300),  # half of the default 300 s, 2 slots, 1 s tasks
        ({"typicalTaskSeconds": 2.5, "maxQueueSeconds": 60, "concurrency": 4}, 48),
        ({"typicalTaskSeconds": 250, "maxQueueSeconds": 60}, 1),  # never below one
        ({"typicalTaskSeconds": 1, "backlogPerTask": 7}, 7),  # the direct knob wins
        ({"maxQueueSeconds": 60}, 20),  # a latency alone says nothing of throughput
    ],
)
def test_backlog_target_from_latency_and_task_duration(
    pool: dict[str, object], target: int
) -> None:
    (loaded,) = load({"workers": [{**POOL, **pool}]}).workers
    assert loaded.backlog_per_task == target


def test_alerts_default_to_no_target_and_derived_thresholds() -> None:
    alerts = load({}).alerts
    assert (alerts.email, alerts.topic_arn, alerts.notifies) == (None, None, False)
    assert (alerts.http_5xx_percent, alerts.broker_memory_percent) == (5, 80)
    assert (alerts.broker_cpu_percent, alerts.broker_connections) == (90, 52_000)
    assert load({"alerts": json.dumps({"email": "a@example.com"})}).alerts.notifies


def test_error_lists_memory_sizes_for_the_cpu_given() -> None:
    with pytest.raises(ConfigError, match=re.escape("allowed: 512, 1024, 2048")):
        load({"web": {"cpu": 256, "memory": 4096}})


#: A valid object around the key under test, by section: the key's value replaces its own.
VALID_AROUND: dict[str, dict[str, object]] = {
    "workers[]": {"name": "all", "queues": list(QUEUES)},
    "schedule[]": {"name": "n", "task": "t.t", "every": 60, "queue": "default"},
    "network": {
        "vpcId": "vpc-01234567",
        "publicSubnetIds": ["subnet-00000001", "subnet-00000002"],
        "privateSubnetIds": ["subnet-00000003", "subnet-00000004"],
        "privateSubnetsReachAws": "nat",
    },
}


def wrong_value(row: Key) -> object:
    """A value of the wrong type for ``row``'s kind."""
    if isinstance(row, Text):
        return 5
    if isinstance(row, Object):
        return [1]
    if isinstance(row, ObjectList):
        return {"an": "object"}
    if isinstance(row, Described):
        return 5 if row.type_name == "string" else "x"
    return "x"


def config_with(section: Section, row: Key, value: object) -> tuple[dict[str, object], str]:
    """A config whose only mistake is ``value`` at ``row``'s key, and that key's path."""
    if not section.path:
        return {row.name: value}, row.name
    if section.path.endswith("[]"):
        name = section.path[:-2]
        entry = dict(VALID_AROUND[section.path])
        if row.name in ("cron", "every"):
            entry.pop("every")  # one timing at a time
        return {name: [{**entry, row.name: value}]}, f"{name}[0].{row.name}"
    around = VALID_AROUND.get(section.path, {}) if row.name in EXISTING_VPC_KEYS else {}
    return {section.path: {**around, row.name: value}}, f"{section.path}.{row.name}"


@pytest.mark.parametrize(
    "section, row",
    [pytest.param(section, row, id=section.key_path(row.name))
     for section in SECTIONS for row in section.rows],
)  # fmt: skip
def test_every_key_is_read_and_checked_by_its_row(section: Section, row: Key) -> None:
    """Each row of each table is the one the loader reads its key by: a value of the wrong type
    fails with the key's path and exactly the row's allowed text (what the reference shows)."""
    raw, path = config_with(section, row, wrong_value(row))
    with pytest.raises(ConfigError) as caught:
        load(raw)
    allowed = (
        row.allowed_at_most(DEFAULT_TASK_TIMEOUT) if isinstance(row, Number) else row.allowed
    )
    assert str(caught.value).startswith(f"{path}: "), str(caught.value)
    assert str(caught.value).endswith(f"; allowed: {allowed}"), str(caught.value)


def test_the_schedule_table_names_what_the_schedule_reader_reads() -> None:
    """celery_ecs.schedule reads the entries (beat reads them the same way): the table that
    documents them lists exactly its keys."""
    assert SCHEDULE_ENTRY.names == ENTRY_KEYS


def test_a_loader_reading_a_key_as_another_kind_is_a_bug_not_a_config_error() -> None:
    fields = Fields({}, "web", WEB.rows)
    with pytest.raises(TypeError, match=r"web.port is declared Integer, read as Text"):
        fields.text("port")
    with pytest.raises(KeyError):
        fields.integer("noSuchKey")
    with pytest.raises(TypeError, match="other choices"):
        fields_broker = Fields({}, "broker", BROKER.rows)
        fields_broker.choice("engine", ("redis",))
