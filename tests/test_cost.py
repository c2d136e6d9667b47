"""The monthly cost estimate (devtools/plan/cost.py): each line from the dated price table, the
totals, the savings of the cheaper choices checked against pricing those choices, and no number
at all for a region without a table."""

from __future__ import annotations

import json
import math
import re
from functools import cache
from pathlib import Path

import pytest

from celery_ecs.schedule import Cron, Every
from devtools.plan import report
from devtools.plan.cost import (
    HOURS_PER_MONTH,
    LOG_GB_PER_TASK_MONTH,
    OPT_IN,
    PRICES,
    PUT_METRIC_DATA_REQUESTS_PER_TASK_MONTH,
    QUIET_LOG_GB_PER_TASK_MONTH,
    TABLE_METADATA,
    Estimate,
    estimate,
    format_estimate,
    price_paths,
    price_table,
    quiet_load_balancer_lcus,
    runs_per_month,
)
from devtools.render import stack_file_config
from infra.config import load
from tests.support import ROOT, shared_run, shared_stack_runs

REGION = "us-east-1"
POOLS = [
    {"name": "short", "queues": ["default"], "taskTimeout": 60, "minCount": 2, "maxCount": 6},
    {"name": "long", "queues": ["long"], "taskTimeout": 1800},
]


def priced(config: dict[str, object], region: str = REGION) -> Estimate:
    return _priced(json.dumps(config, sort_keys=True), region)


@cache
def _priced(config: str, region: str) -> Estimate:
    """One rendering per config and region (several tests price the same ones)."""
    raw = json.loads(config)
    return estimate(shared_run(raw, region=region), load(raw), region)


def line(result: Estimate, start: str) -> tuple[float, float]:
    (found,) = [item for item in result.lines if item.item.startswith(start)]
    assert found.low is not None and found.high is not None
    return found.low, found.high


def fargate(result: Estimate) -> tuple[float, float]:
    lines = [item for item in result.lines if item.item.startswith("Fargate ")]
    return sum(item.low or 0 for item in lines), sum(item.high or 0 for item in lines)


def test_every_price_table_is_dated_and_sourced() -> None:
    tables = sorted(PRICES.glob("*.json"))
    assert tables
    for path in tables:
        data = json.loads(path.read_text())
        assert data["region"] == path.stem and data["currency"] == "USD"
        assert len(data["date"]) == 10 and data["date"].startswith("20")
        sections = set(data) - TABLE_METADATA
        sources = {"fargateSpotDiscount": "fargateSpot", "publicIpv4Hour": "publicIpv4"}
        sources |= {"elasticacheNodeHour": "elasticache"}
        for section in sections:
            assert sources.get(section, section) in data["sources"], section
        # Graviton tasks cost about 20 % less, for CPU and memory alike.
        x86, arm = data["fargate"]["X86_64"], data["fargate"]["ARM64"]
        for unit in ("vcpuHour", "gbHour"):
            assert arm[unit] / x86[unit] == pytest.approx(0.8, abs=0.01)
        for node_type, redis in data["elasticacheNodeHour"]["redis"].items():
            # AWS prices Valkey nodes 20 % below Redis OSS.
            assert math.isclose(data["elasticacheNodeHour"]["valkey"][node_type], 0.8 * redis)


@pytest.mark.parametrize("path", sorted(PRICES.glob("*.json")), ids=lambda path: path.stem)
def test_every_price_is_checked_against_the_price_list_or_said_unchecked(path: Path) -> None:
    """Every number of a table is in exactly one list of its priceList section: checked (with
    the SKU, the file and its publicationDate, and the same price), unchecked (with the offer
    file and usage type to check it against), or not a list price at all (with why)."""
    data = json.loads(path.read_text())
    checks = data["priceList"]
    lists = [set(checks["checked"]), set(checks["unchecked"]), set(checks["notInPriceList"])]
    assert sum(map(len, lists)) == len(set.union(*lists)), "a price is in two lists"
    assert set.union(*lists) == set(price_paths(data))
    for price, check in checks["checked"].items():
        assert check["url"].startswith("https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/")
        assert check["sku"] and check["publicationDate"]
        value: object = data
        for key in price.split("."):
            value = value[key]  # type: ignore[index]
        assert float(check["pricePerUnit"]) == pytest.approx(value)
    for hint in checks["unchecked"].values():
        assert hint["offer"] and hint["usageType"]
    assert all(checks["notInPriceList"].values())


@pytest.mark.parametrize("path", sorted(PRICES.glob("*.json")), ids=lambda path: path.stem)
def test_every_checked_price_names_its_file_version_and_the_copy_it_was_read_from(
    path: Path,
) -> None:
    """A checked line's URL is its offer file's version in the table's region, the version is
    the file's publicationDate (AWS names a version by the time it was published), and the copy
    it was read from is a public repository's file at a commit, so anyone can read it again."""
    data = json.loads(path.read_text())
    checks = data["priceList"]
    for price, check in checks["checked"].items():
        version = "".join(filter(str.isdigit, check["publicationDate"]))
        assert re.fullmatch(r"\d{14}", version), price
        assert check["url"].startswith(
            f"https://pricing.us-east-1.amazonaws.com/offers/v1.0/aws/{check['offer']}/{version}/"
            f"{data['region']}/index."
        ), price
        copy = checks["copies"][check["copy"]]
        assert re.fullmatch(r"[\w.-]+/[\w.-]+", copy["repository"]), check["copy"]
        assert re.fullmatch(r"[0-9a-f]{40}", copy["commit"]) and copy["path"] and copy["what"]
    used = {check["copy"] for check in checks["checked"].values()}
    assert set(checks.get("copies", {})) == used, "a copy no checked line was read from"


def test_the_estimate_says_how_many_prices_are_unchecked() -> None:
    result = priced({})
    assert result.prices is not None
    unchecked = len(result.prices.unchecked)
    assert unchecked and f"Not yet checked against AWS's price list files: {unchecked} of" in (
        " ".join(format_estimate(result))
    )


def test_the_cost_page_says_how_many_prices_are_checked() -> None:
    table = price_table(REGION)
    assert table is not None
    checked = len(table.data["priceList"]["checked"])
    page = " ".join((ROOT / "docs/reference/cost.md").read_text().split())
    assert f"**{checked} of its {checked + len(table.unchecked)} list prices are checked" in page


def test_fargate_lines_are_size_times_price_times_count() -> None:
    result = priced({"workers": POOLS, "web": {"minCount": 1, "maxCount": 3}})
    rates = price_table(REGION)["fargate"]["ARM64"]  # type: ignore[index]
    web_hour = 0.25 * rates["vcpuHour"] + 0.5 * rates["gbHour"]
    assert line(result, "Fargate web:") == pytest.approx(
        (web_hour * HOURS_PER_MONTH, 3 * web_hour * HOURS_PER_MONTH)
    )
    worker_hour = web_hour  # the default worker size is Fargate's smallest too
    assert line(result, "Fargate worker-short:") == pytest.approx(
        (2 * worker_hour * HOURS_PER_MONTH, 6 * worker_hour * HOURS_PER_MONTH)
    )


def test_totals_are_the_sum_of_the_lines() -> None:
    result = priced(stack_file_config("dev"))
    low, high = result.totals
    assert low == pytest.approx(sum(item.low for item in result.lines if item.low is not None))
    assert high == pytest.approx(sum(item.high for item in result.lines if item.high is not None))
    assert low < high


def test_nat_gateways_and_their_addresses_are_priced_per_gateway() -> None:
    single = priced({"network": {"natGateways": "single"}})
    per_az = priced({"network": {"natGateways": "perAz"}})
    assert line(per_az, "NAT gateways: 2")[0] == pytest.approx(
        2 * line(single, "NAT gateways: 1")[0]
    )
    assert line(per_az, "Public IPv4: NAT gateways, 2")[0] == pytest.approx(2 * 3.65)
    # Behind NAT, tasks get no public IP of their own.
    assert not [item for item in per_az.lines if item.item.startswith("Public IPv4: tasks")]


def test_arm64_saving_is_what_arm64_tasks_cost_less() -> None:
    config = {"workers": POOLS}
    x86, arm = priced({**config, "cpuArchitecture": "X86_64"}), priced(config)
    (saving,) = [s for s in x86.savings if s.setting == "cpuArchitecture: ARM64"]
    assert saving.low[0] == pytest.approx(fargate(x86)[0] - fargate(arm)[0])
    assert saving.high[0] == pytest.approx(fargate(x86)[1] - fargate(arm)[1])
    assert not [s for s in arm.savings if s.setting.startswith("cpuArchitecture")]


def test_spot_saving_is_offered_for_warm_pools_only_and_matches_pricing_spot() -> None:
    # Spot runs X86_64 only: a stack on ARM64 (the default) is offered no Spot.
    assert not [s for s in priced({"workers": POOLS}).savings if "fargateSpot" in s.setting]
    plain = priced({"workers": POOLS, "cpuArchitecture": "X86_64"})
    settings = [saving.setting for saving in plain.savings]
    assert "workers[0].fargateSpot: true" in settings
    assert "workers[1].fargateSpot: true" not in settings  # cold: tasks outlast the notice
    assert any("workers[1].fargateSpot" in refusal for refusal in plain.refused)
    spot = priced({"workers": [{**POOLS[0], "fargateSpot": True}, POOLS[1]]})
    (saving,) = [s for s in plain.savings if s.setting == "workers[0].fargateSpot: true"]
    # The lines price Spot at the conservative end of its discount, as the saving's low end.
    before, after = line(plain, "Fargate worker-short:"), line(spot, "Fargate worker-short:")
    assert saving.low[0] == pytest.approx(before[0] - after[0])
    assert saving.high[0] == pytest.approx(before[1] - after[1])
    assert saving.high[1] > saving.high[0]  # and up to 70 % off
    # The first task stays on regular Fargate: at a count of one, Spot saves nothing.
    one = priced({"workers": [{**POOLS[0], "minCount": 1}, POOLS[1]], "cpuArchitecture": "X86_64"})
    (single,) = [s for s in one.savings if s.setting == "workers[0].fargateSpot: true"]
    assert single.low == (0.0, 0.0) and single.high[0] > 0
    # Spot in use rules out ARM64, and the estimate says why.
    assert any(refusal.startswith("cpuArchitecture: ARM64") for refusal in spot.refused)


def test_valkey_saving_is_what_valkey_nodes_cost_less() -> None:
    redis, valkey = priced({"broker": {"engine": "redis"}}), priced({})
    (saving,) = [s for s in redis.savings if s.setting == "broker.engine: valkey"]
    assert saving.low[0] == pytest.approx(
        line(redis, "ElastiCache redis")[0] - line(valkey, "ElastiCache valkey")[0]
    )
    assert not [s for s in valkey.savings if s.setting.startswith("broker.engine")]


def test_a_node_type_without_price_is_said_not_guessed() -> None:
    result = priced({"broker": {"nodeType": "cache.r7g.4xlarge"}})
    (broker,) = [item for item in result.lines if item.item.startswith("ElastiCache")]
    assert broker.low is None and broker.item in result.unpriced
    text = "\n".join(format_estimate(result))
    assert "no price" in text and "leaves out what the table has no price for" in text


def test_a_region_without_a_table_gets_no_numbers() -> None:
    result = priced({}, region="eu-west-1")
    assert result.prices is None and result.lines == ()
    (text,) = format_estimate(result)
    assert text.startswith("No price table for eu-west-1") and "$" not in text


@pytest.mark.parametrize(
    "schedule, runs",
    [
        (Every(3600), HOURS_PER_MONTH),
        (Every(60), HOURS_PER_MONTH * 60),
        (Cron(minute="30", hour="2"), 365 / 12),
        (Cron(minute="0", hour="*/6", day_of_week="mon-fri"), 4 * 261 / 12),
    ],
)
def test_runs_per_month(schedule: Every | Cron, runs: float) -> None:
    assert runs_per_month(schedule) == pytest.approx(runs)


def test_eventbridge_tasks_are_priced_per_run() -> None:
    result = priced({"scheduler": "eventbridge"})
    hourly = line(result, "Fargate enqueue (purge-expired-idempotency-keys)")[0]
    # Hourly runs of one billed minute: 730 runs x 1/60 h of a 0.25 vCPU / 0.5 GB task.
    rates = price_table(REGION)["fargate"]["ARM64"]  # type: ignore[index]
    assert hourly == pytest.approx(730 / 60 * (0.25 * rates["vcpuHour"] + 0.5 * rates["gbHour"]))


def test_monitoring_is_priced_from_what_the_program_renders() -> None:
    """Custom metrics are what the app writes (per queue, per pool, beat's heartbeat), alarms
    are billed per metric they read (high-resolution ones at their own price), the dashboard,
    and the alert topic's key only when alerts.email creates one."""
    cloudwatch = price_table(REGION)["cloudwatch"]  # type: ignore[index]
    beat = priced({"workers": POOLS})
    # Backlog and OldestMessageAge of default and long, Workers of short and long, BeatHeartbeat.
    assert line(beat, "CloudWatch metrics: 7 from the app") == pytest.approx(
        (7 * cloudwatch["metricMonth"],) * 2
    )
    # Target tracking: 2 alarms each for short and long (a queue and DesiredTaskCount) and the
    # web's CPU (one metric): 6 alarms, 10 metrics. The program's: queue age and tasks below
    # minimum per pool (one metric each), beat silent, the two 5xx rates (errors and requests),
    # three broker alarms over its one node: 10 alarms, 12 metrics.
    assert line(beat, "CloudWatch alarms: 16 standard (6 of target tracking), 22 metrics") == (
        pytest.approx((22 * cloudwatch["alarmMetricMonth"],) * 2)
    )
    # The step policies' alarms read a queue's backlog and the pool's workers every 10 s.
    assert line(beat, "CloudWatch alarms: 2 high-resolution, 4 metrics") == pytest.approx(
        (4 * cloudwatch["highResolutionAlarmMetricMonth"],) * 2
    )
    assert not [item for item in beat.lines if item.item.startswith("CloudWatch dashboard")]
    shown = priced({"workers": POOLS, "dashboard": True})
    assert line(shown, "CloudWatch dashboard: 1") == (cloudwatch["dashboardMonth"],) * 2
    assert not [item for item in beat.lines if item.item.startswith("KMS")]
    # No beat, no heartbeat; a pool sharing both queues adds only its Workers metric.
    eventbridge = priced({"workers": POOLS, "scheduler": "eventbridge"})
    assert line(eventbridge, "CloudWatch metrics: 6 from the app")
    overflow = {"name": "overflow", "queues": ["default", "long"], "minCount": 1, "maxCount": 2}
    assert line(priced({"workers": [*POOLS, overflow]}), "CloudWatch metrics: 8 from the app")
    # The alert topic's key, with alerts.email only (an existing topic needs none).
    emailed = priced({"workers": POOLS, "alerts": {"email": "ops@example.com"}})
    kms = price_table(REGION)["kms"]  # type: ignore[index]
    assert line(emailed, "KMS key: 1") == (kms["keyMonth"],) * 2
    topic = {"topicArn": "arn:aws:sns:us-east-1:123456789012:ops"}
    assert not [i for i in priced({"alerts": topic}).lines if i.item.startswith("KMS")]
    assert emailed.totals[0] == pytest.approx(beat.totals[0] + kms["keyMonth"])


def test_put_metric_data_is_priced_per_request_of_every_worker_task() -> None:
    """Each worker task sends one PutMetricData request per round (every 10 s), all month;
    the web and beat send none."""
    cloudwatch = price_table(REGION)["cloudwatch"]  # type: ignore[index]
    estimate = priced({"workers": POOLS})
    requests_per_task = 730 * 3600 / 10
    assert requests_per_task == PUT_METRIC_DATA_REQUESTS_PER_TASK_MONTH
    workers = load({"workers": POOLS}).workers
    low, high = sum(p.min_count for p in workers), sum(p.max_count for p in workers)
    assert (low, high) != (0, 0)
    assert line(estimate, "CloudWatch PutMetricData: one request per worker task") == (
        pytest.approx(
            tuple(count * requests_per_task / 1000 * cloudwatch["requestsPer1000"]
                  for count in (low, high))
        )
    )  # fmt: skip
    assert "PutMetricData request every 10 s" in "\n".join(estimate.assumptions)


def test_the_assumptions_state_the_free_tiers_from_the_table() -> None:
    text = "\n".join(priced({}).assumptions)
    assert "free tier (10 custom metrics, 10 standard alarm metrics, 3 dashboards" in text
    assert "1,000,000 API requests a month) is not deducted" in text
    assert "first 1,000 a month free" in text


def test_every_line_says_what_it_is_for() -> None:
    """A guarantee, or the key that turns it on; only opt-in lines have a floor of 0."""
    for config in ({}, stack_file_config("dev"), stack_file_config("prod")):
        for item in priced(config).lines:
            assert item.need and item.kind, item
            assert (item.floor == 0) is item.need.startswith(OPT_IN), item


def test_the_floor_is_the_smallest_sizes_at_min_count_without_opt_in_lines() -> None:
    prices = price_table(REGION)
    assert prices is not None
    rates = prices["fargate"]["ARM64"]
    smallest_task = (0.25 * rates["vcpuHour"] + 0.5 * rates["gbHour"]) * HOURS_PER_MONTH
    big = {"name": "big", "queues": ["default", "long"], "minCount": 2, "cpu": 1024,
           "memory": 4096}  # fmt: skip
    result = priced(
        {"workers": [big], "dashboard": True, "broker": {"nodeType": "cache.m7g.large"}}
    )
    assert line(result, "Fargate worker-big:")[0] > 2 * smallest_task
    (worker,) = [item for item in result.lines if item.item.startswith("Fargate worker-big:")]
    assert worker.floor == pytest.approx(2 * smallest_task)
    (broker,) = [item for item in result.lines if item.kind == "broker"]
    cheapest = min(p for node in prices["elasticacheNodeHour"].values() for p in node.values())
    assert broker.floor == pytest.approx(cheapest * HOURS_PER_MONTH)
    (dashboard,) = [item for item in result.lines if item.kind == "dashboard"]
    assert dashboard.floor == 0
    others = [
        i for i in result.lines if i.kind not in ("fargate worker-big", "broker", "dashboard")
    ]
    assert all(item.floor == item.low for item in others)
    assert result.floor == pytest.approx(sum(item.floor or 0 for item in result.lines))
    assert result.floor < result.totals[0]


def test_the_default_stack_is_at_its_floor_within_the_target() -> None:
    """Issue 21: the stack with only aws:region costs at most $75 a month at min count, and
    every line of it is needed for a guarantee."""
    result = priced({})
    assert result.totals[0] <= 75
    assert result.floor == pytest.approx(result.totals[0])


def test_the_load_balancer_is_quiet_at_min_count_and_busy_at_max() -> None:
    """AWS bills the busiest of the four LCU dimensions: the quiet stack's is new connections."""
    lb = price_table(REGION)["loadBalancer"]  # type: ignore[index]
    assert quiet_load_balancer_lcus() == pytest.approx(1 / 25)
    assert line(priced({}), "Load balancer web-alb (0.04-1 LCU)") == pytest.approx(
        (
            HOURS_PER_MONTH * (lb["hour"] + lb["lcuHour"] / 25),
            HOURS_PER_MONTH * (lb["hour"] + lb["lcuHour"]),
        )
    )


def test_logs_are_the_quiet_stacks_at_min_count() -> None:
    cloudwatch = price_table(REGION)["cloudwatch"]  # type: ignore[index]
    per_gb = cloudwatch["logIngestGb"] + cloudwatch["logStorageGbMonth"]  # kept 30 days
    # Three tasks (web, worker, beat) at min count, 4 + 4 + 1 at max.
    assert line(priced({}), "CloudWatch Logs: tasks") == pytest.approx(
        (3 * QUIET_LOG_GB_PER_TASK_MONTH * per_gb, 9 * LOG_GB_PER_TASK_MONTH * per_gb)
    )


def test_a_production_plan_says_what_production_adds() -> None:
    with shared_stack_runs():
        production = report.make_plan("prod", stack_file_config("prod"), REGION)
        base = report.make_plan("prod", {**stack_file_config("prod"), "production": False}, REGION)
        dev = report.make_plan("dev", stack_file_config("dev"), REGION)
    result = production.estimate
    assert result.without_production is not None
    adds = {kind: difference for kind, difference, _ in result.production_adds}
    assert result.totals[0] - result.without_production == pytest.approx(sum(adds.values()))
    assert result.without_production == pytest.approx(base.estimate.totals[0])
    # Production's defaults, each with its reason: NAT per AZ instead of task addresses, a
    # broker replica, Container Insights, the dashboard, flow logs, a year of logs, two web tasks.
    assert {"nat", "ipv4 nat", "ipv4 tasks", "broker", "container insights", "dashboard",
            "flow logs", "logs", "fargate web"} <= adds.keys()  # fmt: skip
    assert adds["ipv4 tasks"] < 0 < adds["nat"]
    text = "\n".join(format_estimate(result))
    assert "Production adds" in text and "automatic failover (ElastiCache.3)" in text
    assert dev.estimate.production_adds == ()
