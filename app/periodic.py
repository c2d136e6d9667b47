"""A function called every few seconds on a daemon thread of the worker's main process.

Used by the worker bootsteps that talk to something slow (the ECS agent, the broker for queue
lengths): on the worker's event-loop timer a slow call would hold up the loop that also
acknowledges and dispatches tasks.

Threads and ``fork`` do not mix: a child gets a copy of every lock some thread held at the fork
(a module's import lock, a logging handler's lock, the resolver's), and nothing in the child will
ever release it. The prefork pool forks its children from this process, at start and whenever it
replaces one. So every call made on these threads holds ``FORK_GATE`` (shared), and every
``os.fork`` of the process waits (exclusive) until no call is in progress; a thread between
calls only waits on an ``Event`` and holds nothing a child could need.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


class ForkGate:
    """Many threads may work at once; a fork waits for all of them and holds off new work.

    ``before_fork``/``after_fork_*`` are registered with ``os.register_at_fork`` for the process
    (see ``FORK_GATE``). Calls in progress are bounded by their own timeouts, so a fork waits at
    most that long.
    """

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self._condition = threading.Condition()
        self._working = 0
        self._forking = False

    @contextmanager
    def working(self) -> Iterator[None]:
        with self._condition:
            while self._forking:
                self._condition.wait()
            self._working += 1
        try:
            yield
        finally:
            with self._condition:
                self._working -= 1
                self._condition.notify_all()

    def before_fork(self) -> None:
        # The condition's lock stays held through the fork, so nothing starts working until
        # ``after_fork_in_parent`` runs in the parent.
        self._condition.acquire()
        self._forking = True
        while self._working:
            self._condition.wait()

    def after_fork_in_parent(self) -> None:
        self._forking = False
        self._condition.notify_all()
        self._condition.release()

    def after_fork_in_child(self) -> None:
        # The child has only the forking thread: start again with a gate nobody holds.
        self._reset()


FORK_GATE = ForkGate()
os.register_at_fork(
    before=FORK_GATE.before_fork,
    after_in_parent=FORK_GATE.after_fork_in_parent,
    after_in_child=FORK_GATE.after_fork_in_child,
)


class PeriodicThread:
    """Calls ``function`` at once and then every ``interval`` seconds until ``stop``.

    ``function`` is expected to handle its own failures; anything it lets escape is logged
    and the next call happens as usual, so one bug cannot silently end the loop. Each call
    holds ``FORK_GATE``: keep calls bounded by timeouts, and never fork from one.
    ``start``/``stop`` match what ``celery.bootsteps.StartStopStep`` calls on its ``obj``.
    """

    def __init__(
        self,
        name: str,
        interval: float,
        function: Callable[[], object],
        *,
        join_timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.interval = interval
        self.function = function
        self.join_timeout = join_timeout
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=self.join_timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.is_set():
            with FORK_GATE.working():
                try:
                    self.function()
                except Exception:
                    log.exception("%s: unexpected error; the next run happens as usual", self.name)
            self._stopping.wait(self.interval)
