"""Tools for developing the project, each in a folder of its own.

- ``render``: the Pulumi program run under mocks, as plain data (what every tool, test and bench
  reads the program through);
- ``plan/``: the offline plan (``make plan``): validation against AWS's rules, cost, diagram, the
  policy pack run offline, the pull request comment;
- ``twin/``: the ECS twin, the rendered task definitions run as ECS and Fargate run them;
- ``local_stack/``: the dev stack on the twin with one command (``make run``);
- ``upstream/``: Celery's and kombu's own test suites on the project's runtime;
- ``docs``, ``docblocks``: the documentation's generated parts (``make docs``);
- ``stack_snapshot``: what the repository's stacks render, recorded, so that a refactor is seen
  to replace nothing (``tests/test_infra_adoption.py``);
- ``import_contracts``: an import-linter contract type (``.importlinter``).

The processes and servers the tests and benches start are in ``testkit``, not here.
"""
