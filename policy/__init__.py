"""The celery-ecs policy pack: ``__main__.py`` builds it, ``invariants/`` holds the policies."""
