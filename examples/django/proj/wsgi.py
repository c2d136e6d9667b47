"""The WSGI entry point gunicorn serves (``proj.wsgi:application``). The lines marked
``# celery-ecs`` tell the runtime this process only publishes: gunicorn imports this module in
each worker, after the fork, and Celery's result backend then does not subscribe to a result
channel per task sent."""

import os

from django.core.wsgi import get_wsgi_application

from celery_ecs import publish_only  # celery-ecs

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")

application = get_wsgi_application()
publish_only()  # celery-ecs
