"""Task networks on the twin's bridge: allocated across processes, reused at once."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

from devtools.twin import awsvpc
from devtools.twin.awsvpc import NetworkError, TaskNetwork, allocate

# The tier (tests/tiers.py): network namespaces and the twin's bridge, as root.
pytestmark = pytest.mark.twin


def test_an_address_is_reusable_as_soon_as_its_task_releases_it() -> None:
    """The kernel destroys a deleted namespace, and its veth pair, later: the next task given
    the same address (the lowest free one, usually the one just released) must not trip over
    the old pair, whether it is still there or vanishing."""
    for _ in range(20):
        first = allocate()
        first.release()
        again = allocate()
        try:
            inside = subprocess.run(
                ["ip", "-n", again.name, "-brief", "address", "show", "eth0"],
                capture_output=True, text=True, check=True,
            ).stdout
            assert f"{again.address}/16" in inside
        finally:
            again.release()


def test_an_old_veth_that_vanishes_while_it_is_deleted_is_no_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    links = {"twv7"}
    calls: list[tuple[str, ...]] = []

    def ip(*args: str) -> None:
        calls.append(args)
        if args[:2] == ("link", "del"):
            links.discard(args[2])  # the kernel's cleanup got there first
            raise NetworkError(f'ip link del {args[2]}: Cannot find device "{args[2]}"')

    monkeypatch.setattr(awsvpc, "_ip", ip)
    monkeypatch.setattr(awsvpc, "_link_exists", lambda name: name in links)
    awsvpc._configure(TaskNetwork(7))
    assert calls[0] == ("link", "del", "twv7")
    assert calls[1][:3] == ("link", "add", "twv7")


def test_an_old_veth_that_cannot_be_deleted_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def ip(*args: str) -> None:
        raise NetworkError(f"ip {' '.join(args)}: Operation not permitted")

    monkeypatch.setattr(awsvpc, "_ip", ip)
    monkeypatch.setattr(awsvpc, "_link_exists", lambda name: True)
    with pytest.raises(NetworkError, match="not permitted"):
        awsvpc._configure(TaskNetwork(7))


def test_the_bridge_keeps_its_address_as_tasks_come_and_go() -> None:
    """A bridge takes the lowest address of its ports unless given one: every task's start or
    stop would then change what the running tasks must send to to reach the host."""
    awsvpc.ensure_bridge()
    address = Path(f"/sys/class/net/{awsvpc.BRIDGE}/address")
    assert address.read_text().strip() == awsvpc.BRIDGE_MAC
    lowest = "00:00:00:00:00:01"  # below any address a veth is given
    first = allocate()
    try:
        subprocess.run(["ip", "link", "set", first._host_veth, "address", lowest], check=True)
        assert address.read_text().strip() == awsvpc.BRIDGE_MAC
        second = allocate()
        second.release()
        assert address.read_text().strip() == awsvpc.BRIDGE_MAC
    finally:
        first.release()
    assert address.read_text().strip() == awsvpc.BRIDGE_MAC


def test_a_reused_address_is_reached_at_once_from_the_host() -> None:
    """The host's ARP cache keeps a task's MAC for up to ~45 s after the task is gone: the next
    task given that address must answer there at once (a random MAC would not, until then)."""
    for _ in range(2):
        task = allocate()
        try:
            inside = subprocess.run(
                ["ip", "-n", task.name, "-brief", "link", "show", "eth0"],
                capture_output=True, text=True, check=True,
            ).stdout
            assert task.mac in inside
            # A listener in the task's namespace, reached from the host over the bridge.
            server = subprocess.Popen(
                ["ip", "netns", "exec", task.name, sys.executable, "-c",
                 "import socket; s = socket.create_server(('0.0.0.0', 9999)); "
                 "print('ready', flush=True); c, _ = s.accept(); c.sendall(b'hello')"],
                stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            try:
                assert server.stdout is not None and server.stdout.readline() == "ready\n"
                with socket.create_connection((task.address, 9999), timeout=5) as connection:
                    assert connection.recv(5) == b"hello"
            finally:
                server.kill()
                server.wait()
        finally:
            task.release()
