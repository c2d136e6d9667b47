"""The local stack (``python -m devtools.local_stack``) run the way a terminal runs it.

The stack runs the dev stack's services on the ECS twin. It is started in a process group of its
own, like a shell's foreground job, with its embedded Redis, and Ctrl-C is what a terminal
sends: SIGINT to the whole group. Its output goes to a file, or, as in ``make run | tee
run.log``, to a pipe that a thread of the test copies to that file, as ``tee`` would, until the
test closes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from celery.states import READY_STATES

from infra.config import load
from tests.support import ROOT, wait_for

# The tier (tests/tiers.py): the stack runs on the ECS twin, as root.
pytestmark = pytest.mark.twin

BANNER = re.compile(
    r"^web listening on (http://\S+)  \(broker (redis://\S+),.*\nAPI key: (\S+)  ", re.MULTILINE
)
#: Generous: other test sessions may load this machine.
START_TIMEOUT = 90.0
EXIT_TIMEOUT = 180.0
#: A normal run prints about 60 lines; the bug this guards against printed about 1,000.
MAX_OUTPUT_LINES = 150


@dataclass
class Stack:
    process: subprocess.Popen[bytes]
    output_path: Path
    web_url: str
    broker_url: str
    #: The API key the banner prints (the one the program generated).
    api_key: str
    #: The process groups of what it started (Redis, web, worker, beat), once it is up.
    groups: list[int]
    #: With a piped output: the copy that ``close_output`` ends, as when ``tee`` exits.
    tee: Tee | None = None

    def output(self) -> str:
        return self.output_path.read_text(errors="replace")

    def close_output(self) -> None:
        assert self.tee is not None, "started with a file as output"
        self.tee.close()

    def ctrl_c(self) -> None:
        """What a terminal does on Ctrl-C: SIGINT to every process of the foreground group."""
        os.killpg(self.process.pid, signal.SIGINT)

    def wait(self) -> int:
        return self.process.wait(timeout=EXIT_TIMEOUT)

    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.broker_url, decode_responses=True)


class Tee:
    """Copies a pipe to a file, as ``tee`` does, until ``close``: then the pipe's read end is
    closed, and the writer's next write fails (EPIPE)."""

    def __init__(self, pipe: int, path: Path) -> None:
        self.pipe = pipe
        self.path = path
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._copy, daemon=True)
        self._thread.start()

    def _copy(self) -> None:
        with self.path.open("ab") as output:
            while not self._closing.is_set():
                readable, _, _ = select.select([self.pipe], [], [], 0.1)
                if readable:
                    data = os.read(self.pipe, 65536)
                    if not data:
                        break
                    output.write(data)
                    output.flush()
        os.close(self.pipe)

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()


def clean_environment() -> dict[str, str]:
    """This environment without the app's variables: the stack must set what it needs."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("CELERY_", "WEB_"))}


def child_groups(pid: int) -> list[int]:
    """Process groups of ``pid``'s children: each is the leader of a session of its own.

    The children of every thread of ``pid``: the twin starts tasks from threads of its own, and
    ``/proc/<pid>/task/<tid>/children`` lists only the children that thread started (Linux's
    proc(5), "/proc/pid/task/tid/children").
    """
    groups = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            groups.extend(int(child) for child in children.read_text().split())
    return groups


def running_in(groups: list[int]) -> list[str]:
    """Processes still running (zombies aside) in any of ``groups``, or in the sessions they
    lead (a task's init, tini, runs its command in a process group of its own), as ``/proc``
    stat lines."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            line = stat.read_text()
            state, _ppid, group, session = line.rsplit(")", 1)[1].split()[:4]
            if (int(group) in groups or int(session) in groups) and state != "Z":
                found.append(line)
    return found


@pytest.fixture
def start_stack(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """Start ``python -m devtools.local_stack`` as a terminal's foreground job; kill leftovers."""
    started: list[subprocess.Popen[bytes]] = []
    groups: list[int] = []  # the stacks' and those of what they started

    def start(*args: str, piped: bool = False) -> Stack:
        """``piped``: stdout to a pipe a ``Tee`` copies to the output file, stderr to the file
        (the terminal's) directly."""
        output_path = tmp_path / f"stack-{len(started)}.out"
        read_end, write_end = os.pipe() if piped else (-1, -1)
        with output_path.open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", "devtools.local_stack", "--port", "0", *args],
                # TMPDIR: the stack keeps its logs in a temporary directory; this test owns it.
                cwd=ROOT, env={**clean_environment(), "TMPDIR": str(tmp_path)},
                stdout=write_end if piped else output,
                stderr=output if piped else subprocess.STDOUT,
                process_group=0,
            )
        tee = None
        if piped:
            os.close(write_end)
            tee = Tee(read_end, output_path)
        started.append(process)
        groups.append(process.pid)

        def banner() -> re.Match[str] | None:
            if process.poll() is not None:
                raise AssertionError(f"the stack exited with {process.returncode}:\n"
                                     + output_path.read_text(errors="replace"))
            return BANNER.search(output_path.read_text(errors="replace"))

        match = wait_for(banner, START_TIMEOUT, interval=0.1, what="the stack's banner")
        stack = Stack(process, output_path, match.group(1), match.group(2), match.group(3),
                      child_groups(process.pid), tee)
        groups.extend(stack.groups)
        return stack

    yield start
    # After a failure, a stack or what it started may still run, each in a session of its own.
    for process in started:
        groups.extend(child_groups(process.pid))
    for group in set(groups):
        if running_in([group]):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
    for process in started:
        process.wait()


def post_task(stack: Stack, name: str, kwargs: dict[str, object]) -> str:
    request = urllib.request.Request(
        f"{stack.web_url}/tasks/{name}", data=json.dumps(kwargs).encode(), method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {stack.api_key}"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 202
        return str(json.load(response)["id"])


def results_published(pubsub: redis.client.PubSub) -> list[tuple[str, str]]:
    """(task id, state) of every result Celery published, read after Redis has stopped.

    The result backend publishes each result it stores; what Redis sent before it stopped is
    still in this connection's socket buffer, then the connection ends.
    """
    published = []
    while True:
        try:
            message = pubsub.get_message(timeout=1)
        except redis.ConnectionError:
            return published
        if message is None:
            return published
        if message["type"] == "pmessage":
            result = json.loads(message["data"])
            published.append((result["task_id"], result["status"]))


def stop_lines(output: str) -> list[str]:
    return re.findall(r"^stopping .*", output, re.MULTILINE)


def assert_short_and_clean(output: str) -> None:
    assert "Traceback" not in output, output
    assert len(output.splitlines()) <= MAX_OUTPUT_LINES, output


def test_ctrl_c_lets_the_running_task_finish_then_stops_redis_last(
    start_stack: Callable[..., Stack],
) -> None:
    stack = start_stack()
    store = stack.redis()
    results = store.pubsub()
    results.psubscribe("celery-task-meta-*")
    key = "ctrl-c-1"
    # The banner's key is the one the web accepts; without it, nothing is queued.
    anonymous = urllib.request.Request(f"{stack.web_url}/tasks/noop", data=b"{}", method="POST",
                                       headers={"Content-Type": "application/json"})  # fmt: skip
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(anonymous, timeout=30)
    assert refused.value.code == 401
    task_id = post_task(stack, "apply_credit", {
        "idempotency_key": key, "account": "alice", "amount": 5, "work_seconds": 5,
    })
    wait_for(lambda: store.get(f"attempts:{key}") == "1", 60, what="the task to start")
    assert not store.exists(f"idem:{key}")  # running, its effect not applied yet

    stack.ctrl_c()

    assert stack.wait() == 0, stack.output()
    output = stack.output()
    assert stop_lines(output) == [
        "stopping web...", "stopping beat...", "stopping worker-default...",
        "stopping worker-long...", "stopping redis... done",
    ], output
    # Its last word says everything has stopped.
    assert output.splitlines()[-1] == "stopping redis... done", output
    success = re.search(
        rf"Task app\.tasks\.apply_credit\[{task_id}\] succeeded in .*'applied': True", output
    )
    assert success is not None, output
    assert success.start() < output.index("stopping redis")
    assert results_published(results) == [(task_id, "STARTED"), (task_id, "SUCCESS")]
    assert_short_and_clean(output)
    assert running_in(stack.groups) == []


def test_ctrl_c_with_the_output_closed_still_stops_everything(
    start_stack: Callable[..., Stack],
) -> None:
    """``make run | tee run.log``, then Ctrl-C: the terminal's SIGINT ends ``tee`` too, so the
    stack's next line goes to a pipe nobody reads. It must still stop every task and Redis."""
    stack = start_stack(piped=True)
    # The groups of Redis, the twin's helpers and every task: none may be left.
    assert len(stack.groups) >= 5, stack.groups

    stack.close_output()
    stack.ctrl_c()

    assert stack.wait() == 0, stack.output()
    output = stack.output()
    assert "stopping" not in output, "written after the output closed"
    assert "Traceback" not in output and "BrokenPipeError" not in output, output
    assert running_in(stack.groups) == []


def test_a_second_ctrl_c_cancels_the_running_task_and_requeues_it(
    start_stack: Callable[..., Stack], redis_url: str, redis_client: redis.Redis,
) -> None:
    # An existing Redis (--broker-url) outlives the stack: the requeued message can be seen.
    stack = start_stack("--broker-url", redis_url)
    key = "ctrl-c-2"
    task_id = post_task(stack, "apply_credit", {
        "idempotency_key": key, "account": "alice", "amount": 5, "work_seconds": 60,
    })
    wait_for(lambda: redis_client.get(f"attempts:{key}") == "1", 60, what="the task to start")

    stack.ctrl_c()
    wait_for(lambda: "stopping worker-default..." in stack.output(), 60,
             what="the worker's warm shutdown")  # fmt: skip
    stack.ctrl_c()

    assert stack.wait() == 0, stack.output()
    output = stack.output()
    assert stop_lines(output) == [
        "stopping web...", "stopping beat...", "stopping worker-default...",
        "stopping worker-default at once...", "stopping worker-long...",
        "stopping worker-long at once...",
    ], output
    assert " succeeded in " not in output
    assert not redis_client.exists(f"idem:{key}")  # cancelled before its effect
    (message,) = [json.loads(raw) for raw in redis_client.lrange("default", 0, -1)]
    assert message["headers"]["id"] == task_id  # back on its queue for the next worker
    assert_short_and_clean(output)
    assert running_in(stack.groups) == []


def test_the_printed_command_runs_a_schedule_entry_on_the_stack(
    start_stack: Callable[..., Stack],
) -> None:
    stack = start_stack()
    (command,) = [line.strip() for line in stack.output().splitlines()
                  if " -m celery_ecs.enqueue " in line]

    # As a user pastes it into a shell in the repository, without the app's variables.
    result = subprocess.run(command, shell=True, cwd=ROOT, env=clean_environment(),
                            capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    outcome = json.loads(result.stdout)
    assert (outcome["status"], outcome["task"]) == ("enqueued", load({}).schedule[0].task)
    store = stack.redis()

    def finished() -> str | None:
        stored = store.get(f"celery-task-meta-{outcome['id']}")
        state = json.loads(stored)["status"] if stored else None
        return state if state in READY_STATES else None

    assert wait_for(finished, 60, what="the entry's task to run") == "SUCCESS"
    stack.ctrl_c()
    assert stack.wait() == 0, stack.output()
