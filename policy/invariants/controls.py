"""AWS's security controls on logs, images and the load balancer: log retention, ECR scanning and
immutable tags, a load balancer that drops invalid headers."""

from __future__ import annotations

from pulumi_policy import ReportViolation, ResourceValidationArgs

from . import aws_types
from .readers import as_mapping, number_text, whole_number


def validate_log_retention(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != aws_types.CLOUDWATCH_LOG_GROUP:
        return
    days = args.props.get("retentionInDays")
    count = whole_number(days)
    if count is None or count <= 0:
        shown = "absent" if days is None else number_text(days)
        report(
            f"log group '{args.name}' keeps its logs forever (retentionInDays {shown}); set "
            "retentionInDays (the stack's logRetentionDays: 30, production 365)",
            args.urn,
        )


def validate_ecr_repository(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != aws_types.ECR_REPOSITORY:
        return
    scanning = as_mapping(args.props.get("imageScanningConfiguration"))
    if scanning.get("scanOnPush") is not True:
        report(
            f"ECR repository '{args.name}' does not scan images on push; set "
            "imageScanningConfiguration.scanOnPush to true (ECR.1)",
            args.urn,
        )
    mutability = args.props.get("imageTagMutability")
    if mutability != "IMMUTABLE":
        shown = "absent (ECR's default MUTABLE)" if mutability is None else repr(mutability)
        report(
            f"ECR repository '{args.name}' has imageTagMutability {shown}; set it to "
            "'IMMUTABLE' so a pushed tag always means the same image (ECR.2)",
            args.urn,
        )


def validate_load_balancer(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in aws_types.LOAD_BALANCERS:
        return
    if args.props.get("loadBalancerType", "application") != "application":
        return
    if args.props.get("dropInvalidHeaderFields") is not True:
        report(
            f"load balancer '{args.name}' forwards invalid HTTP headers; set "
            "dropInvalidHeaderFields to true (ELB.4)",
            args.urn,
        )
    mode = args.props.get("desyncMitigationMode")
    if mode not in (None, "defensive", "strictest"):
        report(
            f"load balancer '{args.name}' has desyncMitigationMode {mode!r}; set it to "
            "'defensive' or 'strictest' (ELB.12)",
            args.urn,
        )
