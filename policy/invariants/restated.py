"""The values and names the program promises, restated for the pack (see ``invariants``)."""

from __future__ import annotations

#: Fargate's ceiling for ``stopTimeout`` (infra/budget.py FARGATE_STOP_TIMEOUT_CAP).
FARGATE_STOP_TIMEOUT_CAP = 120
#: Seconds a process needs after its last piece of work to cancel, restore and exit
#: (infra/budget.py EXIT_MARGIN); also the least any container gets (beat, enqueue).
EXIT_MARGIN = 10
#: ECS's stopTimeout on Fargate when a container sets none.
FARGATE_DEFAULT_STOP_TIMEOUT = 30
#: celery_ecs/settings.py: the variables that carry a container's budget, and the web's default.
TIME_LIMIT = "CELERY_TASK_TIME_LIMIT"
SOFT_SHUTDOWN_TIMEOUT = "CELERY_SOFT_SHUTDOWN_TIMEOUT"
TASK_PROTECTION = "CELERY_TASK_PROTECTION"
REMAP_SIGTERM = "REMAP_SIGTERM"
WEB_REQUEST_TIMEOUT = "WEB_REQUEST_TIMEOUT"
DEFAULT_WEB_REQUEST_TIMEOUT = 30
#: infra/cluster.py tags every service and task definition ``Service: <name>``: ``beat``,
#: ``web``, ``enqueue``, ``worker-<pool>``.
SERVICE_TAG = "Service"
BEAT_SERVICE = "beat"
WORKER_SERVICE_PREFIX = "worker-"
