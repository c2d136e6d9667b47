"""Test hooks for a real worker (``celery worker --include tests.stall_hooks``): stalls switched
on and off from outside by files, and a task that records where and when it runs.

Imported by the worker's main process before its pool forks, so its children have the hooks
too. Stalls, each on while its file exists in ``$STALL_DIR`` (no directory: no stall):

- ``getaddrinfo``, holding ``SECONDS THREAD``: a lookup of a name (a numeric address needs none)
  from a thread whose name starts with ``THREAD`` first sleeps ``SECONDS``, as a resolver whose
  name server does not answer;
- ``pexpire``: every ``PEXPIRE`` (only the liveness refresher sends it) blocks until the file is
  gone, as a thread stuck in a call no timeout covers.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import redis
from celery import Task

from app.celery_app import app
from app.store import client

#: Where the stall files are, from the worker's environment.
STALL_DIR = "STALL_DIR"
#: The key of a run's samples: ``runs:<key>``, each ``<hostname> <run id> <time>``.
RUNS = "runs:{key}"
#: Set when a run of ``key`` completes, to the worker's hostname.
DONE = "done:{key}"
#: Seconds between two samples of a run.
SAMPLE_INTERVAL = 0.1


def _stall_file(name: str) -> Path | None:
    directory = os.environ.get(STALL_DIR)
    return Path(directory, name) if directory else None


def _is_numeric(host: object) -> bool:
    try:
        ipaddress.ip_address(str(host))
    except ValueError:
        return False
    return True


_real_getaddrinfo = socket.getaddrinfo


def _stalling_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
    flag = _stall_file("getaddrinfo")
    if flag is not None and not _is_numeric(host):
        try:
            seconds, thread = flag.read_text().split()
        except FileNotFoundError:
            pass
        else:
            if threading.current_thread().name.startswith(thread):
                time.sleep(float(seconds))
    return _real_getaddrinfo(host, *args, **kwargs)


_real_pexpire = redis.Redis.pexpire


def _stuck_pexpire(self: redis.Redis, *args: Any, **kwargs: Any) -> Any:
    flag = _stall_file("pexpire")
    while flag is not None and flag.exists():
        time.sleep(0.05)
    return _real_pexpire(self, *args, **kwargs)


socket.getaddrinfo = _stalling_getaddrinfo
redis.Redis.pexpire = _stuck_pexpire  # type: ignore[method-assign]


@app.task(name="tests.record_run", bind=True)
def record_run(self: Task[Any, Any], key: str, seconds: float) -> None:
    """Run for ``seconds``, recording a sample every ``SAMPLE_INTERVAL`` s: which worker, which
    run, when; a run cut short (cancelled, killed) simply stops sampling."""
    store = client()
    run = uuid.uuid4().hex[:8]
    end = time.monotonic() + seconds
    while True:
        store.rpush(RUNS.format(key=key), f"{self.request.hostname} {run} {time.time()}")
        if time.monotonic() >= end:
            break
        time.sleep(SAMPLE_INTERVAL)
    store.set(DONE.format(key=key), str(self.request.hostname))
