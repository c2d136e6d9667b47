"""Where alarms notify: an SNS topic this stack creates, with an e-mail subscription, or an existing
topic. Without either, the alarms exist and notify nobody (their state shows on the dashboard).

A created topic is encrypted with a customer managed KMS key: CloudWatch alarms publish to an
encrypted topic only if the key policy lets ``cloudwatch.amazonaws.com`` use the key, and the
AWS managed key for SNS (``alias/aws/sns``) has a policy nobody can change. Both the key and the
topic admit CloudWatch only on behalf of this account's alarms named after this stack.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.cluster import AwsContext, policy_document
from infra.config import AlertsConfig

CLOUDWATCH = "cloudwatch.amazonaws.com"
#: What the account (its IAM principals, through their own policies) may do with the key:
#: everything a key's owner needs, spelled out (no wildcard), including changing this policy.
KEY_OWNER_ACTIONS = (
    "kms:CancelKeyDeletion",
    "kms:CreateAlias",
    "kms:CreateGrant",
    "kms:Decrypt",
    "kms:DeleteAlias",
    "kms:DescribeKey",
    "kms:DisableKey",
    "kms:DisableKeyRotation",
    "kms:EnableKey",
    "kms:EnableKeyRotation",
    "kms:Encrypt",
    "kms:GenerateDataKey",
    "kms:GetKeyPolicy",
    "kms:GetKeyRotationStatus",
    "kms:ListGrants",
    "kms:ListResourceTags",
    "kms:PutKeyPolicy",
    "kms:ReEncryptFrom",
    "kms:ReEncryptTo",
    "kms:RetireGrant",
    "kms:RevokeGrant",
    "kms:ScheduleKeyDeletion",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateAlias",
    "kms:UpdateKeyDescription",
)
#: What SNS needs of the publisher's key to encrypt a message (SNS Developer Guide, "Encryption
#: at rest": GenerateDataKey and Decrypt).
PUBLISH_KEY_ACTIONS = ("kms:Decrypt", "kms:GenerateDataKey")


@dataclass(frozen=True)
class NotificationsArgs:
    """Arguments of ``Notifications``.

    - ``alerts``: e-mail or topic ARN (or neither). Required.
    - ``alarm_name_prefix``: every alarm that may publish is named ``<prefix>-…``. Required.
    - ``aws``: partition/region/account. Required.
    - ``key_deletion_window_days``: days a deleted key can still be restored (7..30). Default 30.
    """

    alerts: AlertsConfig
    alarm_name_prefix: str
    aws: AwsContext
    key_deletion_window_days: int = 30


class Notifications(pulumi.ComponentResource):
    #: Where the alarms send their state changes; None: nowhere.
    topic_arn: pulumi.Output[str] | None

    def __init__(
        self, name: str, args: NotificationsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("celery-ecs:infra:Notifications", name, None, opts)
        args = self._normalize(args)
        alerts = args.alerts
        self.topic_arn = None
        if alerts.topic_arn is not None:
            self.topic_arn = pulumi.Output.from_input(alerts.topic_arn)
        elif alerts.email is not None:
            self.topic_arn = self._topic(name, args, alerts.email)
        self.register_outputs({"topicArn": self.topic_arn})

    def _topic(self, name: str, args: NotificationsArgs, email: str) -> pulumi.Output[str]:
        child = pulumi.ResourceOptions(parent=self)
        context = args.aws
        alarms = context.arn("cloudwatch", f"alarm:{args.alarm_name_prefix}-*")
        only_our_alarms = {
            "StringEquals": {"aws:SourceAccount": context.account_id},
            "ArnLike": {"aws:SourceArn": alarms},
        }
        owner = pulumi.Output.concat(
            "arn:", context.partition, ":iam::", context.account_id, ":root"
        )
        key = aws.kms.Key(
            f"{name}-key",
            description="Alarm notifications of this stack (SNS topic encryption)",
            enable_key_rotation=True,
            deletion_window_in_days=args.key_deletion_window_days,
            policy=policy_document(
                [
                    {
                        "Sid": "KeyOwner",
                        "Effect": "Allow",
                        "Principal": {"AWS": owner},
                        "Action": list(KEY_OWNER_ACTIONS),
                        "Resource": "*",
                    },
                    {
                        "Sid": "AlarmsPublish",
                        "Effect": "Allow",
                        "Principal": {"Service": CLOUDWATCH},
                        "Action": list(PUBLISH_KEY_ACTIONS),
                        "Resource": "*",
                        "Condition": only_our_alarms,
                    },
                ]
            ),
            opts=child,
        )
        topic = aws.sns.Topic(f"{name}-topic", kms_master_key_id=key.arn, opts=child)
        statements: list[dict[str, Any]] = [
            {
                "Sid": "AlarmsPublish",
                "Effect": "Allow",
                "Principal": {"Service": CLOUDWATCH},
                "Action": "sns:Publish",
                "Resource": topic.arn,
                "Condition": only_our_alarms,
            },
            {
                "Sid": "TlsOnly",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sns:Publish",
                "Resource": topic.arn,
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            },
        ]
        aws.sns.TopicPolicy(
            f"{name}-topic", arn=topic.arn, policy=policy_document(statements), opts=child
        )
        # Pending until the address confirms it (AWS sends the confirmation e-mail).
        aws.sns.TopicSubscription(
            f"{name}-email", topic=topic.arn, protocol="email", endpoint=email, opts=child
        )
        return topic.arn

    @staticmethod
    def _normalize(args: NotificationsArgs) -> NotificationsArgs:
        if not 7 <= args.key_deletion_window_days <= 30:
            raise ValueError("key_deletion_window_days: 7..30")
        return args
