"""The invariants celery-ecs promises, as Pulumi policies (``pulumi-policy``).

One module a section, so the table of policies reads on its own:

- ``policies``: ``POLICIES``, the table (name, description, check), which ``policy/__main__.py``
  puts into one mandatory pack;
- ``services`` (one beat, workers that keep a task, the task counts scaling may set),
  ``stop_timeouts``, ``container_hardening`` (and no secrets in the environment),
  ``broker_hardening``, ``iam``, ``controls`` (log retention, ECR scanning, the load balancer):
  the checks, which the tests call directly (constructing a ``PolicyPack`` starts a gRPC server
  and blocks);
- ``restated`` (the program's values), ``aws_types`` (resource type names), ``readers`` (small
  readers of props, and a stack's resources indexed by reference).

This ``__init__`` imports nothing, and the modules import one another relatively: Pulumi runs
``policy/__main__.py`` with ``policy/`` on ``sys.path``, where this package is ``invariants``;
the tests and ``devtools`` import it as ``policy.invariants``.

What a policy sees is what the engine hands an analyzer: a resource's inputs (resource
policies, run before the resource is created or changed) or every resource's outputs (stack
policies, run once the whole stack is known), camelCase, numbers as floats, secrets unwrapped,
wrapped so that reading a value not known yet during a preview raises ``UnknownValueError``; the
pack then reports that the policy cannot run during the preview and it runs at ``pulumi up``.
The checks read the values that are known at preview first, so what they find is reported
before an unknown value ends the function.

The rules restate the program's (``infra/budget.py``, ``celery_ecs/settings.py``, the tags of
``infra/cluster.py``) instead of importing them: the pack runs in its own environment, and a
policy computed by the program's own functions would only check the program against itself.
``tests/test_policy_pack.py`` holds the restated values and rules against the program's.
"""
