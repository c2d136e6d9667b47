"""The broker: hardened, never evicting, reachable only from the stack's VPC."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pulumi_policy import (
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    StackValidationArgs,
)

from . import aws_types
from .readers import StackIndex, as_list, ec2_id, number_text, whole_number


def validate_broker(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != aws_types.ELASTICACHE_REPLICATION_GROUP:
        return
    props, where = args.props, f"broker replication group '{args.name}'"
    # Values the program writes as constants come first: they are known during a preview.
    if str(props.get("engine", "redis")).lower() not in ("redis", "valkey"):
        report(f"{where} runs {props.get('engine')!r}; Celery needs redis or valkey", args.urn)
    if props.get("transitEncryptionEnabled") is not True:
        report(
            f"{where} has no in-transit encryption; set transitEncryptionEnabled to true "
            "(ElastiCache.5; AUTH requires it)",
            args.urn,
        )
    if props.get("transitEncryptionMode") not in (None, "required"):
        report(
            f"{where} has transitEncryptionMode {props.get('transitEncryptionMode')!r}, which "
            "still accepts plain-text clients; set it to 'required'",
            args.urn,
        )
    if props.get("atRestEncryptionEnabled") is not True:
        report(
            f"{where} is not encrypted at rest; set atRestEncryptionEnabled to true (it "
            "cannot be turned on later; ElastiCache.4)",
            args.urn,
        )
    mode = props.get("clusterMode")
    groups = whole_number(props.get("numNodeGroups"))
    if mode not in (None, "disabled") or (groups is not None and groups > 1):
        report(
            f"{where} runs in cluster mode (clusterMode {mode!r}, numNodeGroups "
            f"{number_text(props.get('numNodeGroups'))}); set clusterMode to 'disabled' with one "
            "shard: kombu has no Redis Cluster transport",
            args.urn,
        )
    if props.get("autoMinorVersionUpgrade") is False:
        report(
            f"{where} turns off minor version upgrades; set autoMinorVersionUpgrade to true "
            "(ElastiCache.2)",
            args.urn,
        )
    # Generated or auto-named values last: unknown on a first preview.
    token = props.get("authToken")
    if not isinstance(token, str) or not token:
        report(
            f"{where} has no AUTH token; set authToken (from a generated password) so only "
            "clients holding it can reach the queues (ElastiCache.6)",
            args.urn,
        )
    group = props.get("parameterGroupName")
    if not isinstance(group, str) or not group or group.startswith("default."):
        report(
            f"{where} uses the parameter group {group!r}; give it its own group with "
            "maxmemory-policy noeviction (default groups evict: volatile-lru)",
            args.urn,
        )
    subnets = props.get("subnetGroupName")
    if not isinstance(subnets, str) or not subnets or subnets == "default":
        report(
            f"{where} uses the subnet group {subnets!r}; give it its own subnet group of "
            "private subnets (ElastiCache.7)",
            args.urn,
        )


def validate_broker_never_evicts(args: StackValidationArgs, report: ReportViolation) -> None:
    index = StackIndex(args.resources)
    for group in index.of_type(aws_types.ELASTICACHE_REPLICATION_GROUP):
        name = group.props.get("parameterGroupName")
        parameters = index.find(aws_types.ELASTICACHE_PARAMETER_GROUP, name)
        if parameters is None:
            report(
                f"broker replication group '{group.name}' uses the parameter group {name!r}, "
                "which this stack does not define, so nothing shows it never evicts; use a "
                "parameter group of this stack with maxmemory-policy noeviction",
                group.urn,
            )
            continue
        values = {
            str(item.get("name")): item.get("value")
            for item in as_list(parameters.props.get("parameters"))
            if isinstance(item, Mapping)
        }
        policy = values.get("maxmemory-policy")
        if policy != "noeviction":
            report(
                f"parameter group '{parameters.name}' of broker replication group "
                f"'{group.name}' has maxmemory-policy {policy!r}; set it to 'noeviction': an "
                "evicted key is a lost queue or unacknowledged task",
                parameters.urn,
            )


@dataclass(frozen=True)
class _Source:
    """Where one ingress rule of a security group admits traffic from."""

    rule: PolicyResource
    kind: str  # cidr, ipv6, prefix-list, security-group
    value: str


def _ingress_sources(group: PolicyResource, index: StackIndex) -> Iterator[_Source]:
    """Every source admitted into ``group``: inline rules, ingress rule resources and
    security group rule resources of type ingress."""
    group_id = ec2_id(group)
    for rule in as_list(group.props.get("ingress")):
        if isinstance(rule, Mapping):
            yield from _rule_sources(
                group, rule, "cidrBlocks", "ipv6CidrBlocks", "prefixListIds", "securityGroups"
            )
    for rule in index.of_type(aws_types.VPC_SECURITY_GROUP_INGRESS_RULE):
        if rule.props.get("securityGroupId") == group_id:
            yield from _rule_sources(
                rule,
                rule.props,
                "cidrIpv4",
                "cidrIpv6",
                "prefixListId",
                "referencedSecurityGroupId",
            )
    for rule in index.of_type(aws_types.EC2_SECURITY_GROUP_RULE):
        if rule.props.get("securityGroupId") == group_id and rule.props.get("type") == "ingress":
            yield from _rule_sources(
                rule,
                rule.props,
                "cidrBlocks",
                "ipv6CidrBlocks",
                "prefixListIds",
                "sourceSecurityGroupId",
            )


def _rule_sources(
    owner: PolicyResource, rule: Mapping[str, Any], cidr: str, ipv6: str, prefix: str, peer: str
) -> Iterator[_Source]:
    for kind, key in (
        ("cidr", cidr),
        ("ipv6", ipv6),
        ("prefix-list", prefix),
        ("security-group", peer),
    ):
        for value in as_list(rule.get(key)):
            yield _Source(owner, kind, str(value))
    if rule.get("self") is True:
        yield _Source(owner, "security-group", "self")


def validate_broker_only_from_vpc(args: StackValidationArgs, report: ReportViolation) -> None:
    """The broker's security groups admit only other security groups, or addresses inside the
    stack's VPC: nothing outside the VPC has a route to Redis."""
    index = StackIndex(args.resources)
    for broker in index.of_type(aws_types.ELASTICACHE_REPLICATION_GROUP):
        group_ids = as_list(broker.props.get("securityGroupIds"))
        if not group_ids:
            report(
                f"broker replication group '{broker.name}' names no security group, so it gets "
                "the VPC's default one; give it a security group of this stack that admits "
                "only the tasks",
                broker.urn,
            )
        for group_id in group_ids:
            group = index.find(aws_types.EC2_SECURITY_GROUP, group_id)
            if group is None:
                report(
                    f"broker replication group '{broker.name}' uses security group {group_id!r}, "
                    "which this stack does not define, so its rules cannot be checked; use a "
                    "security group of this stack",
                    broker.urn,
                )
                continue
            vpc = index.find(aws_types.EC2_VPC, group.props.get("vpcId"))
            vpc_cidr = vpc.props.get("cidrBlock") if vpc is not None else None
            for source in _ingress_sources(group, index):
                problem = _outside_source(source, vpc_cidr)
                if problem is not None:
                    report(
                        f"'{source.rule.name}' lets {problem} reach broker replication group "
                        f"'{broker.name}' (security group '{group.name}'); admit only the "
                        "tasks' security groups (referencedSecurityGroupId)",
                        source.rule.urn,
                    )


def _outside_source(source: _Source, vpc_cidr: object) -> str | None:
    """What the source admits, when it may lie outside the VPC; None when it cannot."""
    if source.kind == "security-group":
        return None
    if source.kind != "cidr":
        return f"{source.kind} {source.value}"
    if not isinstance(vpc_cidr, str):
        return f"{source.value} (the VPC is not in this stack, so its range is unknown)"
    try:
        network = ipaddress.ip_network(source.value, strict=False)
        vpc_network = ipaddress.ip_network(vpc_cidr, strict=False)
    except ValueError:
        return f"{source.value} (not an address range)"
    inside = (
        isinstance(network, ipaddress.IPv4Network)
        and isinstance(vpc_network, ipaddress.IPv4Network)
        and network.subnet_of(vpc_network)
    )
    return None if inside else f"{source.value} (outside the VPC's {vpc_cidr})"
