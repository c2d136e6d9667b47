"""A function called every few seconds on a daemon thread of the worker's main process.

Used by the worker bootsteps that talk to something slow (the ECS agent, the broker for queue
lengths): on the worker's event-loop timer a slow call would hold up the loop that also
acknowledges and dispatches tasks.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class PeriodicThread:
    """Calls ``function`` at once and then every ``interval`` seconds until ``stop``.

    ``function`` is expected to handle its own failures; anything it lets escape is logged
    and the next call happens as usual, so one bug cannot silently end the loop.
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
            try:
                self.function()
            except Exception:
                log.exception("%s: unexpected error; the next run happens as usual", self.name)
            self._stopping.wait(self.interval)
