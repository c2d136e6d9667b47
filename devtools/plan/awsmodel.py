"""Check request values against AWS's published API models: botocore's service models.

``check(value, shape)`` walks a value the way the service would read the request and reports
every violation of the model: unknown members, missing required members, wrong types, enum
values, ``min``/``max`` (lengths, counts, values) and ``pattern``. Smithy patterns are not
anchored and use ECMAScript syntax with Java-style properties (``\\p{L}``, ``\\p{Print}``),
so they run on the ``regex`` module, never ``re``.

Some rules are not in the models' shapes but in their documentation, which botocore ships with
them: "the valid values for Fargate are 2-120 seconds", the load balancer attributes and their
values. ``DOCUMENTED`` and ``DOCUMENTED_ATTRIBUTES`` hold those rules, each with the sentence it
comes from; ``stale_quotes()`` proves every sentence is still in the installed model, so a rule
AWS changes fails a test instead of silently going stale.
"""

from __future__ import annotations

import html
import ipaddress
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import botocore.session
import regex
from botocore.model import ListShape, MapShape, ServiceModel, Shape, StringShape, StructureShape


@dataclass(frozen=True)
class Violation:
    """One way a value breaks the model: where (``path``), which rule, and how."""

    path: str
    rule: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message} [{self.rule}]"


@cache
def service_model(service: str) -> ServiceModel:
    return botocore.session.get_session().get_service_model(service)


def operation_input(service: str, operation: str) -> StructureShape:
    shape = service_model(service).operation_model(operation).input_shape
    assert isinstance(shape, StructureShape), f"{service} {operation} takes no input"
    return shape


def plain_text(documentation: str) -> str:
    """A model's HTML documentation as one line of text, for quoting."""
    text = html.unescape(regex.sub(r"<[^>]+>", " ", documentation))
    text = regex.sub(r"\s+", " ", text)
    # Tags leave spaces inside punctuation: "( true )", "strictest ." -> "(true)", "strictest."
    text = regex.sub(r"\s+([,.;:)])(?=[\s,.;:)]|$)", r"\1", text)
    return regex.sub(r"\(\s+", "(", text).strip()


# --- rules stated in the documentation ------------------------------------------------------


@dataclass(frozen=True)
class Range:
    low: float | None
    high: float | None

    def problem(self, value: object) -> str | None:
        number = _number(value)
        if number is None:
            return f"{value!r} is not a number"
        if (self.low is not None and number < self.low) or (
            self.high is not None and number > self.high
        ):
            return f"{_show(number)} is out of range {_bounds(self.low, self.high)}"
        return None


@dataclass(frozen=True)
class OneOf:
    values: tuple[str, ...]

    def problem(self, value: object) -> str | None:
        shown = text(value)
        if shown not in self.values:
            return f"{shown!r} is not one of {', '.join(self.values)}"
        return None


@dataclass(frozen=True)
class Matches:
    pattern: str
    #: What the pattern means, in the documentation's words.
    meaning: str

    def problem(self, value: object) -> str | None:
        if not isinstance(value, str) or not regex.fullmatch(self.pattern, value):
            return f"{value!r} is not {self.meaning}"
        return None


@dataclass(frozen=True)
class Cidr:
    def problem(self, value: object) -> str | None:
        try:
            ipaddress.IPv4Network(str(value), strict=False)
        except ValueError:
            return f"{value!r} is not an IPv4 CIDR block"
        return None


@dataclass(frozen=True)
class Listed:
    """One of the values a documentation text enumerates, read from the installed model."""

    values: Callable[[], frozenset[str]]
    what: str

    def problem(self, value: object) -> str | None:
        if text(value) not in self.values():
            return f"{value!r} is not {self.what}"
        return None


@dataclass(frozen=True)
class Period:
    """Seconds: one of the ``short`` periods, or a whole number of minutes."""

    short: tuple[int, ...]

    def problem(self, value: object) -> str | None:
        number = _number(value)
        if number is None:
            return f"{value!r} is not a number"
        if number in self.short or (number > 0 and number % 60 == 0):
            return None
        shown = ", ".join(map(str, self.short))
        return f"{_show(number)} s is neither {shown} nor a multiple of 60"


@dataclass(frozen=True)
class Counted:
    """A list in which exactly ``count`` items pass ``test`` (``what`` says what it looks for)."""

    test: Callable[[Any], bool]
    what: str
    count: int = 1

    def problem(self, value: object) -> str | None:
        if not isinstance(value, list):
            return f"{value!r} is not a list"
        found = sum(1 for item in value if self.test(item))
        if found != self.count:
            return f"{found} items {self.what}, not {self.count}"
        return None


@dataclass(frozen=True)
class Documented:
    """A rule AWS states in a member's documentation, and the sentence it states it in.

    ``stated_in``: the (service, shape, member) whose documentation holds the sentence, when
    it is not the member's own (a rule one member states for another)."""

    rule: Range | OneOf | Matches | Cidr | Listed | Period | Counted
    quote: str
    stated_in: tuple[str, str, str] | None = None


def _values_after(quote: str, marker: str, separator: str) -> tuple[str, ...]:
    """The list a documentation sentence enumerates: 'Possible values are: 1, 3, and 5.'"""
    listed = quote.split(marker, 1)[1].rstrip(". ")
    parts = regex.split(separator, listed.replace(" and ", " "))
    return tuple(part.strip() for part in parts if part.strip())


_ECS_NAME = Matches(r"[A-Za-z0-9_-]{1,255}", "1-255 letters, numbers, underscores or hyphens")
_ECS_NAME_QUOTE = (
    "Up to 255 letters (uppercase and lowercase), numbers, underscores, and hyphens are allowed."
)
_RETENTION_QUOTE = (
    "Possible values are: 1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, "
    "1827, 2192, 2557, 2922, 3288, and 3653."
)
_FAMILY_QUOTE = (
    "Valid values are: valkey8 | valkey7 | memcached1.4 | memcached1.5 | memcached1.6 | "
    "redis2.6 | redis2.8 | redis3.2 | redis4.0 | redis5.0 | redis6.x | redis7"
)
_SECURITY_GROUP_TEXT = r"[a-zA-Z0-9 ._\-:/()#,@\[\]+=&;{}!$*]"
_SECURITY_GROUP_QUOTE = "Valid characters: a-z, A-Z, 0-9, spaces, and ._-:/()#,@[]+=&;{}!$*"
_ALARM_PERIOD = Period((10, 20, 30))
_ALARM_PERIOD_QUOTE = "Valid values are 10, 20, 30, and any multiple of 60."
_MISSING_DATA_QUOTE = "Valid Values: breaching | notBreaching | ignore | missing"


# The documentation readers some rules below call, defined before the table that refers to them.


def _member_documentation(service: str, shape_name: str, member: str) -> str:
    shape = service_model(service).shape_for(shape_name)
    assert isinstance(shape, StructureShape), shape_name
    return shape.members[member].documentation


@cache
def current_node_types() -> frozenset[str]:
    """ElastiCache node types of the current generation, as the CacheNodeType documentation of
    CreateReplicationGroup lists them (previous-generation types cannot be created)."""
    text = plain_text(
        _member_documentation("elasticache", "CreateReplicationGroupMessage", "CacheNodeType")
    )
    current = regex.findall(
        r"Current generation:(.*?)(?=Previous generation|Current generation:|$)", text
    )
    return frozenset(regex.findall(r"cache\.[a-z0-9]+\.[a-z0-9]+", " ".join(current)))


@cache
def sns_protocols() -> frozenset[str]:
    """The protocols the documentation of Subscribe's Protocol lists: the code that starts each
    item (``<code>email</code>``, an en dash, ``delivery of message via SMTP``)."""
    documentation = _member_documentation("sns", "SubscribeInput", "Protocol")
    return frozenset(
        regex.findall(r"<li>\s*<p>\s*<code>([a-z-]+)</code>\s*\N{EN DASH}", documentation)
    )


#: (service, shape, member) -> the rule its documentation states.
DOCUMENTED: dict[tuple[str, str, str], Documented] = {
    ("ecs", "ContainerDefinition", "stopTimeout"): Documented(
        Range(2, 120), "The valid values for Fargate are 2-120 seconds."
    ),
    ("ecs", "HealthCheck", "interval"): Documented(
        Range(5, 300), "You may specify between 5 and 300 seconds."
    ),
    ("ecs", "HealthCheck", "timeout"): Documented(
        Range(2, 60), "You may specify between 2 and 60 seconds."
    ),
    ("ecs", "HealthCheck", "retries"): Documented(
        Range(1, 10), "You may specify between 1 and 10 retries."
    ),
    ("ecs", "HealthCheck", "startPeriod"): Documented(
        Range(0, 300), "You can specify between 0 and 300 seconds."
    ),
    ("ecs", "RegisterTaskDefinitionRequest", "family"): Documented(_ECS_NAME, _ECS_NAME_QUOTE),
    ("ecs", "CreateServiceRequest", "serviceName"): Documented(_ECS_NAME, _ECS_NAME_QUOTE),
    ("ecs", "CreateClusterRequest", "clusterName"): Documented(_ECS_NAME, _ECS_NAME_QUOTE),
    ("elbv2", "CreateLoadBalancerInput", "Name"): Documented(
        Matches(
            r"(?!internal-)[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?",
            "1-32 letters, digits or hyphens, not starting 'internal-' nor starting or ending "
            "with a hyphen",
        ),
        "can have a maximum of 32 characters, must contain only alphanumeric characters or "
        'hyphens, must not begin or end with a hyphen, and must not begin with "internal-".',
    ),
    ("elbv2", "CreateTargetGroupInput", "Name"): Documented(
        Matches(
            r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,30}[A-Za-z0-9])?",
            "1-32 letters, digits or hyphens, not starting or ending with a hyphen",
        ),
        "can have a maximum of 32 characters, must contain only alphanumeric characters or "
        "hyphens, and must not begin or end with a hyphen.",
    ),
    ("elasticache", "CreateReplicationGroupMessage", "ReplicationGroupId"): Documented(
        Matches(
            r"[A-Za-z](?!.*--)(?:[A-Za-z0-9-]{0,38}[A-Za-z0-9])?",
            "1-40 letters, digits or hyphens, starting with a letter, without a final or "
            "doubled hyphen",
        ),
        "A name must contain from 1 to 40 alphanumeric characters or hyphens. The first "
        "character must be a letter. A name cannot end with a hyphen or contain two consecutive "
        "hyphens.",
    ),
    # A snapshot name is kept in lowercase: a name with capitals would not be the name the
    # stack gave (and outputs) for the final snapshot.
    ("elasticache", "DeleteReplicationGroupMessage", "FinalSnapshotIdentifier"): Documented(
        Matches(
            r"[^A-Z]+", "a name without capitals (ElastiCache stores snapshot names in lowercase)"
        ),
        "This value is stored as a lowercase string.",
        ("elasticache", "CreateSnapshotMessage", "SnapshotName"),
    ),
    ("elasticache", "CreateReplicationGroupMessage", "Engine"): Documented(
        OneOf(("valkey", "redis")), "The value must be set to valkey or redis."
    ),
    ("elasticache", "CreateReplicationGroupMessage", "CacheNodeType"): Documented(
        Listed(lambda: current_node_types(), "a current-generation ElastiCache node type"),
        "The following node types are supported by ElastiCache.",
    ),
    ("elasticache", "CreateReplicationGroupMessage", "NumCacheClusters"): Documented(
        Range(1, 6), "The maximum permitted value for NumCacheClusters is 6"
    ),
    ("elasticache", "CreateReplicationGroupMessage", "AuthToken"): Documented(
        Matches(r"[A-Za-z0-9!&#$^<>-]{16,128}", "16-128 letters, digits or !&#$^<>-"),
        "Must be at least 16 characters and no more than 128 characters in length. The only "
        "permitted printable special characters are !, &, #, $, ^, <, >, and -.",
    ),
    ("elasticache", "CreateCacheParameterGroupMessage", "CacheParameterGroupFamily"): Documented(
        OneOf(_values_after(_FAMILY_QUOTE, "Valid values are:", r"\s*\|\s*")), _FAMILY_QUOTE
    ),
    ("elasticache", "CreateCacheSubnetGroupMessage", "CacheSubnetGroupName"): Documented(
        Matches(r"[A-Za-z0-9-]{1,255}", "1-255 letters, digits or hyphens"),
        "Must contain no more than 255 alphanumeric characters or hyphens.",
    ),
    ("logs", "PutRetentionPolicyRequest", "retentionInDays"): Documented(
        OneOf(_values_after(_RETENTION_QUOTE, "Possible values are:", r",\s*")), _RETENTION_QUOTE
    ),
    ("secretsmanager", "DeleteSecretRequest", "RecoveryWindowInDays"): Documented(
        Range(7, 30), "The number of days from 7 to 30"
    ),
    ("secretsmanager", "CreateSecretRequest", "Name"): Documented(
        Matches(r"[A-Za-z0-9/_+=.@-]{1,512}", "ASCII letters, digits and /_+=.@-"),
        "The secret name can contain ASCII letters, numbers, and the following characters: /_+=.@-",
    ),
    ("ec2", "CreateSecurityGroupRequest", "Description"): Documented(
        Matches(
            f"{_SECURITY_GROUP_TEXT}{{0,255}}",
            "up to 255 of a-z A-Z 0-9 spaces ._-:/()#,@[]+=&;{}!$*",
        ),
        _SECURITY_GROUP_QUOTE,
    ),
    ("ec2", "CreateSecurityGroupRequest", "GroupName"): Documented(
        Matches(f"(?!sg-){_SECURITY_GROUP_TEXT}{{1,255}}", "a name not starting sg-"),
        "Can't start with sg-.",
    ),
    ("ec2", "CreateVpcRequest", "CidrBlock"): Documented(
        Cidr(), "The IPv4 network range for the VPC, in CIDR notation."
    ),
    ("ec2", "CreateSubnetRequest", "CidrBlock"): Documented(
        Cidr(), "The IPv4 network range for the subnet, in CIDR notation."
    ),
    ("ec2", "IpRange", "CidrIp"): Documented(
        Cidr(), "To specify a single IPv4 address, use the /32 prefix length."
    ),
    ("cloudwatch", "PutMetricAlarmInput", "Period"): Documented(_ALARM_PERIOD, _ALARM_PERIOD_QUOTE),
    # With metric math each metric carries its period, and PutMetricAlarm's Period states the
    # rule for them ("you specify the period for each metric within the objects in the Metrics
    # array"). MetricStat also serves GetMetricData (1 and 5 s allowed there), but the only
    # request built here that carries one is PutMetricAlarm.
    ("cloudwatch", "MetricStat", "Period"): Documented(
        _ALARM_PERIOD, _ALARM_PERIOD_QUOTE, ("cloudwatch", "PutMetricAlarmInput", "Period")
    ),
    ("cloudwatch", "PutMetricAlarmInput", "TreatMissingData"): Documented(
        OneOf(_values_after(_MISSING_DATA_QUOTE, "Valid Values:", r"\s*\|\s*")),
        _MISSING_DATA_QUOTE,
    ),
    ("cloudwatch", "PutMetricAlarmInput", "Metrics"): Documented(
        # ReturnData defaults to true when omitted (MetricDataQuery.ReturnData).
        Counted(
            lambda query: isinstance(query, Mapping) and query.get("ReturnData") is not False,
            "with ReturnData true (or omitted)",
        ),
        "One item in the Metrics array is the expression that the alarm watches.",
    ),
    ("cloudwatch", "MetricDataQuery", "Id"): Documented(
        Matches(r"[a-z][A-Za-z0-9_]*", "letters, digits and underscores, from a lowercase letter"),
        "The valid characters are letters, numbers, and underscore. The first character must "
        "be a lowercase letter.",
    ),
    ("cloudwatch", "PutDashboardInput", "DashboardName"): Documented(
        Matches(r"[A-Za-z0-9_-]{1,255}", "1-255 of A-Z a-z 0-9 - _"),
        'The maximum length is 255, and valid characters are A-Z, a-z, 0-9, "-", and "_".',
    ),
    ("sns", "CreateTopicInput", "Name"): Documented(
        Matches(
            r"[A-Za-z0-9_-]{1,251}\.fifo|[A-Za-z0-9_-]{1,256}",
            "1-256 ASCII letters, digits, underscores or hyphens (a FIFO topic's ending .fifo)",
        ),
        "Topic names must be made up of only uppercase and lowercase ASCII letters, numbers, "
        "underscores, and hyphens, and must be between 1 and 256 characters long.",
    ),
    ("sns", "SubscribeInput", "Protocol"): Documented(
        Listed(lambda: sns_protocols(), "a protocol SNS supports"), "Supported protocols include:"
    ),
    ("kms", "ScheduleKeyDeletionRequest", "PendingWindowInDays"): Documented(
        Range(7, 30), "If you include a value, it must be between 7 and 30, inclusive."
    ),
}

_TRUE_FALSE = OneOf(("true", "false"))
#: (service, attribute shape) -> attribute key -> the rule for its value, quoted from the
#: documentation of the shape's ``Key`` member (which lists every key and its values).
DOCUMENTED_ATTRIBUTES: dict[tuple[str, str], dict[str, Documented]] = {
    ("elbv2", "LoadBalancerAttribute"): {
        "idle_timeout.timeout_seconds": Documented(
            Range(1, 4000),
            "idle_timeout.timeout_seconds - The idle timeout value, in seconds. The valid range "
            "is 1-4000 seconds.",
        ),
        "routing.http.desync_mitigation_mode": Documented(
            OneOf(("monitor", "defensive", "strictest")),
            "The possible values are monitor, defensive, and strictest.",
        ),
        "routing.http.drop_invalid_header_fields.enabled": Documented(
            _TRUE_FALSE,
            "Indicates whether HTTP headers with invalid header fields are removed by the load "
            "balancer (true) or routed to targets (false).",
        ),
        "deletion_protection.enabled": Documented(
            _TRUE_FALSE,
            "deletion_protection.enabled - Indicates whether deletion protection is enabled. "
            "The value is true or false.",
        ),
        "access_logs.s3.enabled": Documented(
            _TRUE_FALSE,
            "access_logs.s3.enabled - Indicates whether access logs are enabled. The value is "
            "true or false.",
        ),
        "access_logs.s3.bucket": Documented(
            Matches(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", "an S3 bucket name"),
            "access_logs.s3.bucket - The name of the S3 bucket for the access logs.",
        ),
    },
    ("elbv2", "TargetGroupAttribute"): {
        "deregistration_delay.timeout_seconds": Documented(
            Range(0, 3600), "The range is 0-3600 seconds."
        ),
    },
}


@cache
def documented_attribute_keys(service: str, shape_name: str) -> frozenset[str]:
    """Every attribute key the documentation of ``<shape>.Key`` lists (``<code>a.b</code>``)."""
    documentation = _member_documentation(service, shape_name, "Key")
    return frozenset(
        key for key in regex.findall(r"<code>([a-z0-9_.]+)</code>", documentation) if "." in key
    )


def stale_quotes() -> list[str]:
    """Quotes of ``DOCUMENTED``/``DOCUMENTED_ATTRIBUTES`` the installed models no longer say."""
    stale = []
    for (service, shape, member), documented in DOCUMENTED.items():
        source = documented.stated_in or (service, shape, member)
        if documented.quote not in plain_text(_member_documentation(*source)):
            stale.append(f"{service} {shape}.{member}: {documented.quote!r}")
    for (service, shape), keys in DOCUMENTED_ATTRIBUTES.items():
        text = plain_text(_member_documentation(service, shape, "Key"))
        for key, documented in keys.items():
            if documented.quote not in text or key not in documented_attribute_keys(service, shape):
                stale.append(f"{service} {shape} {key}: {documented.quote!r}")
    return stale


# --- the model walk -------------------------------------------------------------------------


def _number(value: object) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _show(number: float) -> str:
    return str(int(number)) if float(number).is_integer() else str(number)


def _bounds(low: float | None, high: float | None) -> str:
    if high is None:
        return f">= {_show(float(low or 0))}"
    if low is None:
        return f"<= {_show(float(high))}"
    return f"{_show(float(low))}..{_show(float(high))}"


def text(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


@cache
def _compiled(pattern: str) -> regex.Pattern[str]:
    # Java writes characters beyond the BMP as UTF-16 surrogate pairs (\uD800\uDC00); Python
    # strings hold code points.
    def code_point(match: regex.Match[str]) -> str:
        high, low = int(match[1], 16), int(match[2], 16)
        return f"\\U{0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00):08X}"

    return regex.compile(
        regex.sub(r"\\u(D[89AB][0-9A-F]{2})\\u(D[C-F][0-9A-F]{2})", code_point, pattern)
    )


def compiles(pattern: str) -> bool:
    try:
        _compiled(pattern)
    except regex.error:
        return False
    return True


def _limits(shape: Shape, measure: float, what: str) -> list[tuple[str, str]]:
    found = []
    low, high = shape.metadata.get("min"), shape.metadata.get("max")
    if low is not None and measure < low:
        found.append(("min", f"{what} {_show(measure)} is below the minimum {low}"))
    if high is not None and measure > high:
        found.append(("max", f"{what} {_show(measure)} is above the maximum {high}"))
    return found


def check(value: Any, shape: Shape, *, service: str, path: str = "") -> list[Violation]:
    """Every way ``value`` violates ``shape`` of ``service``'s model, with its path: the
    model's constraints, and the rules its documentation states (``DOCUMENTED``)."""
    where = path or shape.name

    def walk(item: Any, item_shape: Shape, item_path: str) -> list[Violation]:
        return check(item, item_shape, service=service, path=item_path)

    def violation(rule: str, message: str) -> list[Violation]:
        return [Violation(where, rule, message)]

    if isinstance(shape, StructureShape):
        if not isinstance(value, dict):
            return violation(
                "type", f"expected an object ({shape.name}), got {type(value).__name__}"
            )
        found = [
            Violation(where, "required", f"missing required member {name!r} of {shape.name}")
            for name in shape.required_members
            if value.get(name) is None
        ]
        for name, item in value.items():
            member_path = f"{path}.{name}" if path else name
            if name not in shape.members:
                found.append(
                    Violation(member_path, "unknown member", f"not a member of {shape.name}")
                )
                continue
            found += walk(item, shape.members[name], member_path)
            rule = DOCUMENTED.get((service, shape.name, name))
            if rule is not None:
                problem = rule.rule.problem(item)
                if problem:
                    found.append(Violation(member_path, f'documented: "{rule.quote}"', problem))
        found += _attribute_violations(value, shape, service, where)
        return found
    if isinstance(shape, ListShape):
        if not isinstance(value, list):
            return violation("type", f"expected a list, got {type(value).__name__}")
        found = [
            Violation(where, rule, message)
            for rule, message in _limits(shape, len(value), "length")
        ]
        for index, item in enumerate(value):
            found += walk(item, shape.member, f"{where}[{index}]")
        return found
    if isinstance(shape, MapShape):
        if not isinstance(value, dict):
            return violation("type", f"expected a map, got {type(value).__name__}")
        found = [
            Violation(where, rule, message) for rule, message in _limits(shape, len(value), "size")
        ]
        for key, item in value.items():
            found += walk(key, shape.key, f"{where}<key {key!r}>")
            found += walk(item, shape.value, f"{where}[{key!r}]")
        return found
    return [Violation(where, rule, message) for rule, message in _scalar(value, shape)]


def _scalar(value: Any, shape: Shape) -> list[tuple[str, str]]:
    kind = shape.type_name
    if isinstance(shape, StringShape):  # botocore's class for every "string" shape
        if not isinstance(value, str):
            return [("type", f"expected a string, got {type(value).__name__} {value!r}")]
        found = _limits(shape, len(value), "length")
        if shape.enum and value not in shape.enum:
            found.append(("enum", f"{value!r} is not one of {', '.join(shape.enum)}"))
        pattern = shape.metadata.get("pattern")
        if pattern is not None and not _compiled(pattern).search(value):
            found.append(("pattern", f"{value!r} does not match /{pattern}/"))
        return found
    if kind in ("integer", "long"):
        # Pulumi hands every number over as a double; the provider sends integral ones as is.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return [("type", f"expected an integer, got {type(value).__name__} {value!r}")]
        if isinstance(value, float) and not value.is_integer():
            return [("type", f"expected an integer, got {value!r}")]
        return _limits(shape, value, "value")
    if kind in ("double", "float"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return [("type", f"expected a number, got {type(value).__name__} {value!r}")]
        return _limits(shape, value, "value")
    if kind == "boolean":
        if not isinstance(value, bool):
            return [("type", f"expected a boolean, got {type(value).__name__} {value!r}")]
        return []
    return [("unchecked", f"shape type {kind!r} is not checked by this validator")]


def _attribute_violations(
    value: Mapping[str, Any], shape: StructureShape, service: str, where: str
) -> list[Violation]:
    """A Key/Value attribute (load balancer, target group): a documented key, a valid value."""
    rules = DOCUMENTED_ATTRIBUTES.get((service, shape.name))
    if rules is None:
        return []
    key, attribute_value = value.get("Key"), value.get("Value")
    at = f"{where}<{key}>"
    if key not in documented_attribute_keys(service, shape.name):
        return [
            Violation(at, "documented keys", f"{key!r} is not an attribute {shape.name} documents")
        ]
    rule = rules.get(str(key))
    problem = rule.rule.problem(attribute_value) if rule is not None else None
    return [Violation(at, f'documented: "{rule.quote}"', problem)] if rule and problem else []
