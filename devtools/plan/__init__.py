"""The offline plan: what a stack config deploys, whether AWS accepts it, what it costs.

    python -m devtools.plan --stack dev        (make plan; make plan STACK=prod)

- ``report``: the plan of a stack and its text, the command line, the docs' diagram and cost;
  ``summaries``: the table of what the text says under each resource, by type;
- ``aws_rules``: every request checked against AWS's published API models (``awsmodel``), built
  from the table of each type's API calls (``api_calls``, written in ``apimap``'s language), and
  every IAM policy linted;
- ``cost`` (with ``prices/``): the monthly estimate; ``diagram``: the drawing;
- ``broker_nodes`` (AWS's figures per node type) and ``broker_ceiling`` (the tasks a second and
  the backlog the stack's broker node carries, from the bench's figures);
- ``policy_check``: the policy pack (``policy/``) run over the rendered program, offline;
- ``comment``: the pull request comment (standard library only: the workflow runs it without
  the project's requirements, so this ``__init__`` imports nothing).
"""
