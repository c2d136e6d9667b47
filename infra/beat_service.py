"""Celery beat: the one process that sends the periodic tasks (``scheduler: beat``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.budget import BEAT_STOP_TIMEOUT, beat_deployment_timeout
from infra.cluster import Cluster
from infra.config_tables import DEFAULT_CELERY_APP
from infra.containers import beat_command, health_check
from infra.fargate_service import (
    ContainerInputs,
    FargateService,
    FargateServiceArgs,
    TaskPlacement,
)

CONTAINER_NAME = "beat"


@dataclass(frozen=True)
class BeatArgs:
    """Arguments of ``Beat``.

    - ``cluster``: the ECS cluster with a log group for ``service``. Required.
    - ``service``: the service's name in the cluster's log groups. Default "beat".
    - ``family``: task definition family. Required.
    - ``image``: image reference. Required.
    - ``environment``: container environment (no secrets). Required.
    - ``placement``: subnets, the background security group, public IP or not. Required.
    - ``cpu``/``memory``: task size, Fargate units/MiB. Default 256/512.
    - ``celery_app``: the ``celery -A`` target. Default the example's, ``app.celery_app``.
    """

    cluster: Cluster
    family: str
    image: pulumi.Input[str]
    environment: Mapping[str, str]
    placement: TaskPlacement
    service: str = "beat"
    cpu: int = 256
    memory: int = 512
    celery_app: str = DEFAULT_CELERY_APP


class Beat(pulumi.ComponentResource):
    service: aws.ecs.Service

    def __init__(
        self, name: str, args: BeatArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("celery-ecs:infra:Beat", name, None, opts)
        fargate = FargateService(
            name,
            FargateServiceArgs(
                cluster=args.cluster,
                service=args.service,
                family=args.family,
                cpu=args.cpu,
                memory=args.memory,
                container=ContainerInputs(
                    name=CONTAINER_NAME,
                    image=args.image,
                    command=beat_command(args.celery_app),
                    environment=args.environment,
                    stop_timeout=BEAT_STOP_TIMEOUT,
                    health_check=health_check("beat"),
                ),
                placement=args.placement,
                # A singleton: two beats send every periodic task twice. ECS stops the old task
                # before it starts the new one (max 100 %, min healthy 0 %); nothing scales it.
                desired_count=1,
                deployment_timeout=beat_deployment_timeout(),
                minimum_healthy_percent=0,
                maximum_percent=100,
                moved_from=self,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.service = fargate.service
        self.register_outputs({"serviceName": self.service.name})
