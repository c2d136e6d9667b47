"""The web service: an internet-facing ALB in front of gunicorn tasks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from app.names import LIVENESS_PATH
from infra.budget import WEB_HEALTH_CHECK_GRACE
from infra.cluster import (
    Cluster,
    ContainerInputs,
    TaskPlacement,
    fargate_service,
    fargate_task_definition,
)
from infra.config import WebConfig
from infra.containers import WEB_COMMAND, WEB_CONTAINER_PORT, health_check

#: TLS 1.3 with TLS 1.2 fallback (Security Hub ELB.17/18).
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
#: Liveness, not readiness: /readyz pings Redis, so during a broker outage every web task would
#: fail it and ECS would replace them all, again and again, while each could answer 503 at once.
HEALTH_CHECK_PATH = LIVENESS_PATH
CONTAINER_NAME = "web"


@dataclass(frozen=True)
class WebArgs:
    """Arguments of ``Web``.

    - ``config``: task size, counts, request timeout (and its budget), certificate, deletion
      protection, access-log bucket. Required.
    - ``cluster``: the ECS cluster with a log group for ``service``. Required.
    - ``service``: the service's name in the cluster's log groups. Default "web".
    - ``family``: task definition family. Required.
    - ``image``: image reference. Required.
    - ``environment``: container environment (no secrets). Required.
    - ``vpc_id``, ``public_subnet_ids``: where the load balancer lives (>= 2 AZs). Required.
    - ``alb_security_group_id``: the load balancer's security group. Required.
    - ``placement``: where the tasks run, with the web security group. Required.
    """

    config: WebConfig
    cluster: Cluster
    family: str
    image: pulumi.Input[str]
    environment: Mapping[str, str]
    vpc_id: pulumi.Input[str]
    public_subnet_ids: Sequence[pulumi.Input[str]]
    alb_security_group_id: pulumi.Input[str]
    placement: TaskPlacement
    service: str = "web"


class Web(pulumi.ComponentResource):
    url: pulumi.Output[str]
    service: aws.ecs.Service
    #: ``app/<lb>/<id>/targetgroup/<tg>/<id>``: the request-count scaling metric's label.
    request_count_label: pulumi.Output[str]
    #: ``app/<lb>/<id>``: the ``LoadBalancer`` dimension of the ALB's metrics.
    load_balancer_label: pulumi.Output[str]

    def __init__(
        self, name: str, args: WebArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("celery-ecs:infra:Web", name, None, opts)
        args = self._normalize(args)
        config = args.config
        child = pulumi.ResourceOptions(parent=self)

        access_logs: aws.lb.LoadBalancerAccessLogsArgsDict | None = (
            {"bucket": config.access_logs_bucket, "prefix": name, "enabled": True}
            if config.access_logs_bucket
            else None
        )
        balancer = aws.lb.LoadBalancer(
            f"{name}-alb",
            load_balancer_type="application",
            internal=False,
            security_groups=[args.alb_security_group_id],
            subnets=list(args.public_subnet_ids),
            drop_invalid_header_fields=True,
            desync_mitigation_mode="defensive",
            # Never cut a request the app is still allowed to serve.
            idle_timeout=config.budget.idle_timeout,
            enable_deletion_protection=config.deletion_protection,
            access_logs=access_logs,
            opts=child,
        )
        target_group = aws.lb.TargetGroup(
            f"{name}-tg",
            port=WEB_CONTAINER_PORT,
            protocol="HTTP",
            target_type="ip",
            vpc_id=args.vpc_id,
            # Drain in-flight requests before ECS sends SIGTERM (see infra/budget.py).
            deregistration_delay=config.budget.deregistration_delay,
            health_check={
                "path": HEALTH_CHECK_PATH,
                "matcher": "200",
                "interval": 15,
                "timeout": 5,
                "healthy_threshold": 2,
                "unhealthy_threshold": 3,
            },
            opts=child,
        )
        forward: list[aws.lb.ListenerDefaultActionArgsDict] = [
            {"type": "forward", "target_group_arn": target_group.arn}
        ]
        if config.certificate_arn:
            listeners = [
                aws.lb.Listener(
                    f"{name}-https",
                    load_balancer_arn=balancer.arn,
                    port=443,
                    protocol="HTTPS",
                    ssl_policy=TLS_POLICY,
                    certificate_arn=config.certificate_arn,
                    default_actions=forward,
                    opts=child,
                ),
                aws.lb.Listener(
                    f"{name}-http",
                    load_balancer_arn=balancer.arn,
                    port=80,
                    protocol="HTTP",
                    default_actions=[
                        {
                            "type": "redirect",
                            "redirect": {
                                "port": "443",
                                "protocol": "HTTPS",
                                "status_code": "HTTP_301",
                            },
                        }
                    ],
                    opts=child,
                ),
            ]
            scheme = "https"
        else:
            # Without a certificate the ALB serves plain HTTP (fine for dev, not for prod).
            listeners = [
                aws.lb.Listener(
                    f"{name}-http",
                    load_balancer_arn=balancer.arn,
                    port=80,
                    protocol="HTTP",
                    default_actions=forward,
                    opts=child,
                )
            ]
            scheme = "http"

        task_role = args.cluster.task_role(f"{name}-task", [], parent=self)
        task_definition = fargate_task_definition(
            f"{name}-task",
            cluster=args.cluster,
            service=args.service,
            family=args.family,
            cpu=config.cpu,
            memory=config.memory,
            container=ContainerInputs(
                name=CONTAINER_NAME,
                image=args.image,
                command=WEB_COMMAND,
                environment=args.environment,
                stop_timeout=config.budget.stop_timeout,
                port=WEB_CONTAINER_PORT,
                health_check=health_check("web"),
            ),
            task_role=task_role,
            parent=self,
        )
        self.service = fargate_service(
            f"{name}-service",
            cluster=args.cluster,
            service=args.service,
            task_definition=task_definition,
            placement=args.placement,
            deployment_timeout=config.budget.deployment_timeout,
            desired_count=config.min_count,
            parent=self,
            autoscaled=True,
            load_balancers=[
                {
                    "target_group_arn": target_group.arn,
                    "container_name": CONTAINER_NAME,
                    "container_port": WEB_CONTAINER_PORT,
                }
            ],
            health_check_grace_period=WEB_HEALTH_CHECK_GRACE,
            # ECS refuses a target group that no listener uses yet.
            depends_on=listeners,
        )
        self.url = pulumi.Output.concat(scheme, "://", balancer.dns_name)
        self.load_balancer_label = balancer.arn_suffix
        self.request_count_label = pulumi.Output.concat(
            balancer.arn_suffix, "/", target_group.arn_suffix
        )
        self.register_outputs({"url": self.url, "serviceName": self.service.name})

    @staticmethod
    def _normalize(args: WebArgs) -> WebArgs:
        if len(args.public_subnet_ids) < 2:
            raise ValueError("public_subnet_ids: the load balancer needs >= 2 AZs (ELB.13)")
        return args
