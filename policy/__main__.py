"""The celery-ecs policy pack: ``pulumi preview --policy-pack policy`` (see the README).

Constructing the pack starts the analyzer's gRPC server and blocks until the engine is done,
so nothing imports this file: the policies live in ``invariants/``, where the tests call them.
Pulumi runs this file with the pack's directory on ``sys.path``.
"""

from invariants.policies import POLICIES
from pulumi_policy import EnforcementLevel, PolicyPack

PolicyPack(
    name="celery-ecs-invariants",
    # Every invariant blocks: a preview reports all violations, an up stops at the first.
    enforcement_level=EnforcementLevel.MANDATORY,
    policies=list(POLICIES),
)
