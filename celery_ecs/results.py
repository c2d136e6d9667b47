"""The result backend: Celery's Redis backend, storing a task state in one atomic round trip.

Celery reads the task's current state and then writes the new one, skipping the write if the
state read was SUCCESS (so a second run of a redelivered message cannot overwrite a success).
That costs two round trips per state, and the check is not atomic: a run that reads just before
another run stores SUCCESS still overwrites it. Here one Lua script does both, atomically, and
for a task's first state (no state stored yet) with one command, ``SET NX GET``, besides the
``PUBLISH`` that ``AsyncResult.get()`` waiters listen to.

``result_backend`` stays a plain ``redis://`` or ``rediss://`` URL, as Celery's own tests and
other tools expect (they test ``result_backend.startswith("redis")``). The app's loader
(``ResultBackendLoader``, given to the ``Celery`` constructor, so every process that imports the
app has it) maps both schemes to ``ResultBackend``.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from celery import Celery, states
from celery.backends.redis import RedisBackend
from celery.exceptions import BackendStoreError
from celery.loaders.app import AppLoader
from kombu.utils.encoding import bytes_to_str
from redis.exceptions import NoScriptError

#: The result backend, as Celery names a class (``module:Class``).
RESULT_BACKEND_CLASS = "celery_ecs.results:ResultBackend"
#: The ``result_backend`` URL schemes it serves: those of Celery's own Redis backend.
SCHEMES = ("redis", "rediss")

#: KEYS[1]: the task's meta key. ARGV: the new meta (JSON), its expiry in seconds (0: none).
#: Stores and publishes it unless the stored state is SUCCESS; returns 1 if stored, else 0.
#: A task's first state, the usual case, costs one command besides the PUBLISH: ``SET NX GET``
#: stores it if no state is stored and otherwise returns the stored one, storing nothing
#: (NX with GET: Redis 7.0 on, redis.io "SET"); only then is the stored state read and, unless
#: SUCCESS, replaced with a plain SET. The same outcome as a GET, then a SET, in one step.
STORE_UNLESS_SUCCEEDED = """
local expiry = tonumber(ARGV[2])
local function store(...)
  if expiry > 0 then
    return redis.call('SET', KEYS[1], ARGV[1], 'EX', expiry, ...)
  end
  return redis.call('SET', KEYS[1], ARGV[1], ...)
end
local current = store('NX', 'GET')
if current then
  local ok, meta = pcall(cjson.decode, current)
  if ok and type(meta) == 'table' and meta['status'] == 'SUCCESS' then
    return 0
  end
  store()
end
redis.call('PUBLISH', KEYS[1], ARGV[1])
return 1
"""
#: Its SHA1, by which ``EVALSHA`` runs it from Redis's script cache.
STORE_UNLESS_SUCCEEDED_SHA = hashlib.sha1(STORE_UNLESS_SUCCEEDED.encode()).hexdigest()


class ResultBackend(RedisBackend):
    """What a ``redis://`` or ``rediss://`` ``result_backend`` gets in this app
    (``ResultBackendLoader``)."""

    #: Seconds a result is kept (None: forever), set by Celery's backend; celery-types omits it.
    expires: float | None
    #: The app, set by Celery's backend; celery-types omits it too.
    app: Celery

    def _store_result(
        self,
        task_id: str,
        result: Any,
        state: str,
        traceback: Any = None,
        request: Any = None,
        **kwargs: Any,
    ) -> Any:
        meta = self.result_meta(result, state, traceback, request)
        meta["task_id"] = bytes_to_str(task_id)
        value = self.encode(meta)
        if isinstance(value, str) and len(value) > self._MAX_STR_VALUE_SIZE:
            raise BackendStoreError("value too large for Redis backend", state=state,
                                    task_id=task_id)  # fmt: skip
        self.ensure(self._store, (self.get_key_for_task(task_id), value, self.expiry_of(state)))
        return result

    def result_meta(
        self, result: Any, state: str, traceback: Any, request: Any
    ) -> dict[str, Any]:
        """The meta of a state, as Celery's ``_get_result_meta`` (celery_ecs.upstream) builds it
        when its ``_store_result`` calls it: the same keys and values.

        Built here for a result that is not extended (``result_extended``, off by default) while
        ``app.now`` is Celery's own; else by Celery's. Its two slow lookups, at every state
        stored: ``conf.find_value_for_key('extended', 'result')``, read here as the key it
        resolves to (``result_extended``); and ``app.now()``, which takes the time in UTC, makes
        it aware again and converts it to ``app.timezone``: here ``datetime.now`` in that zone,
        the same instant in the same zone. 12 to 15 us a state in Celery's, 4 to 7 here
        (measured on 5.6 and 5.7)."""
        app = self.app
        if app.conf["result_extended"] or "now" in vars(app) or type(app).now is not Celery.now:
            # Private, so not in celery-types.
            return self._get_result_meta(  # type: ignore[no-any-return,attr-defined]
                result=result, state=state, traceback=traceback, request=request
            )
        meta = {
            "status": state,
            "result": result,
            "traceback": traceback,
            "children": self.current_task_children(request),
            "date_done": (
                datetime.now(app.timezone).isoformat() if state in self.READY_STATES else None
            ),
        }
        if request and getattr(request, "group", None):
            meta["group_id"] = request.group
        if request and getattr(request, "parent_id", None):
            meta["parent_id"] = request.parent_id
        return meta

    def expiry_of(self, state: str) -> float | None:
        """Seconds a result of ``state`` is kept (None: forever), as Celery's own
        ``_set_with_state`` decides (celery_ecs.upstream): celery 5.7 keeps a FAILURE for
        ``result_failure_expires`` (``failure_expires``, ``expires`` when unset); celery 5.6
        has no such setting, and keeps every state for ``expires``."""
        if state == states.FAILURE:
            return getattr(self, "failure_expires", self.expires)  # celery 5.7 on
        return self.expires

    def _store(self, key: bytes | str, value: bytes | str, expires: float | None) -> None:
        """One state's script, run through the backend's client (its pool, TLS and AUTH, its
        connections' retries; a lost connection raises, for ``ensure`` to retry).

        The client's own command, not redis-py's ``Script`` object, which costs more Python per
        call for the same ``EVALSHA`` (about 3 us of the 28 us this call takes, measured). A Redis
        that has not cached the script (restarted without its data, ``SCRIPT FLUSH``) answers
        ``NOSCRIPT`` having run nothing: ``EVAL`` then runs it from its source, and caches it."""
        args = (key, value, int(expires or 0))
        try:
            self.client.execute_command("EVALSHA", STORE_UNLESS_SUCCEEDED_SHA, 1, *args)
        except NoScriptError:
            self.client.execute_command("EVAL", STORE_UNLESS_SUCCEEDED, 1, *args)


class ResultBackendLoader(AppLoader):
    """Celery's app loader, with the result backend URL schemes mapped to ``ResultBackend``.

    Celery looks a ``result_backend`` URL's scheme up in the loader's ``override_backends``
    before its own aliases (``celery.app.backends.by_name``). Not the ``celery.result_backends``
    entry points this package could declare: those would change the backend of every app in the
    environment, equipped or not. ``celery_ecs.equip`` makes it the app's ``loader_cls``, which
    Celery keeps when it pickles the app, so every process gets it: worker and pool processes,
    beat, the web, the enqueue command and the ``celery`` commands run with ``--app``. An app
    whose loader is not Celery's default (``CELERY_LOADER``, ``Celery(loader=...)``) is refused
    by ``equip`` unless that loader derives from this one.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.override_backends = self.override_backends_of()

    @staticmethod
    def override_backends_of() -> dict[str, str]:
        """The result backend URL schemes this loader maps to ``ResultBackend``."""
        return {scheme: RESULT_BACKEND_CLASS for scheme in SCHEMES}
