"""The broker: ElastiCache (Redis OSS or Valkey) with one shard, TLS, AUTH and no eviction, and
the full broker URL in Secrets Manager."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from infra.config import BrokerConfig

REDIS_PORT = 6379
#: The only special characters an ElastiCache AUTH token may contain.
AUTH_TOKEN_SPECIALS = "!&#$^<>-"
AUTH_TOKEN_LENGTH = 64


#: Hex characters of the random part of the final snapshot's name.
FINAL_SNAPSHOT_SUFFIX_BYTES = 4


def final_snapshot_name(prefix: str, suffix: str) -> str:
    """The name of the snapshot ElastiCache takes when the broker is deleted.

    ElastiCache stores snapshot names in lowercase (CopySnapshot, CreateSnapshot), refuses a
    name that exists (``SnapshotAlreadyExistsFault``: the delete would fail), and its names
    start with a letter, hold letters, digits and single hyphens and do not end with one (the
    rule for replication group ids, followed here too). ``prefix`` names the stack;
    ``suffix`` (random hex, new with every broker) keeps a second destroy of a stack of the
    same name from colliding with the first one's snapshot.
    """
    stem = re.sub(r"-{2,}", "-", re.sub(r"[^a-z0-9]", "-", prefix.lower())).strip("-")
    stem = re.sub(r"^[^a-z]+", "", stem)[:200].rstrip("-") or "broker"
    return f"{stem}-final-{suffix}"


def broker_url(token: str, host: str, port: int = REDIS_PORT) -> str:
    """The URL the app reads from CELERY_BROKER_URL: TLS with certificate checks, database 0."""
    return f"rediss://:{quote(token, safe='')}@{host}:{port}/0?ssl_cert_reqs=required"


@dataclass(frozen=True)
class BrokerArgs:
    """Arguments of ``Broker``.

    - ``config``: engine, version, node type, replicas, snapshot retention. Required.
    - ``subnet_ids``: private subnets, in >= 2 AZs. Required.
    - ``security_group_id``: the broker's security group (Redis from the tasks only). Required.
    - ``secret_recovery_days``: days a deleted secret can be restored; 0 deletes it at once
      (dev stacks). Default 7.
    - ``secret_name_prefix``: the secret's name starts with this (a random suffix follows).
      Default "celery-ecs/broker-url-".
    - ``final_snapshot_prefix``: when set, deleting the broker first snapshots it, named
      ``final_snapshot_name(prefix, <random hex>)``; None: no final snapshot. Default None.
    """

    config: BrokerConfig
    subnet_ids: Sequence[pulumi.Input[str]]
    security_group_id: pulumi.Input[str]
    secret_recovery_days: int = 7
    secret_name_prefix: str = "celery-ecs/broker-url-"
    final_snapshot_prefix: str | None = None


class Broker(pulumi.ComponentResource):
    primary_endpoint: pulumi.Output[str]
    port: int
    secret: aws.secretsmanager.Secret
    #: Changes whenever the broker URL does (a new token): services redeploy on it.
    secret_version: pulumi.Output[str]
    #: Cache cluster id of every node (``CacheClusterId`` of ElastiCache's metrics): a
    #: replication group's nodes are ``<group id>-001``, ``-002``…
    node_ids: list[pulumi.Output[str]]
    #: The snapshot ElastiCache takes when the broker is deleted; None: none is taken.
    final_snapshot_name: pulumi.Output[str] | None

    def __init__(
        self, name: str, args: BrokerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("celery-ecs:infra:Broker", name, None, opts)
        args = self._normalize(args)
        config = args.config
        child = pulumi.ResourceOptions(parent=self)
        subnets = aws.elasticache.SubnetGroup(
            name, subnet_ids=list(args.subnet_ids), description="Broker subnets", opts=child
        )
        parameters = aws.elasticache.ParameterGroup(
            name,
            family=config.parameter_group_family,
            description="Celery broker: never evict (an evicted key is a lost queue or task)",
            parameters=[{"name": "maxmemory-policy", "value": "noeviction"}],
            opts=child,
        )
        token = random.RandomPassword(
            f"{name}-auth-token",
            length=AUTH_TOKEN_LENGTH,
            special=True,
            override_special=AUTH_TOKEN_SPECIALS,
            # A new generation, a new token (the README's token rotation).
            keepers={"generation": str(config.auth_token_generation)},
            opts=child,
        )
        final_snapshot: pulumi.Output[str] | None = None
        if args.final_snapshot_prefix is not None:
            prefix = args.final_snapshot_prefix
            suffix = random.RandomId(
                f"{name}-final-snapshot",
                byte_length=FINAL_SNAPSHOT_SUFFIX_BYTES,
                # A changed engine or version may replace the group: the new one gets a name of
                # its own, while the old one is deleted with the name in its state.
                keepers={"engine": config.engine, "engineVersion": config.engine_version},
                opts=child,
            )
            final_snapshot = suffix.hex.apply(lambda hex_: final_snapshot_name(prefix, hex_))
        highly_available = config.replicas >= 1
        group = aws.elasticache.ReplicationGroup(
            name,
            description="Celery broker and result backend",
            engine=config.engine,
            engine_version=config.engine_version,
            node_type=config.node_type,
            # One shard: kombu has no Redis Cluster transport.
            cluster_mode="disabled",
            num_cache_clusters=1 + config.replicas,
            automatic_failover_enabled=highly_available,
            multi_az_enabled=highly_available,
            port=REDIS_PORT,
            parameter_group_name=parameters.name,
            subnet_group_name=subnets.name,
            security_group_ids=[args.security_group_id],
            at_rest_encryption_enabled=True,
            transit_encryption_enabled=True,
            transit_encryption_mode="required",
            auth_token=token.result,
            # A new token replaces the old one at once (SET, not ROTATE: the old one never
            # stays valid), now rather than in the next maintenance window, while the secret
            # already holds it; the services then roll onto it (``secret_version``).
            auth_token_update_strategy="SET",
            apply_immediately=True,
            auto_minor_version_upgrade=True,
            snapshot_retention_limit=config.snapshot_retention_days,
            # Deleting the group deletes its automatic backups; this one outlives it.
            final_snapshot_identifier=final_snapshot,
            opts=pulumi.ResourceOptions(parent=self, additional_secret_outputs=["authToken"]),
        )
        self.secret = aws.secretsmanager.Secret(
            name,
            name_prefix=args.secret_name_prefix,
            description="Celery broker URL (rediss://, with the AUTH token)",
            recovery_window_in_days=args.secret_recovery_days,
            opts=child,
        )
        url = pulumi.Output.all(token.result, group.primary_endpoint_address).apply(
            lambda values: broker_url(values[0], values[1])
        )
        # Annotated for mypy, which cannot solve Output.secret's Input[U] (a union) from an Output.
        secret_url: pulumi.Output[str] = pulumi.Output.secret(url)
        version = aws.secretsmanager.SecretVersion(
            name, secret_id=self.secret.id, secret_string=secret_url, opts=child
        )
        self.secret_version = version.version_id
        self.primary_endpoint = group.primary_endpoint_address
        self.node_ids = [
            pulumi.Output.concat(group.id, f"-{node:03d}") for node in range(1, 2 + config.replicas)
        ]
        self.port = REDIS_PORT
        self.final_snapshot_name = final_snapshot
        self.register_outputs(
            {"primaryEndpoint": self.primary_endpoint, "secretArn": self.secret.arn}
        )

    @staticmethod
    def _normalize(args: BrokerArgs) -> BrokerArgs:
        if len(args.subnet_ids) < 2:
            raise ValueError("subnet_ids: need subnets in >= 2 AZs")
        if args.secret_recovery_days != 0 and not 7 <= args.secret_recovery_days <= 30:
            raise ValueError("secret_recovery_days: 0 or 7..30")
        return args
