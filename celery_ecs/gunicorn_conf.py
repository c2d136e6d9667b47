"""gunicorn settings for the web container of any WSGI app: ``gunicorn --config
python:celery_ecs.gunicorn_conf <module>:<app>`` (e.g. ``proj.wsgi:application`` for Django; the
example's ECS command is ``app.web:create_app()``, through ``app.gunicorn_conf``, which adds its
own check).

Read by the gunicorn master, so it imports only ``celery_ecs.settings`` (no Celery, no Flask).
Values come from the ``WEB_*`` variables and ``APP_LOG_LEVEL`` (see ``celery_ecs.settings``). It
binds ``0.0.0.0:WEB_PORT``, with 2 gthread workers of ``WEB_THREADS`` threads, request timeout
and graceful shutdown ``WEB_REQUEST_TIMEOUT`` seconds, and leaves the passing liveness checks
(``/livez``) out of the access log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from celery_ecs.settings import Settings, WebSettings

# Read (and checked) in the master: a bad configuration stops gunicorn before it forks.
_settings = Settings.from_env()
_web = WebSettings.from_env()

bind = [f"0.0.0.0:{_web.port}"]

# Threads, not processes, carry the concurrency: a request spends its time waiting on Redis
# (the Celery client is synchronous). Two processes so that one crashing or being restarted
# does not leave the container without a listener; ECS scales by adding tasks. gunicorn's gthread
# worker, whose own error responses (before the app) use a JSON error shape.
worker_class = "celery_ecs.gunicorn_worker.JsonErrorWorker"
workers = 2
threads = _web.threads
# The app is created in each worker after the fork, so no broker connection is shared.
preload_app = False

# A worker whose main loop is silent this long is killed and replaced.
timeout = _web.request_timeout
# SIGTERM: stop accepting, let requests in flight finish for up to the request timeout, exit.
graceful_timeout = _web.request_timeout
# Longer than the load balancer's idle timeout (infra/budget.py: max(60, request timeout + 5)),
# so the balancer, not the server, closes idle connections: it never sends a request on a
# connection the server has just closed (which would be a 502).
keepalive = max(65, _web.request_timeout + 10)

# The worker heartbeat file must be writable under a read-only root filesystem; /dev/shm is a
# tmpfs in every container (and off the task's disk). Elsewhere (macOS) the system temp dir.
worker_tmp_dir = "/dev/shm" if Path("/dev/shm").is_dir() else None

# Only the load balancer can reach the container (its security group admits the ALB alone), and
# the ALB's addresses change, so X-Forwarded-* is trusted from any peer.
forwarded_allow_ips = "*"

# Requests are small: a short path and the ALB's headers. Anything larger is refused with 400
# before the app sees it. Bodies are limited by the app (WEB_MAX_BODY_BYTES -> 413).
limit_request_line = 2048
limit_request_fields = 50
limit_request_field_size = 4096

accesslog = "-"  # stdout, collected by the awslogs driver
logger_class = "celery_ecs.gunicorn_worker.HealthChecksUnlogged"
errorlog = "-"  # stderr
loglevel = _settings.log_level.lower()
access_log_format = (
    '%(h)s "%({x-forwarded-for}i)s" "%(r)s" %(s)s %(b)s %(M)sms "%(a)s" %({x-amzn-trace-id}i)s'
)
proc_name = "celery-ecs-web"


def post_fork(server: Any, worker: Any) -> None:
    """Give the app's own log records (its loggers, Flask's...) the format every process
    uses."""
    from celery_ecs.runtime import configure_logging  # imported in the worker, after the fork

    configure_logging(_settings)
