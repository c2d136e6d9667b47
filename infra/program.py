"""The Pulumi program: validate everything, then create the components and export the outputs.

Validation (stack config, schedule translation, image source) happens before the first resource
is registered, so a wrong value fails ``pulumi preview`` with one clear message and no
half-created stack.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_aws as aws
from pulumi.runtime.config import CONFIG, get_config_env

from infra.alarms import Alarms, AlarmsArgs, PoolService
from infra.beat_service import Beat, BeatArgs
from infra.broker import Broker, BrokerArgs
from infra.cluster import AwsContext, Cluster, ClusterArgs
from infra.config import (
    DOCUMENTATION_ACCOUNT,
    ConfigError,
    ImageBuild,
    NewVpc,
    StackConfig,
    load,
    placeholders,
)
from infra.containers import (
    beat_environment,
    enqueue_environment,
    metrics_namespace,
    web_environment,
    worker_environment,
)
from infra.dashboard import Dashboard, DashboardArgs
from infra.eventbridge import Schedule, ScheduleArgs, ScheduledEntry, plan_schedule
from infra.image import Image, ImageArgs
from infra.network import AZ_COUNT, Network, NetworkArgs
from infra.notifications import Notifications, NotificationsArgs
from infra.scaling import BacklogTarget, ServiceScaling, ServiceScalingArgs
from infra.schedule_expr import ScheduleError
from infra.web_service import Web, WebArgs
from infra.worker_service import CAPACITY_PROVIDERS, Worker, WorkerArgs

CONFIG_NAMESPACE = "celery-ecs"
#: The project directory (where Pulumi.yaml is): ``image.context`` and ``image.dockerfile`` are
#: relative to it.
PROJECT_ROOT = Path(__file__).resolve().parents[1]


def stack_config_values(namespace: str = CONFIG_NAMESPACE) -> dict[str, object]:
    """Every ``<namespace>:<key>`` value of the stack, keyed by ``<key>``.

    ``pulumi.Config`` only answers for keys it is asked about; unknown keys (typos) must be
    seen too, so this reads the whole map the language host hands the program (the
    ``PULUMI_CONFIG`` environment variable; ``set_all_config`` in tests).
    """
    prefix = f"{namespace}:"
    merged = {**get_config_env(), **CONFIG.get()}
    return {key[len(prefix) :]: value for key, value in merged.items() if key.startswith(prefix)}


@dataclass(frozen=True)
class Deployment:
    """Everything validated: what ``deploy`` builds."""

    config: StackConfig
    schedule: tuple[ScheduledEntry, ...]
    #: ``<project>-<stack>``, safe for task definition families and log group names.
    prefix: str
    metrics_namespace: str
    #: Build context and Dockerfile of the image, relative to the working directory (Pulumi runs
    #: the program in the project directory: "."); None when ``image.uri`` is given.
    image_context: str | None
    image_dockerfile: str | None = None


def validate_config(
    raw: dict[str, object], *, project: str, stack: str, project_root: Path = PROJECT_ROOT
) -> Deployment:
    """Check the whole configuration; raises ``ConfigError`` naming the key."""
    config = load(raw)
    schedule: tuple[ScheduledEntry, ...] = ()
    if config.scheduler == "eventbridge":
        for index, entry in enumerate(config.schedule):
            try:
                schedule += plan_schedule((entry,))
            except ScheduleError as error:
                raise ConfigError(
                    f"schedule[{index}]: cannot run on EventBridge: {error}; allowed: an entry "
                    "EventBridge can express, or scheduler: beat (runs any Celery schedule)"
                ) from None
    image_context = image_dockerfile = None
    if isinstance(config.image, ImageBuild):
        # Whether the image can run celeryApp and web.command is not known offline (it is not
        # built yet): the twin (`make run`) runs them.
        context = project_root / config.image.context
        dockerfile = project_root / config.image.dockerfile
        if not context.is_dir():
            raise ConfigError(
                f"image.context: {config.image.context} is not a directory of {project_root}; "
                "allowed: the build context's path, relative to the project directory"
            )
        if not dockerfile.is_file():
            raise ConfigError(
                f"image.dockerfile: there is no file {config.image.dockerfile} in "
                f"{project_root} to build; allowed: a Dockerfile's path relative to the project "
                "directory (default <image.context>/Dockerfile), or image.uri: a prebuilt image"
            )
        image_context = os.path.relpath(context)
        image_dockerfile = os.path.relpath(dockerfile)
    prefix = re.sub(r"[^A-Za-z0-9_-]", "-", f"{project}-{stack}")
    return Deployment(
        config=config,
        schedule=schedule,
        prefix=prefix,
        metrics_namespace=metrics_namespace(project, stack),
        image_context=image_context,
        image_dockerfile=image_dockerfile,
    )


def check_placeholders(config: StackConfig, account: str) -> None:
    """Refuse documentation placeholders (Pulumi.prod.yaml ships some) in a deploy to a real
    account; the offline renders run as the documentation account and only warn."""
    found = placeholders(config)
    if found and account != DOCUMENTATION_ACCOUNT:
        raise ConfigError(
            f"{found[0]}; allowed: a value of your own (the stack deploys to account {account})"
        )
    for message in found:
        pulumi.log.warn(f"placeholder in the stack config: {message}")


def available_zones() -> list[str]:
    """Regular AZs of the region (no Local or Wavelength Zones), in AWS's order."""
    zones = aws.get_availability_zones(
        state="available",
        filters=[{"name": "opt-in-status", "values": ["opt-in-not-required"]}],
    ).names
    if len(zones) < AZ_COUNT:
        raise pulumi.RunError(f"the region has {len(zones)} available AZs; {AZ_COUNT} needed")
    return list(zones)


def deploy(plan: Deployment) -> dict[str, Any]:
    """Create every component; returns the stack outputs."""
    config = plan.config
    context = AwsContext.lookup()
    created_vpc = isinstance(config.network, NewVpc)
    worker_services = {pool.name: f"worker-{pool.name}" for pool in config.workers}
    scheduler_service = "beat" if config.scheduler == "beat" else "enqueue"
    services = ["web", *worker_services.values()]
    if config.scheduler == "beat" or plan.schedule:
        services.append(scheduler_service)

    network = Network(
        "network",
        NetworkArgs(
            vpc=config.network,
            availability_zones=available_zones() if created_vpc else (),
            https=config.web.certificate_arn is not None,
            web_port=config.web.port,
            flow_logs=config.production and created_vpc,
            log_retention_days=config.log_retention_days,
            aws=context,
        ),
    )
    broker = Broker(
        "broker",
        BrokerArgs(
            config=config.broker,
            subnet_ids=network.private_subnet_ids,
            security_group_id=network.broker_security_group_id,
            secret_recovery_days=7 if config.production else 0,
            secret_name_prefix=f"{plan.prefix}/broker-url-",
            final_snapshot_prefix=plan.prefix if config.production else None,
        ),
    )
    # The repository is named after the stack (ECR names are lowercase).
    image = Image(
        plan.prefix.lower(),
        ImageArgs(
            aws=context,
            context=plan.image_context,
            dockerfile=plan.image_dockerfile,
            image_uri=config.image_uri,
            force_delete=not config.production,
            cpu_architecture=config.cpu_architecture,
        ),
    )
    cluster = Cluster(
        "cluster",
        ClusterArgs(
            cluster_name=plan.prefix,
            services=services,
            log_group_prefix=f"/ecs/{plan.prefix}",
            broker_secret_arn=broker.secret.arn,
            broker_secret_version=broker.secret_version,
            aws=context,
            log_retention_days=config.log_retention_days,
            pull_repository_arns=image.pull_repository_arns,
            cpu_architecture=config.cpu_architecture,
            capacity_providers=CAPACITY_PROVIDERS,
            container_insights=config.container_insights,
        ),
    )
    background = network.task_placement(network.background_security_group_id)

    web = Web(
        "web",
        WebArgs(
            config=config.web,
            cluster=cluster,
            family=f"{plan.prefix}-web",
            image=image.image_ref,
            environment=web_environment(config),
            vpc_id=network.vpc_id,
            public_subnet_ids=network.public_subnet_ids,
            alb_security_group_id=network.alb_security_group_id,
            placement=network.task_placement(network.web_security_group_id),
            api_keys_secret_name_prefix=f"{plan.prefix}/web-api-keys-",
            secret_recovery_days=7 if config.production else 0,
        ),
    )
    ServiceScaling(
        "web-scaling",
        ServiceScalingArgs(
            cluster_name=cluster.cluster.name,
            service_name=web.service.name,
            min_count=config.web.min_count,
            max_count=config.web.max_count,
            cpu_percent=config.web.target_cpu_percent,
            requests_per_task=config.web.target_requests_per_task,
            request_count_label=web.request_count_label,
        ),
    )
    service_names: dict[str, pulumi.Output[str]] = {"web": web.service.name}
    pool_services: list[PoolService] = []
    scaling_alarms: list[pulumi.Output[str]] = []

    for pool in config.workers:
        service = worker_services[pool.name]
        worker = Worker(
            service,
            WorkerArgs(
                pool=pool,
                cluster=cluster,
                service=service,
                family=f"{plan.prefix}-{service}",
                image=image.image_ref,
                environment=worker_environment(config, pool, plan.metrics_namespace),
                placement=background,
                metrics_namespace=plan.metrics_namespace,
                celery_app=config.celery_app,
            ),
        )
        scaling = ServiceScaling(
            f"{service}-scaling",
            ServiceScalingArgs(
                cluster_name=cluster.cluster.name,
                service_name=worker.service.name,
                min_count=pool.min_count,
                max_count=pool.max_count,
                backlog=BacklogTarget(
                    namespace=plan.metrics_namespace,
                    pool=pool.name,
                    queues=pool.queues,
                    per_task=pool.backlog_per_task,
                    alarm_name=f"{plan.prefix}-scale-out-{pool.name}",
                    desired_count_metric=config.container_insights,
                ),
            ),
        )
        service_names[service] = worker.service.name
        pool_services.append(PoolService(pool, worker.service.name))
        if scaling.scale_out_alarm is not None:
            scaling_alarms.append(scaling.scale_out_alarm.arn)

    if config.scheduler == "beat":
        beat = Beat(
            "beat",
            BeatArgs(
                cluster=cluster,
                family=f"{plan.prefix}-beat",
                image=image.image_ref,
                environment=beat_environment(config, plan.metrics_namespace),
                placement=background,
                celery_app=config.celery_app,
            ),
        )
        service_names["beat"] = beat.service.name

    schedule_outputs: dict[str, Any] = {}
    rules: dict[str, pulumi.Output[str]] = {}
    dead_letter_queue: pulumi.Output[str] | None = None
    if plan.schedule:
        schedule = Schedule(
            "schedule",
            ScheduleArgs(
                entries=plan.schedule,
                cluster=cluster,
                family=f"{plan.prefix}-enqueue",
                image=image.image_ref,
                environment=enqueue_environment(config),
                placement=background,
            ),
        )
        schedule_outputs["scheduleDeadLetterQueueUrl"] = schedule.dead_letter_queue.url
        rules = {entry: rule.name for entry, rule in schedule.rules.items()}
        dead_letter_queue = schedule.dead_letter_queue.name

    monitoring = monitor(
        plan,
        context=context,
        cluster_name=cluster.cluster.name,
        pools=pool_services,
        scaling_alarms=scaling_alarms,
        load_balancer=web.load_balancer_label,
        broker_nodes=broker.node_ids,
        rules=rules,
        dead_letter_queue=dead_letter_queue,
    )

    return {
        "webUrl": web.url,
        # The ARN, never the keys: aws secretsmanager get-secret-value --secret-id <it>.
        "webApiKeysSecretArn": web.api_keys_secret.arn,
        "brokerEndpoint": pulumi.Output.concat(broker.primary_endpoint, ":", str(broker.port)),
        "clusterName": cluster.cluster.name,
        "serviceNames": service_names,
        "imageRepositoryUrl": image.repository.repository_url,
        **(
            {"brokerFinalSnapshotName": broker.final_snapshot_name}
            if broker.final_snapshot_name is not None
            else {}
        ),
        "scheduler": config.scheduler,
        **schedule_outputs,
        **monitoring,
    }


def monitor(
    plan: Deployment,
    *,
    context: AwsContext,
    cluster_name: pulumi.Output[str],
    pools: list[PoolService],
    scaling_alarms: list[pulumi.Output[str]],
    load_balancer: pulumi.Output[str],
    broker_nodes: list[pulumi.Output[str]],
    rules: dict[str, pulumi.Output[str]],
    dead_letter_queue: pulumi.Output[str] | None,
) -> dict[str, Any]:
    """Notifications, alarms and, where the stack asks for it, the dashboard; returns their
    stack outputs."""
    config = plan.config
    notifications = Notifications(
        "notifications",
        NotificationsArgs(
            alerts=config.alerts,
            alarm_name_prefix=plan.prefix,
            aws=context,
            key_deletion_window_days=30 if config.production else 7,
        ),
    )
    topic = notifications.topic_arn
    alarms = Alarms(
        "alarms",
        AlarmsArgs(
            prefix=plan.prefix,
            namespace=plan.metrics_namespace,
            cluster_name=cluster_name,
            pools=pools,
            load_balancer=load_balancer,
            broker_nodes=broker_nodes,
            alerts=config.alerts,
            beat=config.scheduler == "beat",
            rules=rules,
            dead_letter_queue=dead_letter_queue,
            actions=[topic] if topic is not None else [],
        ),
    )
    outputs: dict[str, Any] = {}
    if topic is not None:
        outputs["alertTopicArn"] = topic
    if not config.dashboard:
        return outputs
    dashboard = Dashboard(
        "dashboard",
        DashboardArgs(
            name=plan.prefix,
            inputs={
                "region": context.region,
                "namespace": plan.metrics_namespace,
                "cluster_name": cluster_name,
                "pools": list(config.workers),
                "service_names": {service.pool.name: service.service_name for service in pools},
                "load_balancer": load_balancer,
                "broker_nodes": broker_nodes,
                "alerts": config.alerts,
                "alarm_arns": [alarm.arn for alarm in alarms.alarms.values()],
                "scaling_alarm_arns": scaling_alarms,
                "beat": config.scheduler == "beat",
                "rules": rules,
                "dead_letter_queue": dead_letter_queue,
                "container_insights": config.container_insights,
            },
        ),
    )
    outputs["dashboardUrl"] = dashboard.url
    return outputs


class InvalidStackConfig(ConfigError, pulumi.RunError):
    """A ``ConfigError`` that Pulumi reports as its message alone, without a traceback."""


def main(project_root: Path = PROJECT_ROOT) -> dict[str, Any]:
    """Run the program: validate, deploy, export. Returns the exported outputs."""
    try:
        plan = validate_config(
            stack_config_values(),
            project=pulumi.get_project(),
            stack=pulumi.get_stack(),
            project_root=project_root,
        )
        check_placeholders(plan.config, aws.get_caller_identity().account_id)
    except ConfigError as error:
        raise InvalidStackConfig(f"invalid stack config: {error}") from None
    outputs = deploy(plan)
    for name, value in outputs.items():
        pulumi.export(name, value)
    return outputs
