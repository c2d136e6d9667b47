"""The invariants celery-ecs promises, as Pulumi policies (``pulumi-policy``).

``__main__.py`` puts ``POLICIES`` into one mandatory pack; the tests call the validate functions
here directly (constructing a ``PolicyPack`` starts a gRPC server and blocks).

What a policy sees is what the engine hands an analyzer: a resource's inputs (resource
policies, run before the resource is created or changed) or every resource's outputs (stack
policies, run once the whole stack is known), camelCase, numbers as floats, secrets unwrapped,
wrapped so that reading a value not known yet during a preview raises ``UnknownValueError``; the
pack then reports that the policy cannot run during the preview and it runs at ``pulumi up``.
The checks read the values that are known at preview first, so what they find is reported
before an unknown value ends the function.

The rules restate the program's (``infra/budget.py``, ``app/settings.py``, the tags of
``infra/cluster.py``) instead of importing them: the pack runs in its own environment, and a
policy computed by the program's own functions would only check the program against itself.
``tests/test_policy_pack.py`` holds the restated values and rules against the program's.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pulumi_policy import (
    PolicyResource,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)
from pulumi_policy.proxy import UnknownValueError

# --- what the program promises, restated (see the module docstring) ---------------------------

#: Fargate's ceiling for ``stopTimeout`` (infra/budget.py FARGATE_STOP_TIMEOUT_CAP).
FARGATE_STOP_TIMEOUT_CAP = 120
#: Seconds a process needs after its last piece of work to cancel, restore and exit
#: (infra/budget.py EXIT_MARGIN); also the least any container gets (beat, enqueue).
EXIT_MARGIN = 10
#: ECS's stopTimeout on Fargate when a container sets none.
FARGATE_DEFAULT_STOP_TIMEOUT = 30
#: app/settings.py: the variables that carry a container's budget, and the web's default.
TIME_LIMIT = "CELERY_TASK_TIME_LIMIT"
SOFT_SHUTDOWN_TIMEOUT = "CELERY_SOFT_SHUTDOWN_TIMEOUT"
TASK_PROTECTION = "CELERY_TASK_PROTECTION"
REMAP_SIGTERM = "REMAP_SIGTERM"
WEB_REQUEST_TIMEOUT = "WEB_REQUEST_TIMEOUT"
DEFAULT_WEB_REQUEST_TIMEOUT = 30
#: infra/cluster.py tags every service and task definition ``Service: <name>``: ``beat``,
#: ``web``, ``enqueue``, ``worker-<pool>``.
SERVICE_TAG = "Service"
BEAT_SERVICE = "beat"
WORKER_SERVICE_PREFIX = "worker-"

# --- resource types ---------------------------------------------------------------------------

SERVICE = "aws:ecs/service:Service"
TASK_DEFINITION = "aws:ecs/taskDefinition:TaskDefinition"
SCALING_TARGET = "aws:appautoscaling/target:Target"
REPLICATION_GROUP = "aws:elasticache/replicationGroup:ReplicationGroup"
PARAMETER_GROUP = "aws:elasticache/parameterGroup:ParameterGroup"
VPC = "aws:ec2/vpc:Vpc"
SECURITY_GROUP = "aws:ec2/securityGroup:SecurityGroup"
SECURITY_GROUP_RULE = "aws:ec2/securityGroupRule:SecurityGroupRule"
INGRESS_RULE = "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule"
LOG_GROUP = "aws:cloudwatch/logGroup:LogGroup"
ECR_REPOSITORY = "aws:ecr/repository:Repository"
LOAD_BALANCERS = frozenset(
    {"aws:lb/loadBalancer:LoadBalancer", "aws:alb/loadBalancer:LoadBalancer"}
)
#: Resource type -> the props that hold an IAM policy document (JSON text or an object).
POLICY_DOCUMENTS: Mapping[str, tuple[str, ...]] = {
    "aws:iam/role:Role": ("assumeRolePolicy",),
    "aws:iam/policy:Policy": ("policy",),
    "aws:iam/rolePolicy:RolePolicy": ("policy",),
    "aws:iam/userPolicy:UserPolicy": ("policy",),
    "aws:iam/groupPolicy:GroupPolicy": ("policy",),
    "aws:sqs/queuePolicy:QueuePolicy": ("policy",),
    "aws:sqs/queue:Queue": ("policy",),
    "aws:sns/topicPolicy:TopicPolicy": ("policy",),
    "aws:sns/topic:Topic": ("policy",),
    # A key policy grants on "*", which in a key policy means the key itself: only its actions
    # are checked here, like every other document's.
    "aws:kms/key:Key": ("policy",),
    "aws:kms/keyPolicy:KeyPolicy": ("policy",),
    "aws:secretsmanager/secretPolicy:SecretPolicy": ("policy",),
    "aws:ecr/repositoryPolicy:RepositoryPolicy": ("policy",),
    "aws:s3/bucketPolicy:BucketPolicy": ("policy",),
}

#: Identity policies (what their holder may do, to ``Resource``), by resource type -> the props
#: that hold one besides a role's inline policies. Trust, key and other resource policies are
#: not among them: there ``"Resource": "*"`` means the resource the policy is attached to.
IDENTITY_POLICY_DOCUMENTS: Mapping[str, tuple[str, ...]] = {
    "aws:iam/role:Role": (),
    "aws:iam/policy:Policy": ("policy",),
    "aws:iam/rolePolicy:RolePolicy": ("policy",),
    "aws:iam/userPolicy:UserPolicy": ("policy",),
    "aws:iam/groupPolicy:GroupPolicy": ("policy",),
}
#: The only actions an identity policy may allow on ``"Resource": "*"``: those with no
#: resource-level permissions, each with the condition key that must then scope it (None: the
#: action offers none). Service Authorization Reference ("Actions, resources, and condition
#: keys for" Amazon ECR, CloudWatch Logs, Amazon CloudWatch): GetAuthorizationToken and
#: DescribeLogGroups list no resource type and no condition key of their own; PutMetricData
#: lists no resource type and ``cloudwatch:namespace`` (CloudWatch User Guide, "Using
#: condition keys to limit access to CloudWatch namespaces"). The program grants these
#: (infra/cluster.py, infra/network.py, infra/worker.py).
STAR_RESOURCE_ACTIONS: Mapping[str, str | None] = {
    "ecr:getauthorizationtoken": None,
    "logs:describeloggroups": None,
    "cloudwatch:putmetricdata": "cloudwatch:namespace",
}

# --- small readers --------------------------------------------------------------------------


def _number(value: object) -> str:
    """A value as a person writes it: the engine's 200.0 is 200."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, str) else str(value)


def _whole(value: object) -> int | None:
    """A whole number from a number or numeric text; None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    return None


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _items(value: object) -> list[Any]:
    """A list prop as a list (absent: empty; one value: a list of it)."""
    if value is None:
        return []
    if isinstance(value, Sequence) and not isinstance(value, str):
        return list(value)
    return [value]


def _service_tag(props: Mapping[str, Any]) -> str | None:
    tag = _mapping(props.get("tags")).get(SERVICE_TAG)
    return tag if isinstance(tag, str) else None


def _container_definitions(props: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """A task definition's containers; ``containerDefinitions`` is JSON text. Raises
    ``ValueError`` when it is not a JSON list of objects."""
    raw = props.get("containerDefinitions")
    parsed = json.loads(raw) if isinstance(raw, str) else raw
    if not isinstance(parsed, Sequence) or isinstance(parsed, str):
        raise ValueError("containerDefinitions is not a list")
    if not all(isinstance(container, Mapping) for container in parsed):
        raise ValueError("containerDefinitions holds something other than objects")
    return list(parsed)


def _containers_or_report(
    args: ResourceValidationArgs, report: ReportViolation
) -> list[Mapping[str, Any]]:
    try:
        return _container_definitions(args.props)
    except ValueError as error:
        report(
            f"task definition '{args.name}': containerDefinitions cannot be read ({error}); "
            "give it a JSON list of container definitions",
            args.urn,
        )
        return []


def _environment(container: Mapping[str, Any]) -> dict[str, str]:
    return {
        str(item.get("name")): str(item.get("value", ""))
        for item in _items(container.get("environment"))
        if isinstance(item, Mapping)
    }


def _command(container: Mapping[str, Any]) -> list[str]:
    return [str(arg) for arg in _items(container.get("command"))]


#: Options of the ``celery`` command that take a value (so the value is not the subcommand).
_CELERY_OPTIONS_WITH_VALUE = frozenset(
    {"-A", "--app", "-b", "--broker", "--result-backend", "--loader", "--config", "--workdir"}
)


def container_role(command: Sequence[str]) -> str:
    """What a container runs, from its command: ``worker`` or ``beat`` (the celery
    subcommand), ``web`` (gunicorn), or ``other`` (e.g. the enqueue command)."""
    args = list(command)
    python = len(args) >= 3 and re.fullmatch(r"python[0-9.]*", args[0].rsplit("/", 1)[-1])
    if python and args[1] == "-m":
        args = args[2:]
    if not args:
        return "other"
    program = args[0].rsplit("/", 1)[-1]
    if program == "gunicorn":
        return "web"
    if program != "celery":
        return "other"
    takes_value = False
    for token in args[1:]:
        if takes_value:
            takes_value = False
        elif token in _CELERY_OPTIONS_WITH_VALUE:
            takes_value = True
        elif not token.startswith("-"):
            return token if token in ("worker", "beat") else "other"
    return "other"


# --- stop timeouts --------------------------------------------------------------------------


@dataclass(frozen=True)
class StopNeed:
    """The least ``stopTimeout`` a container needs, and why."""

    seconds: int
    reason: str


def stop_timeout_need(role: str, environment: Mapping[str, str]) -> StopNeed:
    """The budget's rule (infra/budget.py), from what the container's environment says.

    - A worker in warm shutdown (no ``REMAP_SIGTERM=SIGQUIT``) lets every running task finish:
      at most the hard time limit, then the exit margin.
    - A worker in cold shutdown waits its soft-shutdown grace, then cancels (the tasks are
      requeued at once) and exits within the margin; task protection keeps busy workers from
      being chosen for scale-in, so the budget need not cover a whole task.
    - The web finishes requests in flight at SIGTERM: at most the request timeout, then the
      margin.
    - Anything else (beat releasing its lock, the enqueue command) gets the margin.

    Raises ``ValueError`` when a worker's environment carries no usable limit.
    """
    if role == "worker":
        hard = _whole(environment.get(TIME_LIMIT))
        if hard is None or hard < 1:
            raise ValueError(
                f"its environment has no whole-second {TIME_LIMIT}, so nothing bounds how long "
                "a warm shutdown takes; set the pool's taskTimeout (the budget renders it)"
            )
        if environment.get(REMAP_SIGTERM) == "SIGQUIT":
            grace = _whole(environment.get(SOFT_SHUTDOWN_TIMEOUT, "0"))
            if grace is None or grace < 0:
                raise ValueError(f"{SOFT_SHUTDOWN_TIMEOUT} is not a whole number of seconds")
            return StopNeed(
                grace + EXIT_MARGIN,
                f"cold shutdown: {SOFT_SHUTDOWN_TIMEOUT}={grace} s of grace, then "
                f"{EXIT_MARGIN} s to cancel, requeue and exit",
            )
        return StopNeed(
            hard + EXIT_MARGIN,
            f"warm shutdown: a running task may take up to {TIME_LIMIT}={hard} s, then "
            f"{EXIT_MARGIN} s to exit",
        )
    if role == "web":
        raw = environment.get(WEB_REQUEST_TIMEOUT, str(DEFAULT_WEB_REQUEST_TIMEOUT))
        request = _whole(raw)
        if request is None or request < 1:
            raise ValueError(f"{WEB_REQUEST_TIMEOUT}={raw!r} is not a whole number of seconds")
        return StopNeed(
            request + EXIT_MARGIN,
            f"a request in flight at SIGTERM may take {WEB_REQUEST_TIMEOUT}={request} s, then "
            f"{EXIT_MARGIN} s to exit",
        )
    return StopNeed(EXIT_MARGIN, f"{EXIT_MARGIN} s to finish and exit")


def validate_stop_timeouts(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != TASK_DEFINITION:
        return
    fargate = "FARGATE" in [str(c) for c in _items(args.props.get("requiresCompatibilities"))]
    for container in _containers_or_report(args, report):
        where = f"container '{container.get('name')}' of task definition '{args.name}'"
        role = container_role(_command(container))
        environment = _environment(container)
        try:
            need = stop_timeout_need(role, environment)
        except ValueError as error:
            report(f"{where} is a Celery {role}: {error}", args.urn)
            continue
        cold = role == "worker" and environment.get(REMAP_SIGTERM) == "SIGQUIT"
        if cold and environment.get(TASK_PROTECTION, "").lower() != "true":
            report(
                f"{where} stops in cold shutdown (REMAP_SIGTERM=SIGQUIT) without "
                f"{TASK_PROTECTION}=true; set it, or scale-in and deployments stop busy "
                "workers and cancel their tasks",
                args.urn,
            )
        if fargate and need.seconds > FARGATE_STOP_TIMEOUT_CAP:
            report(
                f"{where} needs a stopTimeout of {need.seconds} s ({need.reason}), more than "
                f"Fargate's {FARGATE_STOP_TIMEOUT_CAP} s; lower the pool's taskTimeout, or let "
                "the budget choose cold shutdown with task protection (infra/budget.py)",
                args.urn,
            )
            continue
        stop = container.get("stopTimeout")
        seconds = _whole(stop)
        if stop is None:
            report(
                f"{where} sets no stopTimeout (Fargate then waits "
                f"{FARGATE_DEFAULT_STOP_TIMEOUT} s); set it to {need.seconds} ({need.reason})",
                args.urn,
            )
        elif seconds is None:
            report(f"{where} has stopTimeout {_number(stop)}; give whole seconds", args.urn)
        elif fargate and seconds > FARGATE_STOP_TIMEOUT_CAP:
            report(
                f"{where} has stopTimeout {seconds}, above Fargate's cap of "
                f"{FARGATE_STOP_TIMEOUT_CAP} s; set it to {need.seconds} ({need.reason})",
                args.urn,
            )
        elif seconds < need.seconds:
            report(
                f"{where} has stopTimeout {seconds} but needs at least {need.seconds} "
                f"({need.reason}); set stopTimeout to {need.seconds}, as infra/budget.py derives "
                "it, or SIGKILL cuts the shutdown short",
                args.urn,
            )


# --- containers: hardening and secrets ------------------------------------------------------

_ROOT_USERS = frozenset({"0", "root"})


def validate_container_hardening(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != TASK_DEFINITION:
        return
    # A task-level setting, and a constant: read before the containers (unknown in a preview).
    if args.props.get("pidMode") == "host":
        report(
            f"task definition '{args.name}' shares the host's process namespace (pidMode "
            "host); remove pidMode (ECS.3)",
            args.urn,
        )
    for container in _containers_or_report(args, report):
        where = f"container '{container.get('name')}' of task definition '{args.name}'"
        if container.get("readonlyRootFilesystem") is not True:
            report(
                f"{where} has a writable root filesystem; set readonlyRootFilesystem to true "
                "and mount a volume where it must write (ECS.5)",
                args.urn,
            )
        user = container.get("user")
        if not isinstance(user, str) or not user.strip():
            report(
                f"{where} sets no user, so it runs as the image's user (root unless the image "
                "says otherwise); set user to a non-root uid:gid such as 10001:10001 (ECS.20)",
                args.urn,
            )
        elif user.split(":", 1)[0].strip() in _ROOT_USERS:
            report(
                f"{where} runs as user {user!r}; set user to a non-root uid:gid such as "
                "10001:10001 (ECS.20)",
                args.urn,
            )
        if container.get("privileged") is True:
            report(f"{where} is privileged; remove privileged (ECS.4)", args.urn)
        if not _mapping(container.get("logConfiguration")).get("logDriver"):
            report(
                f"{where} has no logConfiguration; send its logs with the awslogs driver (ECS.9)",
                args.urn,
            )


#: Words of a variable name (split at anything but letters and digits) that say its value is a
#: credential.
_SECRET_WORDS = frozenset(
    {
        "PASSWORD",
        "PASSWD",
        "PWD",
        "PASSPHRASE",
        "SECRET",
        "TOKEN",
        "KEY",
        "CREDENTIAL",
        "CREDENTIALS",
        "APIKEY",
        "SECRETKEY",
        "ACCESSKEY",
        "APITOKEN",
        "AUTHTOKEN",
    }
)
#: Name endings that mean the value only points at or names something (a Redis key prefix, a
#: secret's ARN, a file holding the secret).
_REFERENCE_SUFFIXES = ("_PREFIX", "_SUFFIX", "_NAME", "_ARN", "_FILE", "_PATH", "_ID_FIELD")
#: Values that are credentials whatever the name: a URL with a password in it, an AWS access
#: key id, a PEM private key.
_SECRET_VALUES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("a URL with a password in it", re.compile(r"[a-z][a-z0-9+.-]*://[^/@\s:]*:[^/@\s]+@", re.I)),
    ("an AWS access key id", re.compile(r"\b(?:AKIA|ASIA)[A-Z0-9]{16}\b")),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
)


def secret_reason(name: str, value: str) -> str | None:
    """Why a variable looks like it carries a secret, or None."""
    for what, pattern in _SECRET_VALUES:
        if pattern.search(value):
            return f"its value is {what}"
    upper = name.upper()
    if upper.endswith(_REFERENCE_SUFFIXES):
        return None
    words = set(re.split(r"[^A-Z0-9]+", upper))
    found = sorted(words & _SECRET_WORDS)
    if found:
        return f"its name contains {found[0]}"
    return None


def validate_no_secrets_in_environment(
    args: ResourceValidationArgs, report: ReportViolation
) -> None:
    if args.resource_type != TASK_DEFINITION:
        return
    for container in _containers_or_report(args, report):
        for name, value in sorted(_environment(container).items()):
            reason = secret_reason(name, value)
            if reason is not None:
                # The value itself never goes into the message: it may be the secret.
                report(
                    f"container '{container.get('name')}' of task definition '{args.name}' "
                    f"has {name} in its environment, which looks like a secret ({reason}); "
                    "move it to the container's secrets (valueFrom a Secrets Manager or SSM "
                    "ARN) so it never appears in the task definition (ECS.8)",
                    args.urn,
                )


# --- services: beat and workers -------------------------------------------------------------


def _beat_problems(props: Mapping[str, Any], name: str) -> Iterator[str]:
    where = f"beat service '{name}'"
    desired = props.get("desiredCount")
    if _whole(desired) != 1:
        yield (
            f"{where} has desiredCount {_number(desired)}; set it to 1: two beats send every "
            "periodic task twice, none sends nothing"
        )
    maximum = props.get("deploymentMaximumPercent")
    if _whole(maximum) != 100:
        shown = "absent (ECS's default 200)" if maximum is None else _number(maximum)
        yield (
            f"{where} has deploymentMaximumPercent {shown}; set it to 100 so ECS stops the old "
            "beat before it starts the new one, never running two during a deploy"
        )
    minimum = props.get("deploymentMinimumHealthyPercent")
    if _whole(minimum) != 0:
        shown = "absent (ECS's default 100)" if minimum is None else _number(minimum)
        yield (
            f"{where} has deploymentMinimumHealthyPercent {shown}; set it to 0, or with a "
            "maximum of 100 % ECS can never replace the running beat"
        )


def validate_beat_singleton(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != SERVICE or _service_tag(args.props) != BEAT_SERVICE:
        return
    for problem in _beat_problems(args.props, args.name):
        report(problem, args.urn)


def _worker_problem(props: Mapping[str, Any], name: str) -> str | None:
    desired = props.get("desiredCount")
    count = _whole(desired)
    if count is None or count < 1:
        return (
            f"worker service '{name}' has desiredCount {_number(desired)}; set it to at least 1 "
            "(the pool's minCount) so its queues never sit without a consumer"
        )
    return None


def validate_worker_keeps_a_task(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != SERVICE:
        return
    tag = _service_tag(args.props)
    if tag is None or not tag.startswith(WORKER_SERVICE_PREFIX):
        return
    problem = _worker_problem(args.props, args.name)
    if problem is not None:
        report(problem, args.urn)


def _ec2_id(resource: PolicyResource) -> str | None:
    """An EC2 resource's id (``sg-…``, ``vpc-…``): its ``id`` output, or the end of its ARN
    (``arn:aws:ec2:…:security-group/sg-…``) should the outputs not carry the id."""
    value = resource.props.get("id") or str(resource.props.get("arn") or "").rsplit("/", 1)[-1]
    return value if isinstance(value, str) and value else None


class _Index:
    """A stack's resources, found by what other resources' props refer to them by."""

    def __init__(self, resources: Sequence[PolicyResource]) -> None:
        self.resources = list(resources)
        self._by_reference: dict[str, PolicyResource] = {}
        for resource in self.resources:
            try:
                values = [resource.props.get(key) for key in ("arn", "id", "name")]
                values.append(_ec2_id(resource))
            except UnknownValueError:
                # Not known until up (a resource the preview creates): nothing can refer to it
                # by these values yet, and a reference to it is itself unknown.
                continue
            for value in values:
                if isinstance(value, str) and value:
                    self._by_reference.setdefault(f"{resource.resource_type}|{value}", resource)

    def of_type(self, resource_type: str) -> list[PolicyResource]:
        return [r for r in self.resources if r.resource_type == resource_type]

    def find(self, resource_type: str, reference: object) -> PolicyResource | None:
        if not isinstance(reference, str):
            return None
        return self._by_reference.get(f"{resource_type}|{reference}")


def _service_role(service: PolicyResource, index: _Index) -> str:
    """``beat``/``worker``/... from what the service's task definition runs; from its tag when
    the task definition is not in the stack."""
    task_definition = index.find(TASK_DEFINITION, service.props.get("taskDefinition"))
    if task_definition is not None:
        try:
            containers = _container_definitions(task_definition.props)
        except ValueError:
            containers = []  # validate_stop_timeouts reports the unreadable definition
        roles = {container_role(_command(container)) for container in containers}
        for role in ("beat", "worker"):
            if role in roles:
                return role
        if roles:
            return "other"
    tag = _service_tag(service.props) or ""
    if tag == BEAT_SERVICE:
        return "beat"
    return "worker" if tag.startswith(WORKER_SERVICE_PREFIX) else "other"


def _scaling_resource_id(service: PolicyResource) -> str | None:
    """``service/<cluster name>/<service name>``: how Application Auto Scaling names it."""
    name, cluster = service.props.get("name"), service.props.get("cluster")
    if not isinstance(name, str) or not isinstance(cluster, str):
        return None
    return f"service/{cluster.rsplit('/', 1)[-1]}/{name}"


def validate_service_task_counts(args: StackValidationArgs, report: ReportViolation) -> None:
    """Across resources: a worker's scaling target keeps a task, nothing scales beat, and a
    service that runs beat or a worker but lacks the tag the resource policies key on is held
    to the same counts here."""
    index = _Index(args.resources)
    targets: dict[str, list[PolicyResource]] = {}
    for target in index.of_type(SCALING_TARGET):
        if target.props.get("serviceNamespace") not in (None, "ecs"):
            continue
        targets.setdefault(str(target.props.get("resourceId")), []).append(target)
    for service in index.of_type(SERVICE):
        role = _service_role(service, index)
        tag = _service_tag(service.props) or ""
        if role == "beat" and tag != BEAT_SERVICE:
            for problem in _beat_problems(service.props, service.name):
                report(problem, service.urn)
        if role == "worker" and not tag.startswith(WORKER_SERVICE_PREFIX):
            worker_problem = _worker_problem(service.props, service.name)
            if worker_problem is not None:
                report(worker_problem, service.urn)
        resource_id = _scaling_resource_id(service)
        for target in targets.get(resource_id or "", []):
            if role == "beat":
                report(
                    f"scaling target '{target.name}' scales the beat service '{service.name}'; "
                    "remove it: beat must run exactly one task",
                    target.urn,
                )
            elif role == "worker":
                minimum = target.props.get("minCapacity")
                count = _whole(minimum)
                if count is None or count < 1:
                    report(
                        f"scaling target '{target.name}' of worker service '{service.name}' has "
                        f"minCapacity {_number(minimum)}; set it to at least 1 so scale-in "
                        "never leaves the pool's queues without a consumer",
                        target.urn,
                    )


# --- the broker -----------------------------------------------------------------------------


def validate_broker(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != REPLICATION_GROUP:
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
    groups = _whole(props.get("numNodeGroups"))
    if mode not in (None, "disabled") or (groups is not None and groups > 1):
        report(
            f"{where} runs in cluster mode (clusterMode {mode!r}, numNodeGroups "
            f"{_number(props.get('numNodeGroups'))}); set clusterMode to 'disabled' with one "
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
    index = _Index(args.resources)
    for group in index.of_type(REPLICATION_GROUP):
        name = group.props.get("parameterGroupName")
        parameters = index.find(PARAMETER_GROUP, name)
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
            for item in _items(parameters.props.get("parameters"))
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


def _ingress_sources(group: PolicyResource, index: _Index) -> Iterator[_Source]:
    """Every source admitted into ``group``: inline rules, ingress rule resources and
    security group rule resources of type ingress."""
    group_id = _ec2_id(group)
    for rule in _items(group.props.get("ingress")):
        if isinstance(rule, Mapping):
            yield from _rule_sources(
                group, rule, "cidrBlocks", "ipv6CidrBlocks", "prefixListIds", "securityGroups"
            )
    for rule in index.of_type(INGRESS_RULE):
        if rule.props.get("securityGroupId") == group_id:
            yield from _rule_sources(
                rule,
                rule.props,
                "cidrIpv4",
                "cidrIpv6",
                "prefixListId",
                "referencedSecurityGroupId",
            )
    for rule in index.of_type(SECURITY_GROUP_RULE):
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
        for value in _items(rule.get(key)):
            yield _Source(owner, kind, str(value))
    if rule.get("self") is True:
        yield _Source(owner, "security-group", "self")


def validate_broker_only_from_vpc(args: StackValidationArgs, report: ReportViolation) -> None:
    """The broker's security groups admit only other security groups, or addresses inside the
    stack's VPC: nothing outside the VPC has a route to Redis."""
    index = _Index(args.resources)
    for broker in index.of_type(REPLICATION_GROUP):
        group_ids = _items(broker.props.get("securityGroupIds"))
        if not group_ids:
            report(
                f"broker replication group '{broker.name}' names no security group, so it gets "
                "the VPC's default one; give it a security group of this stack that admits "
                "only the tasks",
                broker.urn,
            )
        for group_id in group_ids:
            group = index.find(SECURITY_GROUP, group_id)
            if group is None:
                report(
                    f"broker replication group '{broker.name}' uses security group {group_id!r}, "
                    "which this stack does not define, so its rules cannot be checked; use a "
                    "security group of this stack",
                    broker.urn,
                )
                continue
            vpc = index.find(VPC, group.props.get("vpcId"))
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


# --- logs, images, IAM, the load balancer ---------------------------------------------------


def validate_log_retention(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != LOG_GROUP:
        return
    days = args.props.get("retentionInDays")
    count = _whole(days)
    if count is None or count <= 0:
        shown = "absent" if days is None else _number(days)
        report(
            f"log group '{args.name}' keeps its logs forever (retentionInDays {shown}); set "
            "retentionInDays (the stack's logRetentionDays: 30, production 365)",
            args.urn,
        )


def validate_ecr_repository(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type != ECR_REPOSITORY:
        return
    scanning = _mapping(args.props.get("imageScanningConfiguration"))
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


def _policy_documents(props: Mapping[str, Any], keys: Sequence[str]) -> Iterator[tuple[str, Any]]:
    for key in keys:
        if props.get(key) is not None:
            yield key, props.get(key)
    for inline in _items(props.get("inlinePolicies")):
        if isinstance(inline, Mapping) and inline.get("policy") is not None:
            yield f"inline policy {inline.get('name')!r}", inline.get("policy")


def _parsed_policy_documents(
    props: Mapping[str, Any], keys: Sequence[str]
) -> Iterator[tuple[str, Mapping[str, Any] | str]]:
    """Each policy document of a resource, parsed, or what is wrong with it (a string)."""
    for key, raw in _policy_documents(props, keys):
        try:
            document = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            yield key, "is not valid JSON; fix the policy document"
            continue
        if not isinstance(document, Mapping):
            yield key, "is not a policy document object"
            continue
        yield key, document


def wildcard_actions(document: Mapping[str, Any]) -> list[str]:
    """The wildcard grants of an IAM policy document: ``*``, ``service:*`` or any pattern in
    an allowed action, and ``NotAction`` in an allow (which grants everything else)."""
    found = []
    for statement in _items(document.get("Statement")):
        if not isinstance(statement, Mapping) or statement.get("Effect") != "Allow":
            # A Deny with a wildcard (e.g. sqs:* without TLS) only takes rights away.
            continue
        if statement.get("NotAction") is not None:
            found.append(f"NotAction {json.dumps(_items(statement.get('NotAction')))}")
        found += [
            f"Action {action!r}"
            for action in map(str, _items(statement.get("Action")))
            if "*" in action
        ]
    return found


def validate_iam_actions(args: ResourceValidationArgs, report: ReportViolation) -> None:
    keys = POLICY_DOCUMENTS.get(args.resource_type)
    if keys is None:
        return
    for key, document in _parsed_policy_documents(args.props, keys):
        if isinstance(document, str):
            report(f"'{args.name}': {key} {document}", args.urn)
            continue
        for grant in wildcard_actions(document):
            report(
                f"'{args.name}' ({key}) allows {grant}; name the exact actions the role needs "
                "(IAM.1, IAM.21)",
                args.urn,
            )


def star_resource_grants(document: Mapping[str, Any]) -> list[str]:
    """What an identity policy allows on ``"Resource": "*"`` beyond ``STAR_RESOURCE_ACTIONS``:
    an action with resource-level permissions, or one without them that is not held by the
    condition key it offers (a condition on the key whose values hold no wildcard)."""
    found = []
    for statement in _items(document.get("Statement")):
        if not isinstance(statement, Mapping) or statement.get("Effect") != "Allow":
            continue
        if "*" not in map(str, _items(statement.get("Resource"))):
            continue
        scoped = {
            str(key).lower()
            for operator in _mapping(statement.get("Condition")).values()
            for key, values in _mapping(operator).items()
            if _items(values) and not any("*" in str(value) for value in _items(values))
        }
        for action in map(str, _items(statement.get("Action"))):
            if action.lower() not in STAR_RESOURCE_ACTIONS:
                found.append(f"{action!r} on every resource; name the resources it needs")
                continue
            key = STAR_RESOURCE_ACTIONS[action.lower()]
            if key is not None and key not in scoped:
                found.append(f"{action!r} on every resource without a condition on {key!r}")
    return found


def validate_iam_star_resources(args: ResourceValidationArgs, report: ReportViolation) -> None:
    keys = IDENTITY_POLICY_DOCUMENTS.get(args.resource_type)
    if keys is None:
        return
    for key, document in _parsed_policy_documents(args.props, keys):
        if isinstance(document, str):
            continue  # iam-no-wildcard-actions reports it
        for grant in star_resource_grants(document):
            report(f"'{args.name}' ({key}) allows {grant} (IAM least privilege)", args.urn)


def validate_load_balancer(args: ResourceValidationArgs, report: ReportViolation) -> None:
    if args.resource_type not in LOAD_BALANCERS:
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


# --- the pack -------------------------------------------------------------------------------

POLICIES: tuple[ResourceValidationPolicy | StackValidationPolicy, ...] = (
    ResourceValidationPolicy(
        name="beat-singleton",
        description="The beat service runs exactly one task, and never two during a deploy "
        "(desiredCount 1, deploymentMaximumPercent 100, deploymentMinimumHealthyPercent 0).",
        validate=validate_beat_singleton,
    ),
    ResourceValidationPolicy(
        name="worker-keeps-a-task",
        description="Every worker service keeps at least one task (desiredCount >= 1).",
        validate=validate_worker_keeps_a_task,
    ),
    StackValidationPolicy(
        name="service-task-counts",
        description="Scaling keeps the task counts: a worker's scaling target has "
        "minCapacity >= 1 and nothing scales beat; a service that runs beat or a worker is held "
        "to its counts even without the Service tag.",
        validate=validate_service_task_counts,
    ),
    ResourceValidationPolicy(
        name="stop-timeout-within-budget",
        description="Every container's stopTimeout is within Fargate's 120 s and covers what "
        "its budget needs (from its own time-limit environment).",
        validate=validate_stop_timeouts,
    ),
    ResourceValidationPolicy(
        name="containers-hardened",
        description="Every container has a read-only root filesystem, a non-root user, no "
        "privileged mode and a log driver.",
        validate=validate_container_hardening,
    ),
    ResourceValidationPolicy(
        name="no-secrets-in-environment",
        description="No container environment variable holds a secret (they go in secrets).",
        validate=validate_no_secrets_in_environment,
    ),
    ResourceValidationPolicy(
        name="broker-hardened",
        description="The broker has TLS (required), an AUTH token, at-rest encryption, cluster "
        "mode disabled, minor upgrades and its own parameter group.",
        validate=validate_broker,
    ),
    StackValidationPolicy(
        name="broker-never-evicts",
        description="The broker's parameter group is this stack's and sets maxmemory-policy "
        "noeviction.",
        validate=validate_broker_never_evicts,
    ),
    StackValidationPolicy(
        name="broker-only-from-vpc",
        description="The broker's security groups admit only security groups or addresses "
        "inside the stack's VPC.",
        validate=validate_broker_only_from_vpc,
    ),
    ResourceValidationPolicy(
        name="log-retention-set",
        description="Every log group has a retention period.",
        validate=validate_log_retention,
    ),
    ResourceValidationPolicy(
        name="ecr-scan-and-immutable-tags",
        description="ECR repositories scan on push and have immutable tags.",
        validate=validate_ecr_repository,
    ),
    ResourceValidationPolicy(
        name="iam-no-wildcard-actions",
        description="No IAM policy document (identity, trust, resource or KMS key policy) "
        "allows a wildcard action or NotAction.",
        validate=validate_iam_actions,
    ),
    ResourceValidationPolicy(
        name="iam-star-resource-only-where-unscoped",
        description='Identity policies allow "Resource": "*" only for actions without '
        "resource-level permissions, held by the condition key the action offers "
        "(PutMetricData: cloudwatch:namespace).",
        validate=validate_iam_star_resources,
    ),
    ResourceValidationPolicy(
        name="load-balancer-drops-invalid-headers",
        description="Application load balancers drop invalid header fields and mitigate desync "
        "(defensive or strictest).",
        validate=validate_load_balancer,
    ),
)
