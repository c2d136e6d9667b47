"""Every name of kombu, Celery and redis-py that the runtime relies on beyond their documented API.

The runtime (``celery_ecs.transport``, ``celery_ecs.consumer``, ``celery_ecs.results``,
``celery_ecs.liveness``, ``celery_ecs.recovery``, ``celery_ecs.runtime``, ``celery_ecs.metrics``,
``celery_ecs.revokes``) overrides, calls, reads or sets names that their libraries do not document
as API: underscored names, and public-looking ones whose semantics we depend on beyond their
documentation. Each is listed here once, with what the runtime relies on, and was read in the source
of every release in ``VERIFIED``.
``tests/test_upstream_names.py`` resolves each one on the installed release and compares its
signature with the one recorded, so an upgrade that renames, removes or re-signs one fails
there, naming it, before anything else does. A new release: read each name's source in it (its
semantics, which no test of a signature sees), then add the release to ``VERIFIED``.

This module imports nothing: it is data, read by the test and by people.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The releases every name below was read and tested in (the version matrix: ``noxfile.py``).
VERIFIED: dict[str, tuple[str, ...]] = {
    "celery": ("5.6.3", "5.7.0"),
    "kombu": ("5.6.2", "5.7.0"),
    "redis": ("6.4.0",),
}


@dataclass(frozen=True)
class UpstreamName:
    #: ``module:Qualified.name``, as ``pkgutil.resolve_name`` reads it.
    path: str
    #: How the runtime uses it: "overridden", "called", "read", "set" (or several).
    use: str
    #: The app module(s) that use it.
    where: str
    #: What the runtime relies on beyond the name existing.
    relies_on: str
    #: ``str(inspect.signature(...))`` on every verified release; None: not a callable.
    signature: str | None = None
    #: An attribute set by ``__init__`` (checked on a live object), not found on the class.
    instance: bool = False
    #: The first release of its package that has it ("": every verified release); the runtime
    #: only sets or reads it, harmlessly, before.
    since: str = ""
    #: A function that makes and returns a closure whose free variable the runtime sets:
    #: ``closure:variable``, checked in the function's code instead of a signature (whose
    #: defaults' reprs vary between processes; ``signature`` is then None).
    closure: str = ""


_REDIS = "kombu.transport.redis"
_VIRTUAL = "kombu.transport.virtual"

NAMES: tuple[UpstreamName, ...] = (
    # --- kombu's Redis channel: the polling connection's send and read -------------------------
    UpstreamName(
        f"{_REDIS}:Channel._brpop_start", "overridden", "celery_ecs.transport",
        "the event loop calls it to send the polling connection's command (FETCH instead of "
        "BRPOP here). Bypassed, on purpose: kombu 5.7's own also sets _brpop_sent_at (done "
        "here with every command sent) and prefixes the keys with global_keyprefix (refused "
        "at channel creation here)", "(self, timeout=None)",
    ),
    UpstreamName(
        f"{_REDIS}:Channel._brpop_read", "overridden", "celery_ecs.transport",
        "the event loop calls it when the polling socket is readable; it must raise Empty when "
        "nothing was delivered and reset _in_poll. Bypassed, on purpose: kombu 5.7's own also "
        "flushes the re-auth token handed over meanwhile (_flush_brpop_reauth, in a finally, "
        "whatever the reply); so does the one here, in a finally too",
        "(self, **options)",
    ),
    UpstreamName(
        f"{_REDIS}:Channel._poll_error", "overridden", "celery_ecs.transport",
        "called on a socket error event with the command type ('BRPOP'); kombu reads and drops "
        "the reply", "(self, type, **options)",
    ),
    UpstreamName(
        f"{_REDIS}:Channel._in_poll", "read, set", "celery_ecs.transport",
        "the connection a command was sent on and whose reply is unread, else None; kombu "
        "does not send another while it is set", instance=True,
    ),
    UpstreamName(
        f"{_REDIS}:Channel._queue_cycle", "called", "celery_ecs.transport",
        "its .consume(n) gives the queues in BRPOP's order, .rotate(queue) moves one last",
        instance=True,
    ),
    UpstreamName(
        f"{_REDIS}:MultiChannelPoller._chan_to_sock", "read", "celery_ecs.transport",
        "keys (channel, client, 'BRPOP') while the event loop polls the channel's connection",
        instance=True,
    ),
    UpstreamName(
        f"{_REDIS}:Channel._brpop_sent_at", "read", "celery_ecs.transport",
        "kombu 5.7 only: when the BRPOP in flight was sent, read by its health check "
        "(MultiChannelPoller.maybe_check_brpop_health) to drop a connection whose reply is "
        "overdue by brpop_timeout + health_check_interval; set with every command sent on the "
        "polling connection here, as kombu's _brpop_start does", since="5.7.0",
    ),
    # --- kombu 5.7's poller, around the command in flight on the polling connection -----------
    # Not called by the runtime, which relies on what they do with its FETCH in flight
    # (tests/test_transport.py, "kombu 5.7's polling machinery").
    UpstreamName(
        f"{_REDIS}:MultiChannelPoller.maybe_check_brpop_health", "relied on",
        "celery_ecs.transport",
        "kombu 5.7 only, run by the event loop's timer every health_check_interval and by "
        "drain_events: for a channel whose _in_poll is set, disconnects that connection when "
        "_brpop_sent_at is older than brpop_timeout + health_check_interval and its socket has "
        "nothing to read (a reply waiting unread is kept); the runtime then raises a lost "
        "connection if a FETCH was in flight (Channel._reclaim_unread)", "(self)",
        since="5.7.0",
    ),
    UpstreamName(
        f"{_REDIS}:MultiChannelPoller._update_brpop_polling", "relied on", "celery_ecs.transport",
        "kombu 5.7 only, run at each poll's start: stops polling the socket of a channel whose "
        "_in_poll is set while its QoS has no room (the reply, maybe a recorded message, stays "
        "unread, and _brpop_start is not called), and polls the same socket again once there "
        "is room, its reply then read by the channel's _brpop_read", "(self)", since="5.7.0",
    ),
    UpstreamName(
        f"{_REDIS}:MultiChannelPoller.on_readable", "relied on", "celery_ecs.transport",
        "a readable polling socket is read (the channel's _brpop_read) only while its QoS has "
        "room; kombu 5.7 pauses it otherwise if _in_poll is set, and disconnects it if not (a "
        "reply with nothing in flight): so every command in flight sets _in_poll here",
        "(self, fileno)",
    ),
    # --- kombu's Redis channel: publishing, consuming, clients ---------------------------------
    UpstreamName(
        f"{_REDIS}:Channel._flush_brpop_reauth", "called", "celery_ecs.transport",
        "kombu 5.7 only: sends a pending streaming re-auth token's AUTH on the polling "
        "connection, doing nothing while _in_poll is set; kombu's _brpop_read calls it once a "
        "reply is read (the only moment that connection is idle), so does the one here",
        "(self)", since="5.7.0",
    ),
    UpstreamName(
        f"{_REDIS}:Channel._put", "overridden", "celery_ecs.transport",
        "every publish of a message to a queue goes through it. kombu 5.7's own also applies a "
        "queue's x-expires and adds to a producer's publish batch (_publish_batch); this one "
        "does neither: the app declares no expiring queue, and a batch's messages are "
        "published one by one as they are added",
        "(self, queue, message, **kwargs)",
    ),
    UpstreamName(
        f"{_REDIS}:Channel._basic_cancel", "overridden", "celery_ecs.transport",
        "a consumer's cancel, with its tag still in _tag_to_queue when called",
        "(self, consumer_tag)",
    ),
    UpstreamName(
        f"{_REDIS}:Channel._disconnect_pools", "overridden", "celery_ecs.transport",
        "called when the channel's connection pools are dropped (a reconnection)", "(self)",
    ),
    UpstreamName(
        f"{_REDIS}:Channel._q_for_pri", "called", "celery_ecs.transport, celery_ecs.metrics",
        "the list key of a queue at a priority step", "(self, queue, pri)",
    ),
    UpstreamName(
        f"{_REDIS}:Channel._connparams", "overridden", "celery_ecs.transport",
        "the keyword arguments of the channel's redis-py ConnectionPool, connection_class "
        "(redis.Connection, redis.SSLConnection, or the Unix socket's) among them, passed on "
        "to each connection, its class read from self.connection_class or, for TLS, "
        "self.connection_class_ssl (properties here); asynchronous=True for the polling "
        "connection's, whose class kombu subclasses from those",
        "(self, asynchronous=False)",
    ),
    UpstreamName(
        f"{_REDIS}:Channel._create_client", "called", "celery_ecs.transport",
        "a synchronous redis-py client on the channel's pool", "(self, asynchronous=False)",
    ),
    UpstreamName(
        f"{_REDIS}:Channel._do_restore_message", "called", "celery_ecs.recovery",
        "puts a [payload, exchange, routing_key] back on its queue's list, marking it "
        "redelivered, with the pipeline given",
        "(self, payload, exchange, routing_key, pipe, leftmost=False)",
    ),
    UpstreamName(
        f"{_REDIS}:Channel.conn_or_acquire", "overridden", "celery_ecs.transport",
        "every synchronous command of the channel gets its client from it (a context manager)",
        "(self, client=None)",
    ),
    UpstreamName(
        f"{_REDIS}:QoS.append", "overridden", "celery_ecs.transport",
        "called with each delivered message before its callback; kombu's records it in the "
        "unacked hash and index (keys unacked_key, unacked_index_key), FETCH records it in the "
        "hash here (RECORD for what FETCH could not), the sweep stamps the index",
        "(self, message, delivery_tag)",
    ),
    UpstreamName(
        f"{_REDIS}:QoS.restore_visible", "overridden", "celery_ecs.transport",
        "kombu's visibility-timeout restore of the channel's set, under a SET NX lock; called "
        "by the poller at the event loop's start (on_poll_init) and every 10 s; a no-op here",
        "(self, start=0, num=10, interval=10)",
    ),
    UpstreamName(
        f"{_REDIS}:QoS.ack", "overridden", "celery_ecs.transport",
        "every acknowledgement of a message goes through it", "(self, delivery_tag)",
    ),
    UpstreamName(
        f"{_VIRTUAL}:Channel._tag_to_queue", "read", "celery_ecs.transport",
        "consumer tag -> queue of the channel's consumers", instance=True,
    ),
    UpstreamName(
        f"{_VIRTUAL}:Channel._get_message_priority", "called", "celery_ecs.transport",
        "the priority step of a message being published", "(self, message, reverse=False)",
    ),
    UpstreamName(
        f"{_VIRTUAL}:Channel.basic_consume", "overridden", "celery_ecs.transport",
        "no_ack passed positionally or by name (kept per queue here)",
        "(self, queue, no_ack, callback, consumer_tag, **kwargs)",
    ),
    UpstreamName(
        f"{_VIRTUAL}:Channel.basic_get", "overridden", "celery_ecs.transport",
        "the synchronous get (kombu's RPOP, then the record)",
        "(self, queue, no_ack=False, **kwargs)",
    ),
    UpstreamName(
        f"{_VIRTUAL}:Transport._deliver", "called", "celery_ecs.transport",
        "hands a decoded message of a queue to that queue's consumer callback",
        "(self, message, queue)",
    ),
    UpstreamName(
        f"{_VIRTUAL}:QoS.append", "called", "celery_ecs.transport",
        "kombu's in-memory keeping of a delivered message (_delivered)",
        "(self, message, delivery_tag)",
    ),
    UpstreamName(
        f"{_VIRTUAL}:QoS.ack", "called", "celery_ecs.transport",
        "kombu's in-memory acknowledgement (marks the tag dirty)", "(self, delivery_tag)",
    ),
    UpstreamName(
        f"{_VIRTUAL}:QoS.can_consume_max_estimate", "called", "celery_ecs.transport",
        "the prefetch count minus the messages held (not acknowledged), None without a "
        "prefetch limit: how many FETCHes may be in flight at once", "(self)",
    ),
    UpstreamName(
        f"{_VIRTUAL}:Message._raw", "read", "celery_ecs.transport, celery_ecs.recovery",
        "the message's payload as kombu stored it on its queue (what a record and a restore "
        "write back)", instance=True,
    ),
    UpstreamName(
        f"{_REDIS}:Channel.from_transport_options", "extended", "celery_ecs.transport",
        "the transport options kombu copies onto a channel as attributes (a tuple of names)",
    ),
    UpstreamName(
        f"{_VIRTUAL}:QoS._delivered", "read, set", "celery_ecs.consumer",
        "delivery tag -> message of every delivered message not yet flushed; what kombu "
        "restores on close (emptied here so that it restores nothing)", instance=True,
    ),
    UpstreamName(
        f"{_VIRTUAL}:QoS._dirty", "read, set", "celery_ecs.consumer",
        "the tags acknowledged since the last flush (still in _delivered)", instance=True,
    ),
    # --- kombu's prefetch counter (celery_ecs.consumer.HeldMessagesQoS) ------------------------
    UpstreamName(
        "kombu.common:QoS.__init__", "overridden", "celery_ecs.consumer",
        "sets self.value (a property here) and max_prefetch",
        "(self, callback, initial_value, max_prefetch=None)",
    ),
    UpstreamName(
        "kombu.common:QoS._mutex", "read", "celery_ecs.consumer",
        "the lock kombu's own increment/decrement take", instance=True,
    ),
    UpstreamName(
        "kombu.common:QoS.increment_eventually", "overridden", "celery_ecs.consumer",
        "what Celery calls for each ETA/countdown message received", "(self, n=1)",
    ),
    UpstreamName(
        "kombu.common:QoS.decrement_eventually", "overridden", "celery_ecs.consumer",
        "what Celery calls when such a message is due", "(self, n=1)",
    ),
    # --- Celery's worker ----------------------------------------------------------------------
    UpstreamName(
        "celery.worker.consumer:Consumer.on_connection_error_after_connected", "overridden",
        "celery_ecs.consumer",
        "called on a lost connection (LivenessLost included) before the consumer restarts",
        "(self, exc)",
    ),
    UpstreamName(
        "celery.worker.consumer:Consumer.start", "read", "celery_ecs.consumer",
        "retries a failed start or event loop as a lost connection for the errors in "
        "self.connection_errors (set by __init__ from the transport's; maxmemory added here), "
        "calling on_connection_error_after_connected before each restart",
        "(self)",
    ),
    UpstreamName(
        "celery.worker.consumer:Consumer._restore_prefetch_count_after_connection_restart",
        "read", "celery_ecs.consumer",
        "assigns qos.value itself (HeldMessagesQoS.value's setter takes it as wanted)",
        "(self, p, *args)",
    ),
    UpstreamName(
        "celery.worker.request:Request.cancel", "called", "celery_ecs.consumer",
        "emit_retry=False cancels a running task without writing a RETRY state",
        "(self, pool, signal=None, emit_retry=True)",
    ),
    UpstreamName(
        "celery.worker.consumer.tasks:Tasks", "named", "celery_ecs.consumer, celery_ecs.liveness",
        "the consumer bootstep that makes task_consumer and qos (required by the app's steps)",
        "(c, **kwargs)",
    ),
    UpstreamName(
        "celery.worker.components:Pool", "named", "celery_ecs.liveness, celery_ecs.protection",
        "the worker bootstep that starts the pool (required by the app's steps)",
        "(w, autoscale=None, **kwargs)",
    ),
    UpstreamName(
        "celery.concurrency:ALIASES", "read", "celery_ecs.liveness",
        "pool name (worker --pool) -> 'module:Class' of its implementation",
    ),
    UpstreamName(
        "celery.concurrency.prefork:TaskPool", "named", "celery_ecs.liveness",
        "the prefork pool: its processes are listed in .info['processes'] (what the watchdog "
        "kills); every other pool runs tasks in the worker's main process",
        "(limit=None, putlocks=True, forking_enable=True, callbacks_propagate=(), app=None, "
        "**options)",
    ),
    UpstreamName(
        "celery.worker.state:active_requests", "read", "celery_ecs.consumer, celery_ecs.liveness, "
        "celery_ecs.protection", "the set of requests running in this worker",
    ),
    UpstreamName(
        "celery.worker.state:reserved_requests", "read", "celery_ecs.protection",
        "the set of requests received and not finished (prefetched, waiting for an ETA)",
    ),
    UpstreamName(
        "celery.worker.control:revoke", "called, replaced", "celery_ecs.revokes",
        "the revoke control command: adds the ids to state.revoked (and terminates); the app "
        "registers its own under the same name with control_command (the last registration of "
        "a name wins in Panel.data, which the worker's mailbox reads at its start)",
        "(state, task_id, terminate=False, signal=None, **kwargs)",
    ),
    UpstreamName(
        "celery.worker.control:terminate", "called, replaced", "celery_ecs.revokes",
        "the terminate control command (a revoke with terminate), replaced as revoke is",
        "(state, signal, task_id, **kwargs)",
    ),
    UpstreamName(
        "celery.worker.state:revoked", "read, set", "celery_ecs.revokes",
        "the LimitedSet of revoked task ids every request checks on receipt and before it "
        "runs; .update(ids) adds them now, .expires is how long it keeps one",
    ),
    UpstreamName(
        "celery.worker.state:REVOKE_EXPIRES", "read", "celery_ecs.revokes",
        "seconds a worker keeps a revoke in memory (CELERY_WORKER_REVOKE_EXPIRES, 10800)",
    ),
    UpstreamName(
        "celery.worker.state:REVOKES_MAX", "read", "celery_ecs.revokes",
        "the most revokes a worker keeps in memory (CELERY_WORKER_REVOKES_MAX, 50000)",
    ),
    UpstreamName(
        "celery._state:_set_task_join_will_block", "called", "celery_ecs.runtime",
        "True makes result.get() inside a task refuse (publish_only)", "(blocks)",
    ),
    # --- Celery's two lines per task (celery_ecs.runtime.without_per_task_line) ---------------
    UpstreamName(
        "celery.app.task:Task.__trace__", "overridden", "celery_ecs.runtime",
        "a property in RequeueOnBrokerOutage: every tracer a worker builds for a task is set "
        "there (Consumer.update_strategies, the prefork pool's process_initializer, trace_task "
        "when unset) and read from there (fast_trace_task, trace_task)",
    ),
    UpstreamName(
        "celery.app.trace:build_tracer", "closure set", "celery_ecs.runtime",
        "returns its nested trace_task, whose free variable _does_info "
        "(logger.isEnabledFor(INFO) when built) gates the 'Task ... succeeded' line "
        "(LOG_SUCCESS) and nothing else; set False while PerTaskLines would drop that line. "
        "The module's other INFO lines (LOG_RETRY, LOG_IGNORED through info(); the ignored and "
        "expected failures' log policies through logger.log) do not read it",
        closure="trace_task:_does_info",
    ),
    UpstreamName(
        "celery.worker.strategy:default", "closure set", "celery_ecs.runtime",
        "Task.Strategy's default (Task.start_strategy instantiates it): returns its nested "
        "task_message_handler, whose free variable _does_info (logger.isEnabledFor(INFO) when "
        "made) gates the 'Task ... received' line (LOG_RECEIVED), the module's only INFO line, "
        "and nothing else; set False while PerTaskLines would drop that line",
        closure="task_message_handler:_does_info",
    ),
    UpstreamName(
        "celery.app.amqp:AMQP.as_task_v2", "overridden", "celery_ecs.runtime",
        "countdown and eta are its 5th and 6th positional parameters",
        "(self, task_id, name, args=None, kwargs=None, countdown=None, eta=None, "
        "group_id=None, group_index=None, expires=None, retries=0, chord=None, callbacks=None, "
        "errbacks=None, reply_to=None, time_limit=None, soft_time_limit=None, "
        "create_sent_event=False, root_id=None, parent_id=None, shadow=None, chain=None, "
        "now=None, timezone=None, origin=None, ignore_result=False, argsrepr=None, "
        "kwargsrepr=None, stamped_headers=None, replaced_task_nesting=0, **options)",
    ),
    # --- Celery's result backend (celery_ecs.results) ------------------------------------------
    UpstreamName(
        "celery.loaders.base:BaseLoader.override_backends", "set", "celery_ecs.results",
        "scheme -> backend class, read by celery.app.backends.by_name ahead of "
        "BACKEND_ALIASES: how the plain redis:// and rediss:// URLs get ResultBackend",
    ),
    UpstreamName(
        "celery.backends.base:BaseKeyValueStoreBackend._store_result", "overridden",
        "celery_ecs.results",
        "the hook store_result calls to write a state; Celery's own writes through "
        "_set_with_state, which this one bypasses (what Celery adds there is done here too)",
        "(self, task_id, result, state, traceback=None, request=None, **kwargs)",
    ),
    UpstreamName(
        "celery.backends.redis:RedisBackend._set_with_state", "replaced", "celery_ecs.results",
        "where Celery writes a state's key, with its expiry: celery 5.7 keeps a FAILURE for "
        "failure_expires there (ResultBackend.expiry_of decides the same); 5.6 inherits the "
        "base class's, one expiry for every state",
        "(self, key, value, state)",
    ),
    UpstreamName(
        "celery.backends.redis:RedisBackend.failure_expires", "read", "celery_ecs.results",
        "celery 5.7 only: seconds a FAILURE is kept (result_failure_expires, else expires)",
        instance=True, since="5.7.0",
    ),
    UpstreamName(
        "celery.backends.base:Backend._get_result_meta", "called, reproduced",
        "celery_ecs.results",
        "the meta of a state, called as Celery's BaseKeyValueStoreBackend._store_result calls "
        "it (its only caller for the Redis backend). Reproduced by ResultBackend.result_meta "
        "for a result that is not extended while app.now is Celery's: status, result, "
        "traceback, children (current_task_children), date_done (app.now().isoformat() for "
        "a ready state, else None), group_id and parent_id when the request has them; "
        "find_value_for_key('extended', 'result') reads result_extended. The same in 5.6.3 "
        "and 5.7.0 (their extended parts differ: Celery's own builds those)",
        "(self, result, state, traceback, request, format_date=True, encode=False)",
    ),
    UpstreamName(
        "celery.backends.redis:RedisBackend._MAX_STR_VALUE_SIZE", "read", "celery_ecs.results",
        "Redis's largest string value",
    ),
    # --- redis-py ----------------------------------------------------------------------------
    UpstreamName(
        "redis.connection:Connection._connect", "overridden", "celery_ecs.liveness",
        "opens the socket to self.host (a numeric host needs no lookup); TLS wraps it after",
        "(self)",
    ),
    UpstreamName(
        "redis.connection:AbstractConnection.can_read", "called", "celery_ecs.transport",
        "True when a reply is buffered or the socket is readable, without waiting (timeout "
        "0): the polling connection's next pipelined FETCH reply is read in the same event",
        "(self, timeout=0)",
    ),
    UpstreamName(
        "redis.connection:AbstractConnection._sock", "read", "celery_ecs.transport",
        "None once the connection is closed (can_read would then connect a new socket "
        "behind the event loop's back)", instance=True,
    ),
)
