"""Names the app and the infrastructure must spell alike: metric names and dimensions, and the
web's default liveness path.

Like ``celery_ecs.settings`` (environment variable names) and ``celery_ecs.schedule`` (the
schedule's types and JSON codec), this module imports nothing outside the standard library: the
Pulumi program reads the runtime's names only through these three modules, in a virtualenv that
holds no Celery, kombu or redis (``requirements.txt``). The import contract in ``.importlinter``
enforces it.
"""

from __future__ import annotations

#: CloudWatch metric names the worker and beat publish (``celery_ecs.metrics``), and that alarms,
#: scaling policies and the dashboard read (``infra/``).
BACKLOG_METRIC = "Backlog"
OLDEST_AGE_METRIC = "OldestMessageAge"
WORKERS_METRIC = "Workers"
BEAT_HEARTBEAT_METRIC = "BeatHeartbeat"
#: Their dimensions.
QUEUE_DIMENSION = "Queue"
POOL_DIMENSION = "Pool"
SERVICE_DIMENSION = "Service"

#: What the web answers when alive: no broker involved, so a broker outage never fails it. The
#: load balancer's and the container's health checks ask it.
LIVENESS_PATH = "/livez"
