"""Network: the VPC (created, or the user's) and the security group matrix.

Only the load balancer is reachable from the internet; web tasks accept only the load balancer;
the broker accepts only the tasks; worker, beat and enqueue tasks accept nothing.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.cluster import AwsContext, assume_role_policy, policy_document
from infra.config import ExistingVpc, NewVpc
from infra.fargate_service import TaskPlacement

ANYWHERE = "0.0.0.0/0"
HTTPS = 443
HTTP = 80


@dataclass(frozen=True)
class NetworkArgs:
    """Arguments of ``Network``.

    - ``vpc``: ``NewVpc`` (create one) or ``ExistingVpc`` (use the user's). Required.
    - ``availability_zones``: AZ names for a created VPC; the first two get a public and a
      private subnet each. Required (>= 2) when creating; ignored otherwise.
    - ``web_port``: TCP port of the web tasks. Default 8000.
    - ``broker_port``: TCP port of the broker. Default 6379.
    - ``https``: the load balancer also listens on 443. Default False.
    - ``flow_logs``: log rejected traffic of a created VPC to CloudWatch (Security Hub EC2.6).
      Default False.
    - ``log_retention_days``: retention of the flow-log group, days. Default 30.
    - ``aws``: partition/region/account of the deployment; required with ``flow_logs``.
    """

    vpc: NewVpc | ExistingVpc
    availability_zones: Sequence[str] = ()
    web_port: int = 8000
    broker_port: int = 6379
    https: bool = False
    flow_logs: bool = False
    log_retention_days: int = 30
    aws: AwsContext | None = None


#: Subnets per VPC: one public and one private in each of this many AZs (ELB.13 needs two).
AZ_COUNT = 2


def subnet_cidrs(cidr: str) -> tuple[list[str], list[str]]:
    """Split the VPC range in eighths: public subnets take the first two, private ones the
    first two of the upper half, so each kind can grow to four AZs without renumbering."""
    network = ipaddress.IPv4Network(cidr)
    blocks = [str(block) for block in network.subnets(new_prefix=network.prefixlen + 3)]
    return blocks[0:AZ_COUNT], blocks[4 : 4 + AZ_COUNT]


class Network(pulumi.ComponentResource):
    vpc_id: pulumi.Output[str]
    public_subnet_ids: list[pulumi.Output[str]]
    private_subnet_ids: list[pulumi.Output[str]]
    alb_security_group_id: pulumi.Output[str]
    web_security_group_id: pulumi.Output[str]
    background_security_group_id: pulumi.Output[str]
    broker_security_group_id: pulumi.Output[str]
    #: Tasks go to private subnets, unless a created VPC has no NAT: then public + public IP.
    tasks_in_public_subnets: bool

    def __init__(
        self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("celery-ecs:infra:Network", name, None, opts)
        args = self._normalize(args)
        child = pulumi.ResourceOptions(parent=self)
        if isinstance(args.vpc, NewVpc):
            self._create_vpc(name, args, args.vpc, child)
        else:
            self.vpc_id = pulumi.Output.from_input(args.vpc.vpc_id)
            self.public_subnet_ids = [
                pulumi.Output.from_input(s) for s in args.vpc.public_subnet_ids
            ]
            self.private_subnet_ids = [
                pulumi.Output.from_input(s) for s in args.vpc.private_subnet_ids
            ]
            self.tasks_in_public_subnets = False
        self._create_security_groups(name, args, child)
        self.register_outputs(
            {
                "vpcId": self.vpc_id,
                "publicSubnetIds": self.public_subnet_ids,
                "privateSubnetIds": self.private_subnet_ids,
            }
        )

    @staticmethod
    def _normalize(args: NetworkArgs) -> NetworkArgs:
        if isinstance(args.vpc, NewVpc) and len(args.availability_zones) < AZ_COUNT:
            raise ValueError(
                f"availability_zones: a created VPC needs {AZ_COUNT} AZs, got "
                f"{list(args.availability_zones)}"
            )
        for port_name in ("web_port", "broker_port"):
            if not 1 <= getattr(args, port_name) <= 65535:
                raise ValueError(f"{port_name}: must be 1..65535")
        if args.flow_logs and args.aws is None:
            raise ValueError("aws: required when flow_logs is on")
        return args

    def task_placement(self, security_group_id: pulumi.Input[str]) -> TaskPlacement:
        public = self.tasks_in_public_subnets
        subnets = self.public_subnet_ids if public else self.private_subnet_ids
        return TaskPlacement(
            subnet_ids=subnets,
            security_group_id=security_group_id,
            assign_public_ip=self.tasks_in_public_subnets,
        )

    def _create_vpc(
        self, name: str, args: NetworkArgs, vpc_config: NewVpc, child: pulumi.ResourceOptions
    ) -> None:
        zones = list(args.availability_zones)[:AZ_COUNT]
        public_cidrs, private_cidrs = subnet_cidrs(vpc_config.cidr)
        vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=vpc_config.cidr,
            enable_dns_support=True,
            enable_dns_hostnames=True,
            tags={"Name": name},
            opts=child,
        )
        # Adopting the default security group strips all its rules (Security Hub EC2.2).
        aws.ec2.DefaultSecurityGroup(
            f"{name}-default-sg",
            vpc_id=vpc.id,
            tags={"Name": f"{name}-default (unused)"},
            opts=child,
        )
        gateway = aws.ec2.InternetGateway(f"{name}-igw", vpc_id=vpc.id, opts=child)
        public_table = aws.ec2.RouteTable(f"{name}-public", vpc_id=vpc.id, opts=child)
        aws.ec2.Route(
            f"{name}-public-internet",
            route_table_id=public_table.id,
            destination_cidr_block=ANYWHERE,
            gateway_id=gateway.id,
            opts=child,
        )

        public_subnets: list[aws.ec2.Subnet] = []
        private_subnets: list[aws.ec2.Subnet] = []
        for index, zone in enumerate(zones):
            public = aws.ec2.Subnet(
                f"{name}-public-{index}",
                vpc_id=vpc.id,
                availability_zone=zone,
                cidr_block=public_cidrs[index],
                map_public_ip_on_launch=False,
                tags={"Name": f"{name}-public-{zone}"},
                opts=child,
            )
            aws.ec2.RouteTableAssociation(
                f"{name}-public-{index}",
                subnet_id=public.id,
                route_table_id=public_table.id,
                opts=child,
            )
            public_subnets.append(public)
            private_subnets.append(
                aws.ec2.Subnet(
                    f"{name}-private-{index}",
                    vpc_id=vpc.id,
                    availability_zone=zone,
                    cidr_block=private_cidrs[index],
                    map_public_ip_on_launch=False,
                    tags={"Name": f"{name}-private-{zone}"},
                    opts=child,
                )
            )

        nat_count = {"none": 0, "single": 1, "perAz": len(zones)}[vpc_config.nat_gateways]
        nat_ids = []
        for index in range(nat_count):
            address = aws.ec2.Eip(f"{name}-nat-{index}", domain="vpc", opts=child)
            nat = aws.ec2.NatGateway(
                f"{name}-nat-{index}",
                allocation_id=address.id,
                subnet_id=public_subnets[index].id,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[gateway]),
            )
            nat_ids.append(nat.id)
        # One private route table per AZ; without NAT they have no default route at all (the
        # broker needs none, and tasks then live in the public subnets).
        for index, subnet in enumerate(private_subnets):
            table = aws.ec2.RouteTable(f"{name}-private-{index}", vpc_id=vpc.id, opts=child)
            if nat_ids:
                aws.ec2.Route(
                    f"{name}-private-{index}-nat",
                    route_table_id=table.id,
                    destination_cidr_block=ANYWHERE,
                    nat_gateway_id=nat_ids[index % len(nat_ids)],
                    opts=child,
                )
            aws.ec2.RouteTableAssociation(
                f"{name}-private-{index}", subnet_id=subnet.id, route_table_id=table.id, opts=child
            )

        if args.flow_logs:
            assert args.aws is not None  # checked in _normalize
            self._create_flow_logs(name, vpc, args.log_retention_days, args.aws, child)

        self.vpc_id = vpc.id
        self.public_subnet_ids = [subnet.id for subnet in public_subnets]
        self.private_subnet_ids = [subnet.id for subnet in private_subnets]
        self.tasks_in_public_subnets = nat_count == 0

    def _create_flow_logs(
        self,
        name: str,
        vpc: aws.ec2.Vpc,
        retention_days: int,
        context: AwsContext,
        child: pulumi.ResourceOptions,
    ) -> None:
        group = aws.cloudwatch.LogGroup(
            f"{name}-flow-logs", retention_in_days=retention_days, opts=child
        )
        role = aws.iam.Role(
            f"{name}-flow-logs",
            assume_role_policy=assume_role_policy("vpc-flow-logs.amazonaws.com", context),
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-flow-logs",
            role=role.id,
            policy=policy_document(
                [
                    {
                        "Effect": "Allow",
                        "Action": [
                            "logs:CreateLogStream",
                            "logs:PutLogEvents",
                            "logs:DescribeLogStreams",
                        ],
                        "Resource": [group.arn, pulumi.Output.concat(group.arn, ":*")],
                    },
                    # Listing log groups has no resource-level permissions: scoped to the group,
                    # the statement would grant nothing (parliament: RESOURCE_MISMATCH).
                    {"Effect": "Allow", "Action": ["logs:DescribeLogGroups"], "Resource": "*"},
                ]
            ),
            opts=child,
        )
        # REJECT only: what Security Hub EC2.6 asks for, at a fraction of ALL's volume.
        aws.ec2.FlowLog(
            f"{name}-flow-log",
            vpc_id=vpc.id,
            traffic_type="REJECT",
            log_destination_type="cloud-watch-logs",
            log_destination=group.arn,
            iam_role_arn=role.arn,
            opts=child,
        )

    def _create_security_groups(
        self, name: str, args: NetworkArgs, child: pulumi.ResourceOptions
    ) -> None:
        def group(kind: str, description: str) -> aws.ec2.SecurityGroup:
            # No inline rules: the provider removes AWS's default allow-all egress, and every
            # rule below is its own resource.
            return aws.ec2.SecurityGroup(
                f"{name}-{kind}",
                vpc_id=self.vpc_id,
                description=description,
                tags={"Name": f"{name}-{kind}"},
                opts=child,
            )

        alb = group("alb", "Load balancer: HTTP(S) from the internet")
        web = group("web", "Web tasks: the web port from the load balancer only")
        background = group("background", "Worker, beat and enqueue tasks: no inbound traffic")
        broker = group("broker", "Broker: Redis from the tasks only")

        def allow(
            rule_type: type[aws.vpc.SecurityGroupIngressRule | aws.vpc.SecurityGroupEgressRule],
            rule: str,
            group_: aws.ec2.SecurityGroup,
            port: int,
            *,
            cidr: str | None = None,
            peer: aws.ec2.SecurityGroup | None = None,
        ) -> None:
            """One TCP port into or out of ``group_``, from or to ``cidr`` or the ``peer`` group."""
            rule_type(
                f"{name}-{rule}",
                security_group_id=group_.id,
                ip_protocol="tcp",
                from_port=port,
                to_port=port,
                cidr_ipv4=cidr,
                referenced_security_group_id=peer.id if peer else None,
                opts=child,
            )

        ingress = functools.partial(allow, aws.vpc.SecurityGroupIngressRule)
        egress = functools.partial(allow, aws.vpc.SecurityGroupEgressRule)

        ingress("alb-http-in", alb, HTTP, cidr=ANYWHERE)
        if args.https:
            ingress("alb-https-in", alb, HTTPS, cidr=ANYWHERE)
        egress("alb-to-web", alb, args.web_port, peer=web)
        ingress("web-from-alb", web, args.web_port, peer=alb)
        for kind, origin in (("web", web), ("background", background)):
            # AWS APIs (ECR, CloudWatch Logs, Secrets Manager) over HTTPS, and the broker.
            egress(f"{kind}-https-out", origin, HTTPS, cidr=ANYWHERE)
            egress(f"{kind}-to-broker", origin, args.broker_port, peer=broker)
            ingress(f"broker-from-{kind}", broker, args.broker_port, peer=origin)

        self.alb_security_group_id = alb.id
        self.web_security_group_id = web.id
        self.background_security_group_id = background.id
        self.broker_security_group_id = broker.id
