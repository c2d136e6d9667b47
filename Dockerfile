# One image for every role of the app: the runtime package (celery_ecs, built from this
# repository's pyproject.toml) and the example app (app/). The default command is the web server;
# the ECS task definitions (infra/containers.py) override it for the others:
#   worker   celery --app app.celery_app worker --queues ... --concurrency ...
#   beat     celery --app app.celery_app beat
#   enqueue  celery-ecs-enqueue --app app.celery_app --entry ... --slot ...
#   health   celery-ecs-health worker|beat|web (the task definitions' health checks)
# No init process in the image: ECS runs one (initProcessEnabled), and two would be one too many.
# No HEALTHCHECK: ECS ignores it; the task definitions hold the health checks.
# The container runs with a read-only root filesystem: the app writes only to /tmp (a volume,
# declared below) and gunicorn to /dev/shm.

FROM python:3.11.14-slim-bookworm AS build

# The application's virtualenv, without pip or setuptools of its own: the base image's pip
# installs into it. Every dependency is a wheel, so no compiler is needed.
RUN python -m venv --without-pip /opt/venv
COPY app/requirements.txt app/constraints.txt /tmp/
RUN pip --python /opt/venv/bin/python install --no-cache-dir --disable-pip-version-check \
        --requirement /tmp/requirements.txt --constraint /tmp/constraints.txt
# The runtime, as a package: pip builds its wheel (flit_core, fetched for the build only) and
# installs it with its console scripts. The dependencies it declares must be met by the pins
# above (the constraints hold every one): pip refuses the install otherwise.
COPY pyproject.toml /src/
COPY celery_ecs/ /src/celery_ecs/
RUN pip --python /opt/venv/bin/python install --no-cache-dir --disable-pip-version-check \
        --constraint /tmp/constraints.txt /src


FROM python:3.11.14-slim-bookworm

# Nothing at run time installs packages: drop the installers from the system Python too (fewer
# packages for the image scan to flag). A fixed, numeric, unprivileged user (ECS.20).
RUN python -m pip uninstall --yes --no-cache-dir pip setuptools wheel \
    && groupadd --system --gid 10001 app \
    && useradd --system --no-log-init --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin app

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# Only the example app's package (the runtime is in the venv): the Pulumi program, tests and dev
# tools stay out.
COPY app/ /app/app/

# The task definitions mount a task volume at /tmp. On Fargate an empty volume is created owned by
# root with mode 0755, unless the image declares a VOLUME at exactly that path: then it starts as
# a copy of the image's /tmp (1777), and the app's user can write its heartbeats and temp files.
VOLUME ["/tmp"]

USER 10001:10001
EXPOSE 8000
CMD ["gunicorn", "--config", "python:app.gunicorn_conf", "app.web:create_app()"]
