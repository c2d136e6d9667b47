"""The web service: an internet-facing ALB in front of gunicorn tasks, and the secret holding the
API keys it accepts."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from celery_ecs.settings import WEB_API_KEYS_SECRET_ARN
from infra.budget import WEB_HEALTH_CHECK_GRACE
from infra.cluster import Cluster
from infra.config import WebConfig
from infra.containers import health_check
from infra.fargate_service import (
    ContainerInputs,
    FargateService,
    FargateServiceArgs,
    TaskPlacement,
)

#: TLS 1.3 with TLS 1.2 fallback (Security Hub ELB.17/18).
TLS_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"
CONTAINER_NAME = "web"
#: Characters of the first API key the stack generates (letters and digits: a bearer token).
API_KEY_LENGTH = 48
#: A staging label of the stack's own on the version it writes. After two rotations done outside
#: Pulumi that version would hold no label; Secrets Manager deletes such versions, and a refresh
#: would then find it gone and create it again, putting back the first key
#: (terraform-aws-modules/terraform-aws-secrets-manager#24; hashicorp/terraform-provider-aws
#: #37302). With this label it stays, unused: the web reads AWSCURRENT.
INITIAL_KEYS_STAGE = "STACK_INITIAL"


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
    - ``api_keys_secret_name_prefix``: the API keys secret's name starts with this (a random
      suffix follows). Default "celery-ecs/web-api-keys-".
    - ``secret_recovery_days``: days the deleted secret can be restored; 0 deletes it at once
      (dev stacks). Default 7.
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
    api_keys_secret_name_prefix: str = "celery-ecs/web-api-keys-"
    secret_recovery_days: int = 7


class Web(pulumi.ComponentResource):
    url: pulumi.Output[str]
    service: aws.ecs.Service
    #: ``app/<lb>/<id>/targetgroup/<tg>/<id>``: the request-count scaling metric's label.
    request_count_label: pulumi.Output[str]
    #: ``app/<lb>/<id>``: the ``LoadBalancer`` dimension of the ALB's metrics.
    load_balancer_label: pulumi.Output[str]
    #: The secret holding the accepted API keys, ``{"keys": [...]}`` (``app.api_keys``).
    api_keys_secret: aws.secretsmanager.Secret

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
            port=config.port,
            protocol="HTTP",
            target_type="ip",
            vpc_id=args.vpc_id,
            # Drain in-flight requests before ECS sends SIGTERM (see infra/budget.py).
            deregistration_delay=config.budget.deregistration_delay,
            health_check={
                # Liveness, not readiness: the example's /readyz pings Redis, so during a broker
                # outage every web task would fail it and ECS would replace them all, again and
                # again, while each could answer 503 at once.
                "path": config.liveness_path,
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

        self.api_keys_secret = self._api_keys_secret(name, args)
        fargate = FargateService(
            name,
            FargateServiceArgs(
                cluster=args.cluster,
                service=args.service,
                family=args.family,
                cpu=config.cpu,
                memory=config.memory,
                container=ContainerInputs(
                    name=CONTAINER_NAME,
                    image=args.image,
                    command=config.command,
                    # An ARN names the secret, it is not one (plain environment, ECS.8 holds).
                    environment={
                        **args.environment,
                        WEB_API_KEYS_SECRET_ARN: self.api_keys_secret.arn,
                    },
                    stop_timeout=config.budget.stop_timeout,
                    port=config.port,
                    health_check=health_check("web"),
                ),
                placement=args.placement,
                desired_count=config.min_count,
                deployment_timeout=config.budget.deployment_timeout,
                # The web reads the keys itself, at run time (a rotation needs no new task), so
                # the task role reads this one secret; the execution role never sees it.
                task_role_statements=[
                    {
                        "Effect": "Allow",
                        "Action": ["secretsmanager:GetSecretValue"],
                        "Resource": [self.api_keys_secret.arn],
                    }
                ],
                autoscaled=True,
                target_group_arns=[target_group.arn],
                health_check_grace_period=WEB_HEALTH_CHECK_GRACE,
                # ECS refuses a target group that no listener uses yet.
                depends_on=listeners,
                moved_from=self,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.service = fargate.service
        self.url = pulumi.Output.concat(scheme, "://", balancer.dns_name)
        self.load_balancer_label = balancer.arn_suffix
        self.request_count_label = pulumi.Output.concat(
            balancer.arn_suffix, "/", target_group.arn_suffix
        )
        self.register_outputs(
            {
                "url": self.url,
                "serviceName": self.service.name,
                "apiKeysSecretArn": self.api_keys_secret.arn,
            }
        )

    def _api_keys_secret(self, name: str, args: WebArgs) -> aws.secretsmanager.Secret:
        """The secret, first holding one generated key. Later values are the operators' (the
        README's rotation): ``up`` never writes it again."""
        child = pulumi.ResourceOptions(parent=self)
        secret = aws.secretsmanager.Secret(
            f"{name}-api-keys",
            name_prefix=args.api_keys_secret_name_prefix,
            description='API keys the web accepts: {"keys": [...]} (README, Web API)',
            recovery_window_in_days=args.secret_recovery_days,
            opts=child,
        )
        first_key = random.RandomPassword(
            f"{name}-api-key", length=API_KEY_LENGTH, special=False, opts=child
        )
        document: pulumi.Output[str] = pulumi.Output.secret(
            first_key.result.apply(lambda key: json.dumps({"keys": [key]}))
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-api-keys",
            secret_id=secret.id,
            secret_string=document,
            version_stages=["AWSCURRENT", INITIAL_KEYS_STAGE],
            opts=pulumi.ResourceOptions(
                parent=self,
                # A rotation done outside Pulumi moves AWSCURRENT to another version: neither
                # that nor a new generated key (a replaced RandomPassword) is written back.
                ignore_changes=["secret_string", "version_stages"],
            ),
        )
        return secret

    @staticmethod
    def _normalize(args: WebArgs) -> WebArgs:
        if len(args.public_subnet_ids) < 2:
            raise ValueError("public_subnet_ids: the load balancer needs >= 2 AZs (ELB.13)")
        if args.secret_recovery_days != 0 and not 7 <= args.secret_recovery_days <= 30:
            raise ValueError("secret_recovery_days: 0 or 7..30")
        return args
