"""The project's Celery app, as Celery's "First steps with Django" writes it. The lines marked
``# celery-ecs`` adopt the runtime."""

import os

from celery import Celery

import celery_ecs  # celery-ecs

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

app = Celery("proj")
# Configuration from the Django settings, the CELERY_-prefixed ones.
app.config_from_object("django.conf:settings", namespace="CELERY")
celery_ecs.equip(app)  # celery-ecs
# The tasks of every installed app (their tasks.py).
app.autodiscover_tasks()
