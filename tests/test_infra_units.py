"""Pure helpers of the Pulumi program: image source, broker URL, subnets, metric math, schedule
planning, and the rendered task definitions other tests start processes from."""

from __future__ import annotations

import ipaddress
import itertools
import re
from urllib.parse import unquote, urlsplit

import pytest

from celery_ecs.schedule import Cron, Every, PeriodicEntry
from celery_ecs.settings import check_redis_url
from infra.broker import AUTH_TOKEN_SPECIALS, broker_url, final_snapshot_name
from infra.config import load
from infra.eventbridge import plan_schedule
from infra.image import ecr_repository
from infra.network import subnet_cidrs
from infra.scaling import (
    SCALE_OUT_STEPS,
    SCALE_OUT_THRESHOLD,
    BacklogTarget,
    backlog_metric_queries,
    scale_out_alarm_queries,
    scale_out_steps,
)
from infra.schedule_expr import ScheduleError
from tests.support import run_program


def test_ecr_repository_of_an_image_uri() -> None:
    uri = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/app@sha256:" + "0" * 64
    assert ecr_repository(uri) == ("123456789012", "eu-west-1", "team/app")
    assert ecr_repository("123456789012.dkr.ecr.us-east-1.amazonaws.com/app:v1") == (
        "123456789012",
        "us-east-1",
        "app",
    )
    assert ecr_repository("ghcr.io/acme/app:1.0") is None


def test_broker_url_encodes_the_token_and_checks_certificates() -> None:
    token = f"abc{AUTH_TOKEN_SPECIALS}xyz"
    url = broker_url(token, "master.x.cache.amazonaws.com")
    check_redis_url("CELERY_BROKER_URL", url)  # the app's own rule for rediss:// URLs
    parts = urlsplit(url)
    assert parts.scheme == "rediss" and parts.port == 6379 and parts.path == "/0"
    assert unquote(parts.password or "") == token
    assert parts.query == "ssl_cert_reqs=required"


#: What a final snapshot name may be: lowercase (ElastiCache stores it so), from a letter,
#: letters, digits and single hyphens, not ending with one.
SNAPSHOT_NAME = re.compile(r"[a-z](?!.*--)[a-z0-9-]{0,253}[a-z0-9]")


@pytest.mark.parametrize(
    "prefix", ["celery-ecs-prod", "Celery_ECS--Prod", "9-lives", "--", "x" * 300, "a-"]
)
def test_final_snapshot_names_follow_elasticache_rules(prefix: str) -> None:
    name = final_snapshot_name(prefix, "0a1b2c3d")
    assert SNAPSHOT_NAME.fullmatch(name), name
    assert name.endswith("-final-0a1b2c3d") and len(name) <= 255
    # Another broker (a re-created stack of the same name) never reuses the name.
    assert final_snapshot_name(prefix, "ffffffff") != name


@pytest.mark.parametrize("cidr", ["10.0.0.0/16", "172.16.0.0/20", "192.168.10.0/24"])
def test_subnets_fit_the_vpc_and_do_not_overlap(cidr: str) -> None:
    public, private = subnet_cidrs(cidr)
    subnets = [ipaddress.IPv4Network(block) for block in public + private]
    assert len(subnets) == 4
    assert all(subnet.subnet_of(ipaddress.IPv4Network(cidr)) for subnet in subnets)
    assert not any(a.overlaps(b) for i, a in enumerate(subnets) for b in subnets[i + 1 :])


def backlog_target(*queues: str, per_task: int = 10) -> BacklogTarget:
    return BacklogTarget("ns", "pool", queues, per_task, "stack-scale-out-pool")


def test_backlog_of_one_queue_needs_no_sum() -> None:
    one, two = backlog_target("default"), backlog_target("a", "b")
    assert backlog_metric_queries(one, "c", "s")[-1]["expression"] == "backlog0 / tasks"
    assert scale_out_alarm_queries(one)[-1]["expression"] == "backlog0 / workers"
    assert (
        backlog_metric_queries(two, "c", "s")[-1]["expression"]
        == "SUM([backlog0, backlog1]) / tasks"
    )
    assert scale_out_alarm_queries(two)[-1]["expression"] == "SUM([backlog0, backlog1]) / workers"


@pytest.mark.parametrize("per_task", [1, 3, 20, 120, 999])
def test_scale_out_steps_cover_every_breach_and_never_add_more_than_asked(per_task: int) -> None:
    """Contiguous from the threshold up, the last open-ended; at any backlog per worker ``m``, the
    step taken adds p % with 1 + p/100 <= m / target (proportional, rounded down) and at least
    half of that (so a large burst is not served in many small steps)."""
    steps = scale_out_steps(per_task)
    threshold = SCALE_OUT_THRESHOLD * per_task
    assert float(steps[0]["metric_interval_lower_bound"]) == 0
    for below, above in itertools.pairwise(steps):
        assert below["metric_interval_upper_bound"] == above["metric_interval_lower_bound"]
    assert "metric_interval_upper_bound" not in steps[-1]
    breaches = [threshold + per_task * k / 8 for k in range(0, 2400)]
    for metric in breaches:
        (step,) = [
            s for s in steps
            if float(s["metric_interval_lower_bound"]) <= metric - threshold
            and metric - threshold < float(s.get("metric_interval_upper_bound", "inf"))
        ]  # fmt: skip
        growth = 1 + step["scaling_adjustment"] / 100
        wanted = metric / per_task
        assert growth <= wanted + 1e-9, (metric, step)
        if wanted < 2 * SCALE_OUT_STEPS[-1][0]:
            assert growth > wanted / 2, (metric, step)


def test_schedule_plan_translates_every_entry() -> None:
    schedule = load({}).schedule
    planned = plan_schedule(schedule)
    assert [p.entry for p in planned] == list(schedule)
    assert [p.expression for p in planned] == ["rate(1 hour)", "cron(30 2 * * ? *)"]


@pytest.mark.parametrize(
    "entry, problem",
    [
        (PeriodicEntry("fast", "t", Every(30)), "fast"),
        (PeriodicEntry("x" * 41, "t", Cron(minute="0")), "rule name"),
        (PeriodicEntry("with space", "t", Cron(minute="0")), "rule name"),
        # The input transformer would put the event's time in its place.
        (PeriodicEntry("odd", "t", Cron(minute="0"), args=("<time>",)), "contain <time>"),
        # ECS takes at most 8192 characters of overrides, the command included.
        (PeriodicEntry("big", "t", Cron(minute="0"), kwargs={"blob": "x" * 8100}), "8192"),
    ],
)
def test_schedule_plan_names_the_entry_it_cannot_run(entry: PeriodicEntry, problem: str) -> None:
    with pytest.raises(ScheduleError, match=problem):
        plan_schedule([entry])


def test_rendered_task_definitions_for_local_processes() -> None:
    """What ``run_program(...).task_definitions()`` hands to tests that start the real processes."""
    tasks = run_program(
        {
            "workers": [
                {"name": "fast", "queues": ["default"], "concurrency": 3},
                {"name": "slow", "queues": ["long"], "taskTimeout": 1800},
            ]
        }
    ).task_definitions()
    assert set(tasks) == {"web", "worker-fast", "worker-slow", "beat"}
    fast = tasks["worker-fast"]
    assert fast.command[:4] == ["celery", "--app", "app.celery_app", "worker"]
    assert fast.environment["CELERY_POOL_NAME"] == "fast"
    assert set(fast.secrets) == {"CELERY_BROKER_URL"}
    assert tasks["worker-slow"].environment["REMAP_SIGTERM"] == "SIGQUIT"
