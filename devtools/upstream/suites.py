"""Which upstream suites run against the runtime, on which releases, and what they exclude.

A suite is a directory of tests of a released package, taken from that release's source
distribution on PyPI (the same registry the project installs from: ``pip download
--no-binary``), unpacked, and run with one of this package's pytest plugins, which plugs the
project's runtime in (``noxfile.py``, session ``upstream``).

``EXCLUDED`` is the one list of the tests that do not run, each with its reason; the plugins
deselect them and fail when one matches no collected test, and the docs' table is written
from it (``python -m devtools.docs``) and checked against it (``tests/test_upstream_suites.py``).
Every other test of the selected paths passes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest
from packaging.version import Version

from devtools.docblocks import DOCS, GeneratedBlock


@dataclass(frozen=True)
class Suite:
    #: Short name, as in the docs and the exclusion list.
    name: str
    #: The package whose release's tests these are (its version is the installed one).
    package: str
    #: Paths of the release's source tree that the run needs (unpacked, nothing else).
    unpack: tuple[str, ...]
    #: The test paths run, relative to the source tree.
    tests: tuple[str, ...]
    #: The pytest plugins that plug the runtime in (a conftest at the tree's root loads them).
    plugins: tuple[str, ...]
    #: Seconds after which one test is failed as hung (pytest-timeout).
    timeout: int
    #: Test paths of ``tests`` that only releases from the one given have.
    since: Mapping[str, str] = field(default_factory=dict)

    def paths(self, release: str) -> list[str]:
        """The test paths run on ``release``."""
        return [path for path in self.tests
                if Version(release) >= Version(self.since.get(path, "0"))]  # fmt: skip


CELERY_INTEGRATION = Suite(
    name="celery-integration",
    package="celery",
    unpack=("t", "pyproject.toml"),
    tests=(
        "t/integration/test_canvas.py",
        "t/integration/test_tasks.py",
        "t/integration/test_inspect.py",
        # The Redis result backend's own tests: failure and chord expiries, pub/sub.
        "t/integration/test_redis_backend.py",
    ),
    # Celery's fixtures (celery_app, celery_session_worker), which its suite uses.
    plugins=("celery.contrib.pytest", "devtools.upstream.celery_integration"),
    timeout=300,
    since={"t/integration/test_redis_backend.py": "5.7.0"},
)

KOMBU_UNIT = Suite(
    name="kombu-redis-unit",
    package="kombu",
    unpack=("t", "setup.cfg"),
    # A fake redis client; the module replaces kombu's poller for the whole process, so it runs
    # apart from the integration tests, as kombu's own CI runs them.
    tests=("t/unit/transport/test_redis.py",),
    plugins=("devtools.upstream.kombu_redis",),
    timeout=120,
)

KOMBU_INTEGRATION = Suite(
    name="kombu-redis-integration",
    package="kombu",
    unpack=("t", "setup.cfg"),
    tests=("t/integration/test_redis.py",),  # a real redis-server
    plugins=("devtools.upstream.kombu_redis",),
    timeout=120,
)

SUITES = (CELERY_INTEGRATION, KOMBU_UNIT, KOMBU_INTEGRATION)


@dataclass(frozen=True)
class Exclusion:
    suite: Suite
    #: The test's node id, relative to the release's source tree; a class or module excludes
    #: all of its tests.
    test: str
    #: Why it does not run against the runtime.
    reason: str
    #: The releases of the suite's package it applies to (those whose suite has the test).
    releases: tuple[str, ...]
    #: Only the runs with this parameter id (``test_x[<id>]``, or one of the ids of
    #: ``test_x[<id>-<id>]``), of every test under ``test``; "": all of them.
    parameter: str = ""

    def matches(self, item: pytest.Item) -> bool:
        nodeid = item.nodeid
        if not (nodeid == self.test or nodeid.startswith((f"{self.test}::", f"{self.test}["))):
            return False
        callspec = getattr(item, "callspec", None)
        # A test with several parameters has an id of each one's, joined with "-".
        return not self.parameter or (
            callspec is not None and self.parameter in callspec.id.split("-")
        )

    @property
    def label(self) -> str:
        return f"{self.test}[{self.parameter}]" if self.parameter else self.test


#: Reasons shared by several exclusions.
EARLY_ACK = (
    "asserts `acknowledged: True` for a running task: it assumes early acknowledgement; the "
    "runtime acknowledges late, on purpose (a crash re-queues the task; the docs' "
    "'What is guaranteed')"
)
NO_LUA = (
    "runs the channel's publish, take or poll path on kombu's fake redis client, which runs no "
    "Lua (its scripts are plain functions); the runtime publishes (`PUBLISH`), takes (`FETCH`) "
    "and polls with scripts. The same paths run against redis-server in kombu's integration "
    "tests here and in `tests/test_transport.py`"
)
NO_LUA_POLLING = (
    "sends the polling connection's command on kombu's fake redis client, whose scripts are "
    "plain functions (no Lua, no `EVALSHA`): the runtime sends `FETCH`, a script, where kombu "
    "sends `BRPOP`, so these fail at the send. What they check of kombu 5.7's polling "
    "machinery runs against redis-server with a `FETCH` in flight in `tests/test_transport.py`: "
    "the pause while the consumer has no room, the reply read once room returns "
    "(`test_a_fetch_reply_waiting_while_the_consumer_has_no_room_is_kept_and_read_once`); the "
    "health check's send time and drop (`test_kombu_drops_a_polling_connection_that_stopped_"
    "answering`), then a lost connection (`test_a_fetch_whose_reply_is_never_read_is_a_lost_"
    "connection`); `_brpop_start`'s keys and `global_keyprefix` are `FETCH`'s here (a prefix "
    "is refused)"
)
NO_KEYPREFIX = (
    "`global_keyprefix`: the runtime refuses it at channel creation (`celery_ecs.transport`: its "
    "scripts name kombu's keys unprefixed); kombu's tests run each test with and without one"
)

PUBLISH_BATCH = (
    "kombu 5.7's producer publish batches: the runtime's `_put` publishes each message as it "
    "is added (one script: message and wake token), not in a pipeline flushed later (the docs' "
    "'Supported versions', 'What 5.7 changed')"
)

NO_RESTORE_VISIBLE = (
    "kombu's `QoS.restore_visible` is a no-op in the runtime: its lock (`SET NX`) is refused "
    "at maxmemory and ended the worker at the event loop's start; the sweep "
    "(`celery_ecs.recovery`) puts back what outlived the visibility timeout, from every set of "
    "the pool, in "
    "transactions that take no lock (`test_liveness`, `test_transport`)"
)

NO_INDEX_AT_DELIVERY = (
    "asserts that a message just taken has an entry in kombu's index of delivery times "
    "(`unacked_index`): the runtime takes and acknowledges without the index (two Redis "
    "commands a task fewer), and the sweep stamps what it finds held (`celery_ecs.recovery`, "
    "`test_liveness`). The record these tests go on to check is kombu's hash, which the runtime "
    "writes as kombu does, and which every restore reads"
)

_CELERY = ("5.6.3", "5.7.0")
_TASKS = "t/integration/test_tasks.py"
_KOMBU = ("5.6.2", "5.7.0")
_UNIT = "t/unit/transport/test_redis.py"
_INTEGRATION = "t/integration/test_redis.py"

EXCLUDED: tuple[Exclusion, ...] = (
    Exclusion(CELERY_INTEGRATION, "t/integration/test_inspect.py::test_Inspect::test_active",
              EARLY_ACK, _CELERY),
    Exclusion(CELERY_INTEGRATION, "t/integration/test_inspect.py::test_Inspect::test_query_task",
              EARLY_ACK, _CELERY),
    Exclusion(CELERY_INTEGRATION,
              f"{_TASKS}::test_tasks::test_revoked_by_headers_complex_canvas",
              "times out on 2 cores with stock Celery too (its own 20 s limit, "
              "`@pytest.mark.timeout(20)`: 19.9 s on stock 5.7.0, then the timeout, measured "
              "here): a limit tuned for faster machines, not a fault of the runtime", _CELERY),
    *(Exclusion(CELERY_INTEGRATION, f"{_TASKS}::test_trace_log_arguments::{test}",
                "racy on 2 cores: reads the pool process's 'Task succeeded' line 10 ms after the "
                "result, while the embedded worker relays it from the pool through a queue and a "
                "thread; fails with stock Celery too here (5.6.3: both, after 5 reruns each, "
                "measured)", _CELERY)
      for test in ("test_task_success", "test_task_failed")),
    Exclusion(CELERY_INTEGRATION,
              f"{_TASKS}::test_task_replacement::test_replaced_task_nesting_level_0",
              "racy: sets the flag its `task_received` receiver raises after publishing the task "
              "(`res = ....delay()`, then `assertion_result = False`), so a worker that receives "
              "the task first loses it; seen once on the runtime, whose idle worker is woken at "
              "the publish", _CELERY),
    *(Exclusion(CELERY_INTEGRATION, f"t/integration/test_redis_backend.py::{test}",
                "upstream's test isolation: asserts that no `celery-task-meta-*` channel is "
                "subscribed on the server (`PUBSUB CHANNELS`: every client's), and after "
                "test_canvas.py the suite's prefork pool process still holds those of the "
                "group results it made (chords, tasks replaced by groups). Stock Celery 5.7.0, "
                "no runtime, measured here: test_canvas.py then these two, both fail with "
                "1,611 channels, all but 2 on the pool process's connection (1,607 with the "
                "runtime); both pass in their own file. A `GroupResult` subscribes to each "
                "member in any process (`ResultSet.__init__`: vine's `barrier` calls "
                "`AsyncResult.then`, so `add_pending_result` calls `consume_from`), a pool "
                "process too, where `task_join_will_block` stops only `on_task_call`'s; and "
                "Celery 5.7 keeps every waiter strongly (`AsyncBackendMixin._add_pending_result`"
                ", 'Issue #4925'; celery/backends/asynchronous.py), so where nothing drains "
                "they stay for the process's life (5.6.3 dropped them with the results; "
                "celery#4824, #5320). The runtime's backend keeps exactly what Celery's keeps, "
                "on 5.6 and 5.7 (`tests/test_results.py::test_a_chord_applied_by_a_publish_"
                "only_process_keeps_what_celerys_own_keeps_subscribed`)", ("5.7.0",))
      for test in ("test_pubsub_subscribe_churn_while_draining",
                   "test_pubsub_reentrant_cancel_from_finalizer")),
    Exclusion(KOMBU_INTEGRATION, _INTEGRATION, NO_KEYPREFIX, _KOMBU,
              parameter="connection1"),
    Exclusion(KOMBU_UNIT, f"{_UNIT}::test_Channel::test_delivery_tag_is_uuid",
              NO_LUA, _KOMBU),
    Exclusion(KOMBU_UNIT, f"{_UNIT}::test_Redis::test_publish__get_redispyv3",
              NO_LUA, _KOMBU),
    Exclusion(KOMBU_UNIT, f"{_UNIT}::test_Redis::test_publish__get_redispyv2",
              NO_LUA, _KOMBU),
    Exclusion(KOMBU_UNIT, f"{_UNIT}::test_Redis::test_publish__consume",
              NO_LUA, _KOMBU),
    Exclusion(KOMBU_UNIT, f"{_UNIT}::test_Redis::test_purge",
              NO_LUA, _KOMBU),
    Exclusion(KOMBU_UNIT, f"{_UNIT}::test_Channel::test_qos_restore_visible",
              NO_RESTORE_VISIBLE, _KOMBU),
    # kombu 5.7's new tests.
    *(Exclusion(KOMBU_UNIT, f"{_UNIT}::test_Channel::test_{test}", NO_RESTORE_VISIBLE,
                ("5.7.0",))
      for test in ("qos_restore_visible_interval_throttles",
                   "qos_restore_visible_zero_interval_no_zerodivision",
                   "qos_restore_visible_uses_zrange_byscore_rev",
                   "qos_restore_visible_without_limit", "global_keyprefix_restore_visible")),
    Exclusion(KOMBU_UNIT, f"{_UNIT}::test_PausedBRPOP", NO_LUA_POLLING, ("5.7.0",)),
    *(Exclusion(KOMBU_UNIT, f"{_UNIT}::test_Channel::{test}", NO_LUA_POLLING, ("5.7.0",))
      for test in ("test_brpop_start_records_send_time", "test_brpop_start_sends_keys_and_timeout",
                   "test_brpop_start_prefixes_keys", "test_brpop_health_drop_resets_in_poll")),
    *(Exclusion(KOMBU_UNIT, f"{_UNIT}::test_Channel::test_{test}", PUBLISH_BATCH, ("5.7.0",))
      for test in ("publish_batch_falls_back_when_redis_may_retry_timeouts",
                   "publish_batch_uses_non_transactional_pipeline",
                   "publish_batch_preserves_direct_routing_priority_and_order",
                   "publish_batch_preserves_topic_routing",
                   "publish_batch_auto_flushes_at_max_size",
                   "publish_batch_flushes_before_multi_command_publication",
                   "publish_batch_includes_queue_expiry_commands",
                   "publish_batch_flush_failure_is_not_retried_and_cleans_up",
                   "publish_batch_auto_flush_failure_ignores_publish_retry",
                   "publish_batch_command_queueing_failure_cleans_up",
                   "publish_batch_cannot_continue_after_command_queueing_failure",
                   "sentinel_inherits_publish_batch_support")),
    Exclusion(KOMBU_INTEGRATION, f"{_INTEGRATION}::test_RedisRestoreVisible",
              NO_RESTORE_VISIBLE, ("5.7.0",)),
    Exclusion(KOMBU_INTEGRATION,
              f"{_INTEGRATION}::test_RedisRestoreBindingLookupFailure::"
              "test_failed_restore_visible_keeps_message_unacked", NO_RESTORE_VISIBLE, ("5.7.0",)),
    *(Exclusion(KOMBU_INTEGRATION, f"{_INTEGRATION}::{test}", NO_INDEX_AT_DELIVERY, ("5.7.0",))
      for test in ("test_RedisRestoreBindingLookupFailure::test_failed_requeue_keeps_message_"
                   "unacked",
                   "test_RedisRestoreAtShutdown::test_unacked_message_requeued_on_connection_"
                   "close")),
    Exclusion(KOMBU_INTEGRATION, f"{_INTEGRATION}::test_RedisQueueExpiration",
              "queue expiry (`x-expires`, kombu 5.7): the runtime's `_put` and `FETCH` do not "
              "apply it, and the app declares no expiring queue (the docs' 'Supported versions', "
              "'What 5.7 changed')",
              ("5.7.0",)),
    Exclusion(KOMBU_INTEGRATION,
              f"{_INTEGRATION}::test_event_loop_consumes_after_connection_reconnect",
              "replaces the polling connection under a command in flight and expects consuming to "
              "go on; the runtime raises a lost connection when that command is a `FETCH`, whose "
              "unread reply may be a message recorded in the worker's set, so that the worker's "
              "consumer puts that set back (`celery_ecs.transport`, "
              "`test_a_fetch_whose_reply_is_never_read_is_a_lost_connection`)",
              ("5.7.0",), parameter="BRPOP"),
    Exclusion(KOMBU_UNIT, f"{_UNIT}::test_Channel::test_put_priority",
              "asserts that `_put` calls the client's `LPUSH`; the runtime's `_put` runs `LPUSH` "
              "inside its `PUBLISH` script, with the wake token (`celery_ecs.transport`); the "
              "priority lists it pushes to are those of kombu's `test_RedisPriority`, which "
              "passes here", _KOMBU),
)  # fmt: skip


def excluded(suite: Suite, release: str) -> list[Exclusion]:
    return [item for item in EXCLUDED if item.suite == suite and release in item.releases]


def installed_release(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def deselect(suite: Suite, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Deselect the suite's exclusions for the installed release (a plugin's
    ``pytest_collection_modifyitems``, run first); in a run of the suite's whole test paths, an
    exclusion matching no collected test is an error."""
    exclusions = excluded(suite, installed_release(suite.package))
    matched: set[str] = set()
    kept: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        hits = [exclusion.label for exclusion in exclusions if exclusion.matches(item)]
        matched.update(hits)
        (dropped if hits else kept).append(item)
    stale = [exclusion.label for exclusion in exclusions if exclusion.label not in matched]
    # Only a run of the whole suite collects every test (the plugins' hooks run before -k/-m
    # deselect anything): a run of a few of its tests does not make the list stale.
    if stale and set(config.args) == set(suite.paths(installed_release(suite.package))):
        raise pytest.UsageError(f"{suite.name}: excluded tests not found (stale list?): {stale}")
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


def unpack_release(suite: Suite, release: str, directory: Path) -> Path:
    """The suite's paths of ``release``'s source distribution, from PyPI, in ``directory``;
    the source tree's root. ``pip download`` keeps pip's cache and index settings."""
    tree = directory / f"{suite.package}-{release}"
    if tree.is_dir():
        return tree
    downloads = directory / "sdist"
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
         "--dest", str(downloads), f"{suite.package}=={release}"],
        check=True,
    )  # fmt: skip
    (archive,) = downloads.glob(f"{suite.package}-{release}.tar.gz")
    staging = directory / f".{tree.name}"
    shutil.rmtree(staging, ignore_errors=True)
    with tarfile.open(archive) as tar:
        prefix = f"{suite.package}-{release}/"
        wanted = [member for member in tar.getmembers() if any(
            member.name == f"{prefix}{path}" or member.name.startswith(f"{prefix}{path}/")
            for path in suite.unpack)]  # fmt: skip
        if not wanted:
            raise RuntimeError(f"{archive.name} has none of {suite.unpack}")
        unsafe = [member.name for member in wanted if not (member.isfile() or member.isdir())
                  or ".." in PurePosixPath(member.name).parts]  # fmt: skip
        if unsafe:
            raise RuntimeError(f"{archive.name}: refusing links, devices or '..' in {unsafe}")
        # The "data" filter (PEP 706) where this Python has it: 3.11.4 on. Debian 12's python3
        # is 3.11.2 (the virtualenv scripts/test-unit asks for), and the check above keeps
        # every member inside the staging directory there too.
        if hasattr(tarfile, "data_filter"):
            tar.extractall(staging, members=wanted, filter="data")
        else:
            tar.extractall(staging, members=wanted)
    for path in suite.paths(release):
        if not (staging / prefix / path).exists():
            raise RuntimeError(f"{archive.name} has no {path}")
    (staging / prefix).rename(tree)
    shutil.rmtree(staging)
    return tree


#: The docs' exclusion table (``python -m devtools.docs`` writes it,
#: ``tests/test_upstream_suites.py`` checks it).
EXCLUSIONS_BLOCK = GeneratedBlock(
    page=DOCS / "reference" / "upstream-exclusions.md",
    begin="<!-- upstream exclusions: devtools/upstream/suites.py (EXCLUDED) -->",
    end="<!-- end of upstream exclusions -->",
)


def exclusion_table() -> str:
    """The exclusion list as the docs show it: one row per suite, reason and releases."""
    groups: dict[tuple[str, str, tuple[str, ...]], list[str]] = {}
    for item in EXCLUDED:
        groups.setdefault((item.suite.name, item.reason, item.releases), []).append(item.label)
    rows = ["| Suite | Tests | Releases | Why they do not run |", "| --- | --- | --- | --- |"]
    rows += [
        f"| {suite} | {', '.join(f'`{test}`' for test in tests)} | {', '.join(releases)} "
        f"| {reason} |"
        for (suite, reason, releases), tests in groups.items()
    ]
    return "\n".join(rows) + "\n"
