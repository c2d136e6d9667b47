"""A function called every few seconds on a daemon thread of the worker's main process.

Used by the worker bootsteps that talk to something slow (the ECS agent, the broker for queue
lengths, the liveness lease): on the worker's event-loop timer a slow call would hold up the
loop that also acknowledges and dispatches tasks.

Threads and ``fork`` do not mix: a child gets a copy of every lock some thread held at the fork,
and nothing in the child will ever release it. The prefork pool forks its children from this
process, at start and whenever it replaces one. The lock a real child hung on was a module's
import lock: a thread's first ``getaddrinfo`` imports the IDNA codec. What else a thread's call
can hold at an arbitrary instant is released for the child by its owner: the ``logging``
module's locks (its ``os.register_at_fork`` hook), glibc's (its own fork handlers); the clients
a thread uses are its own, never used by a child. So only imports need excluding from a fork:

- ``encodings.idna`` is imported here, before any fork, so no resolution ever imports it;
- a thread's first call, which imports what its function needs, holds ``FORK_GATE`` (shared),
  and every ``os.fork`` of the process waits (exclusive) until no such call is in progress;
- later calls hold nothing, whatever they wait for: a fork never waits for a Redis or HTTP
  round trip (a sweep's, up to 5 s each), so neither does the event loop that forks, nor
  anything queued behind the fork.
"""

from __future__ import annotations

# Imported for its side effect, before any fork: the codec every getaddrinfo of a str host
# uses (CPython's socket module encodes the host with "idna"), imported on first use otherwise.
import encodings.idna  # noqa: F401
import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


class ForkGate:
    """Many threads may work at once; a fork waits for all of them and holds off new work.

    ``before_fork``/``after_fork_*`` are registered with ``os.register_at_fork`` for the process
    (see ``FORK_GATE``). Work in progress (a thread's first call) is bounded by its own
    timeouts, so a fork waits at most that long.
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
    and the next call happens as usual, so one bug cannot silently end the loop. The first call
    holds ``FORK_GATE`` (the imports happen then), unless ``gate_first_call`` is False (a
    function that imports nothing and must never wait for a fork); keep it bounded by
    timeouts, and never fork from a call. ``start``/``stop`` match what
    ``celery.bootsteps.StartStopStep`` calls on its ``obj``.
    """

    def __init__(
        self,
        name: str,
        interval: float,
        function: Callable[[], object],
        *,
        join_timeout: float = 10.0,
        gate_first_call: bool = True,
    ) -> None:
        self.name = name
        self.interval = interval
        self.function = function
        self.join_timeout = join_timeout
        self.gate_first_call = gate_first_call
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
        if self.gate_first_call and not self._stopping.is_set():
            with FORK_GATE.working():
                self._call()
            self._stopping.wait(self.interval)
        while not self._stopping.is_set():
            self._call()
            self._stopping.wait(self.interval)

    def _call(self) -> None:
        try:
            self.function()
        except Exception:
            log.exception("%s: unexpected error; the next run happens as usual", self.name)
