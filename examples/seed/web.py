"""The producer: a minimal Flask app that enqueues ``send_email`` and answers a liveness check.

gunicorn serves it (``web:app``) with the runtime's settings: ``gunicorn --config
python:celery_ecs.gunicorn_conf web:app``. The two lines marked ``# celery-ecs`` tell the
runtime this process only publishes (gunicorn imports this module in each worker, after the
fork): Celery's result backend then does not subscribe to a result channel per task sent.
"""

from celery_app import send_email
from flask import Flask, request

from celery_ecs import publish_only  # celery-ecs

publish_only()  # celery-ecs
app = Flask(__name__)


@app.get("/healthz")
def healthz() -> dict[str, str]:
    # Liveness only: no broker call, so a broker outage does not get the web tasks replaced.
    return {"status": "ok"}


@app.post("/emails")
def enqueue_email() -> tuple[dict[str, str], int]:
    # Demo endpoint without authentication: your app puts its own in front (see README.md).
    body = request.get_json(silent=True) or {}
    user_id = body.get("user_id")
    if not isinstance(user_id, int):
        return {"error": "expected a JSON body {\"user_id\": <integer>}"}, 400
    result = send_email.delay(user_id)
    return {"task_id": result.id}, 202
