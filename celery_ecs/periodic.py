"""A function called every few seconds on a daemon thread of the worker's main process.

Used by the worker bootsteps that talk to something slow (the ECS agent, the broker for queue
lengths, the liveness lease): on the worker's event-loop timer a slow call would hold up the
loop that also acknowledges and dispatches tasks.

Threads and ``fork`` do not mix: a child gets a copy of every lock some thread held at the fork,
and nothing in the child will ever release it. The prefork pool forks its children from this
process, at start and whenever it replaces one. The lock a real child hung on was a module's
import lock: a thread's first ``getaddrinfo`` imported the IDNA codec. What else a thread's
call can hold at an arbitrary instant is released for the child by its owner: the ``logging``
module's locks (its ``os.register_at_fork`` hook), glibc's (its own fork handlers); the clients
a thread uses are its own, never used by a child. So only imports must not happen on these
threads, and none does:

- ``encodings.idna`` is imported here, before any fork, so no name lookup ever imports it;
- every other module a call uses is imported by the main thread before the pool's first fork:
  by ``celery_ecs.runtime`` and by each step's ``create``, which builds the call's clients.
  ``tests/test_periodic.py`` runs a worker whose every thread does its real work (a sweep that
  restores, a protection PUT, a metrics round) and finds no call importing anything;
- should a call import a module all the same (a path no test took), it is logged as a
  warning naming the thread and the modules, to be imported at start instead (a finder first
  on ``sys.meta_path`` notes, per thread, each module being loaded; it finds nothing itself).

No call holds a lock a fork waits for: a fork never waits for a thread's Redis, HTTP or name
lookup (a sweep's connect, a stuck resolver), so neither does the event loop that forks, nor
the liveness it checks. (Before, a thread's first call held a gate every fork waited for, over
its network I/O.)
"""

from __future__ import annotations

# Imported for its side effect, before any fork: the codec every getaddrinfo of a str host
# uses (CPython's socket module encodes the host with "idna"), imported on first use otherwise.
import encodings.idna  # noqa: F401
import logging
import sys
import threading
from collections.abc import Callable, Sequence
from importlib.abc import MetaPathFinder
from importlib.machinery import ModuleSpec
from types import ModuleType

log = logging.getLogger(__name__)


class ImportsNoted(MetaPathFinder):
    """Notes the modules a thread loads while it watches (``watch``/``noted``).

    Python asks the finders of ``sys.meta_path`` only for a module not loaded yet, so the note
    is exactly what the thread imported; this finder finds nothing, the next ones do.
    """

    def __init__(self) -> None:
        self._local = threading.local()

    def watch(self) -> None:
        self._local.noted = []

    def noted(self) -> list[str]:
        noted: list[str] = getattr(self._local, "noted", None) or []
        self._local.noted = None
        return noted

    def find_spec(self, fullname: str, path: Sequence[str] | None,
                  target: ModuleType | None = None) -> ModuleSpec | None:  # fmt: skip
        noted: list[str] | None = getattr(self._local, "noted", None)
        if noted is not None:
            noted.append(fullname)
        return None


IMPORTS = ImportsNoted()
sys.meta_path.insert(0, IMPORTS)


class PeriodicThread:
    """Calls ``function`` at once and then every ``interval`` seconds until ``stop``.

    ``function`` is expected to handle its own failures; anything it lets escape is logged
    and the next call happens as usual, so one bug cannot silently end the loop. It must import
    nothing (see the module docstring: build its clients before the thread starts), keep its
    I/O bounded by timeouts, and never fork. ``start``/``stop`` match what
    ``celery.bootsteps.StartStopStep`` calls on its ``obj``.
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
            self._call()
            self._stopping.wait(self.interval)

    def _call(self) -> None:
        IMPORTS.watch()
        try:
            self.function()
        except Exception:
            log.exception("%s: unexpected error; the next run happens as usual", self.name)
        finally:
            imported = IMPORTS.noted()
        if imported:
            log.warning(
                "%s: its call imported %s. An import on this thread while the pool forks can "
                "leave the child holding its lock: import it before the worker starts its pool",
                self.name, ", ".join(imported),
            )  # fmt: skip
