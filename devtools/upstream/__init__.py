"""Celery's and kombu's own test suites, run against the project's Redis runtime.

``suites`` says which suites of which release run and which of their tests are excluded, and
why; ``celery_integration`` and ``kombu_redis`` are the pytest plugins that plug the runtime
into each suite. ``noxfile.py`` (the ``upstream`` sessions) puts them together.
"""
