"""The EventBridge alternative to beat (``scheduler: eventbridge``): one scheduled rule per
periodic entry, each starting a one-off Fargate task that enqueues the entry's task once.

A failed ``RunTask`` (no capacity, throttling) is retried for as long as the slot is still the
latest one (until the entry's next fire, at most a day); what still fails lands in an encrypted
SQS dead-letter queue, with EventBridge's error code and message as attributes, instead of
vanishing. The enqueue command claims each slot, so a retried or twice-delivered slot enqueues
once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from celery_ecs.schedule import PeriodicEntry
from infra.cluster import Cluster, policy_document, role_with_policy
from infra.containers import ENQUEUE_DEFAULT_COMMAND, enqueue_command
from infra.fargate_service import ContainerInputs, TaskPlacement, fargate_task_definition
from infra.schedule_expr import ScheduleError, shortest_gap, to_eventbridge_expression

CONTAINER_NAME = "enqueue"
#: Stop timeout of the enqueue task: it publishes one message and exits.
ENQUEUE_STOP_TIMEOUT = 10
#: Input transformer placeholder for the event's time (the schedule slot, ISO 8601 UTC).
SLOT_PLACEHOLDER = "<time>"
#: Entry names become rule names (with the component's name and an 8-character suffix; rule
#: names are at most 64 characters).
RULE_NAME = re.compile(r"^[A-Za-z0-9._-]{1,40}$")
#: EventBridge's bounds of a target's retry policy (PutTargets RetryPolicy).
MIN_EVENT_AGE, MAX_EVENT_AGE, MAX_RETRY_ATTEMPTS = 60, 86_400, 185
#: Characters RunTask accepts for a task's overrides, JSON formatting included (ECS API
#: reference, RunTask ``overrides``); the input transformer's template holds them, and the slot
#: that replaces the placeholder is an ISO 8601 time (20 characters).
MAX_OVERRIDES_CHARACTERS = 8192
SLOT_LENGTH = len("2026-01-01T00:00:00Z")
#: Days SQS keeps what lands in the dead-letter queue: its maximum, to leave time to look.
DEAD_LETTER_RETENTION_SECONDS = 14 * 24 * 3600


@dataclass(frozen=True)
class ScheduledEntry:
    """A periodic entry with its EventBridge schedule expression (``rate(...)``/``cron(...)``)
    and how long a failed invocation of one slot is retried (seconds: until the next slot)."""

    entry: PeriodicEntry
    expression: str
    retry_window: int


def plan_schedule(entries: Sequence[PeriodicEntry]) -> tuple[ScheduledEntry, ...]:
    """Translate every entry, or raise ``ScheduleError`` naming the first that cannot run on
    EventBridge (an expression it has no form for, or a name no rule can carry)."""
    planned = []
    for entry in entries:
        if not RULE_NAME.match(entry.name):
            raise ScheduleError(
                f"{entry.name!r}: a rule name takes 1-40 letters, digits, '.', '_' or '-'"
            )
        try:
            expression = to_eventbridge_expression(entry.schedule)
        except ScheduleError as error:
            raise ScheduleError(f"{entry.name!r}: {error}") from None
        arguments = json.dumps([entry.args, entry.kwargs])
        if SLOT_PLACEHOLDER in arguments:
            # The input transformer would put the event's time in its place.
            raise ScheduleError(f"{entry.name!r}: its args or kwargs contain {SLOT_PLACEHOLDER}")
        overrides = len(run_task_input_template(entry)) - len(SLOT_PLACEHOLDER) + SLOT_LENGTH
        if overrides > MAX_OVERRIDES_CHARACTERS:
            raise ScheduleError(
                f"{entry.name!r}: its enqueue command makes RunTask overrides of {overrides} "
                f"characters, above ECS's {MAX_OVERRIDES_CHARACTERS} (pass smaller arguments)"
            )
        retry_window = min(MAX_EVENT_AGE, max(MIN_EVENT_AGE, shortest_gap(entry.schedule)))
        planned.append(ScheduledEntry(entry, expression, retry_window))
    return tuple(planned)


def run_task_input_template(entry: PeriodicEntry) -> str:
    """The RunTask overrides EventBridge sends: the enqueue command for this entry and slot.

    EventBridge passes a target's input to ECS as the task overrides; the transformer fills in
    the event's ``time`` where the placeholder stands inside a JSON string.
    """
    return json.dumps(
        {
            "containerOverrides": [
                {
                    "name": CONTAINER_NAME,
                    "command": list(enqueue_command(entry, SLOT_PLACEHOLDER)),
                }
            ]
        }
    )


@dataclass(frozen=True)
class ScheduleArgs:
    """Arguments of ``Schedule``.

    - ``entries``: the periodic entries with their translated expressions, from
      ``plan_schedule`` (which checks expressions and names). Required, non-empty, unique.
    - ``cluster``: the ECS cluster with a log group for ``service``. Required.
    - ``service``: the enqueue task's name in the cluster's log groups. Default "enqueue".
    - ``family``: task definition family of the enqueue task. Required.
    - ``image``: image reference. Required.
    - ``environment``: container environment (no secrets). Required.
    - ``placement``: subnets, the background security group, public IP or not. Required.
    - ``cpu``/``memory``: enqueue task size, Fargate units/MiB. Default 256/512.
    """

    entries: Sequence[ScheduledEntry]
    cluster: Cluster
    family: str
    image: pulumi.Input[str]
    environment: Mapping[str, str]
    placement: TaskPlacement
    service: str = "enqueue"
    cpu: int = 256
    memory: int = 512


class Schedule(pulumi.ComponentResource):
    rules: dict[str, aws.cloudwatch.EventRule]
    dead_letter_queue: aws.sqs.Queue

    def __init__(
        self, name: str, args: ScheduleArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("celery-ecs:infra:Schedule", name, None, opts)
        args = self._normalize(args)
        child = pulumi.ResourceOptions(parent=self)
        cluster = args.cluster
        task_role = cluster.task_role(f"{name}-task", [], parent=self)
        task_definition = fargate_task_definition(
            f"{name}-task",
            cluster=cluster,
            service=args.service,
            family=args.family,
            cpu=args.cpu,
            memory=args.memory,
            container=ContainerInputs(
                name=CONTAINER_NAME,
                image=args.image,
                command=ENQUEUE_DEFAULT_COMMAND,
                environment=args.environment,
                stop_timeout=ENQUEUE_STOP_TIMEOUT,
            ),
            task_role=task_role,
            parent=self,
        )
        events_role = role_with_policy(
            f"{name}-events",
            service="events.amazonaws.com",
            statements=[
                {
                    "Effect": "Allow",
                    "Action": ["ecs:RunTask"],
                    # Any revision of this family, and only in this cluster.
                    "Resource": [cluster.context.arn("ecs", f"task-definition/{args.family}:*")],
                    "Condition": {"ArnEquals": {"ecs:cluster": cluster.cluster.arn}},
                },
                {
                    "Effect": "Allow",
                    "Action": ["iam:PassRole"],
                    "Resource": [task_role.arn, cluster.execution_role.arn],
                    "Condition": {
                        "StringEquals": {"iam:PassedToService": "ecs-tasks.amazonaws.com"}
                    },
                },
            ],
            context=cluster.context,
            parent=self,
        )
        self.dead_letter_queue = aws.sqs.Queue(
            f"{name}-dead-letters",
            message_retention_seconds=DEAD_LETTER_RETENTION_SECONDS,
            sqs_managed_sse_enabled=True,  # encrypted at rest (SQS.1)
            opts=child,
        )
        self.rules = {}
        for scheduled in args.entries:
            entry = scheduled.entry
            rule = aws.cloudwatch.EventRule(
                f"{name}-{entry.name}",
                description=f"{entry.name}: enqueue {entry.task}",
                schedule_expression=scheduled.expression,
                state="ENABLED",
                opts=child,
            )
            aws.cloudwatch.EventTarget(
                f"{name}-{entry.name}",
                rule=rule.name,
                arn=cluster.cluster.arn,
                role_arn=events_role.arn,
                ecs_target={
                    "task_definition_arn": task_definition.arn,
                    "task_count": 1,
                    "launch_type": "FARGATE",
                    "platform_version": "LATEST",
                    "network_configuration": {
                        "subnets": list(args.placement.subnet_ids),
                        "security_groups": [args.placement.security_group_id],
                        "assign_public_ip": args.placement.assign_public_ip,
                    },
                },
                input_transformer={
                    "input_paths": {"time": "$.time"},
                    "input_template": run_task_input_template(entry),
                },
                retry_policy={
                    "maximum_event_age_in_seconds": scheduled.retry_window,
                    "maximum_retry_attempts": MAX_RETRY_ATTEMPTS,
                },
                dead_letter_config={"arn": self.dead_letter_queue.arn},
                opts=child,
            )
            self.rules[entry.name] = rule
        aws.sqs.QueuePolicy(
            f"{name}-dead-letters",
            queue_url=self.dead_letter_queue.id,
            policy=policy_document(self._dead_letter_statements()),
            opts=child,
        )
        self.register_outputs(
            {
                "ruleNames": {key: rule.name for key, rule in self.rules.items()},
                "deadLetterQueueUrl": self.dead_letter_queue.url,
            }
        )

    def _dead_letter_statements(self) -> list[dict[str, object]]:
        """EventBridge may send this stack's rules' failures, and only those; nothing may reach
        the queue without TLS."""
        return [
            {
                "Sid": "ScheduleFailures",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": self.dead_letter_queue.arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": [r.arn for r in self.rules.values()]}},
            },
            {
                "Sid": "TlsOnly",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:*",
                "Resource": self.dead_letter_queue.arn,
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
        ]

    @staticmethod
    def _normalize(args: ScheduleArgs) -> ScheduleArgs:
        names = [scheduled.entry.name for scheduled in args.entries]
        if not names or len(set(names)) != len(names):
            raise ValueError(f"entries: need unique entry names, got {names}")
        return args
