"""gunicorn settings of the example's web container: the runtime's
(``celery_ecs.gunicorn_conf``), plus the example API's own check: ``gunicorn --config
python:app.gunicorn_conf "app.web:create_app()"`` (the ECS task definition's command).
"""

from __future__ import annotations

from celery_ecs.gunicorn_conf import *  # noqa: F403  # every gunicorn setting of the runtime
from celery_ecs.settings import ApiKeysSettings

# Read in the master: a missing source of API keys stops gunicorn before it forks (the API never
# runs open).
ApiKeysSettings.from_env()
