"""Settings of the demo project: no database, no sessions, no templates; a JSON API."""

import os
import secrets

# Nothing is signed that must outlive the process (no sessions, no auth, no signed cookies), so
# each process makes its own key rather than carry one in its environment. An app that signs
# things reads its key from a secret instead.
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY") or secrets.token_urlsafe(50)
DEBUG = False
# The Host names requests may carry. The load balancer's health checks never reach this check
# (demoapp.liveness answers them first).
ALLOWED_HOSTS = os.environ.get(
    "DJANGO_ALLOWED_HOSTS", ".elb.amazonaws.com,localhost,127.0.0.1"
).split(",")

INSTALLED_APPS = ["demoapp"]
MIDDLEWARE = [
    "demoapp.liveness.LivenessMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
]
ROOT_URLCONF = "proj.urls"
WSGI_APPLICATION = "proj.wsgi.application"
# No database: nothing here stores anything (the tasks' results are in Redis).
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
TIME_ZONE = "UTC"

# Celery, read by proj/celery.py (namespace CELERY). The broker's URL comes from the
# environment (CELERY_BROKER_URL, a secret of the task definitions).
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL")
CELERY_TASK_ACKS_LATE = True

# One line per request and task on stderr, which the awslogs driver collects.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "INFO"},
}
