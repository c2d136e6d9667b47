"""Pure helpers of the Pulumi program: image source, broker URL, subnets, metric math, schedule
planning, and the rendered task definitions other tests start processes from."""

from __future__ import annotations

import ipaddress
from urllib.parse import unquote, urlsplit

import pytest

from app.schedule import SCHEDULE, Cron, Every, PeriodicEntry
from app.settings import check_redis_url
from infra.broker import AUTH_TOKEN_SPECIALS, broker_url
from infra.eventbridge import plan_schedule
from infra.image import ecr_repository
from infra.network import subnet_cidrs
from infra.scaling import BacklogTarget, backlog_metric_queries
from infra.schedule_expr import ScheduleError, to_eventbridge_expression
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


@pytest.mark.parametrize("cidr", ["10.0.0.0/16", "172.16.0.0/20", "192.168.10.0/24"])
def test_subnets_fit_the_vpc_and_do_not_overlap(cidr: str) -> None:
    public, private = subnet_cidrs(cidr)
    subnets = [ipaddress.IPv4Network(block) for block in public + private]
    assert len(subnets) == 4
    assert all(subnet.subnet_of(ipaddress.IPv4Network(cidr)) for subnet in subnets)
    assert not any(a.overlaps(b) for i, a in enumerate(subnets) for b in subnets[i + 1 :])


def test_backlog_of_one_queue_needs_no_sum() -> None:
    queries = backlog_metric_queries(BacklogTarget("ns", ["default"], 10), "c", "s")
    assert queries[-1]["expression"] == "backlog0 / tasks"
    queries = backlog_metric_queries(BacklogTarget("ns", ["a", "b"], 10), "c", "s")
    assert queries[-1]["expression"] == "SUM([backlog0, backlog1]) / tasks"


def test_schedule_plan_translates_every_entry() -> None:
    planned = plan_schedule(SCHEDULE)
    assert [p.entry for p in planned] == list(SCHEDULE)
    assert [p.expression for p in planned] == [
        to_eventbridge_expression(e.schedule) for e in SCHEDULE
    ]


@pytest.mark.parametrize(
    "entry, problem",
    [
        (PeriodicEntry("fast", "t", Every(30)), "fast"),
        (PeriodicEntry("x" * 41, "t", Cron(minute="0")), "rule name"),
        (PeriodicEntry("with space", "t", Cron(minute="0")), "rule name"),
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
