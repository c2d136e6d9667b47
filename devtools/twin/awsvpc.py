"""Task networking as awsvpc gives it: every task its own network namespace and address.

On Fargate each task gets an elastic network interface of its own (awsvpc): its own IP address,
hostname and ports, so two web tasks both listen on 8000. The twin gives every task a network
namespace with a veth pair on one bridge, ``twin0`` (``10.213.0.1/16``), and an address from that
range; the host reaches tasks at their addresses and tasks reach the host (the broker, the ECS
agent endpoint) at the bridge's. What it does not model: subnets, routing to the internet,
security groups.

Addresses are allocated across processes (parallel tests, the local stack) by creating named
namespaces (``ip netns add`` fails for a name that exists): the first free name wins, and a
namespace whose owning process is gone is reclaimed.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

BRIDGE = "twin0"
NETWORK = ipaddress.IPv4Network("10.213.0.0/16")
#: The bridge's address: what tasks reach the host at.
HOST_ADDRESS = str(NETWORK.network_address + 1)


def mac_of(address: str) -> str:
    """The MAC address of an address on the bridge: locally administered, the IPv4 address in
    its last four bytes. Fixed per address, so no ARP cache ever holds a wrong one (see
    ``ensure_bridge`` and ``TaskNetwork.mac``)."""
    return "02:00:" + ":".join(f"{byte:02x}" for byte in ipaddress.IPv4Address(address).packed)


#: The bridge's MAC address, set so that it never changes while tasks run.
BRIDGE_MAC = mac_of(HOST_ADDRESS)
#: Where the twin keeps which process owns which namespace.
STATE = Path("/run/celery-ecs-twin")
NAMESPACES = Path("/run/netns")


class NetworkError(RuntimeError):
    """The task network could not be set up (no root, no iproute2...)."""


def _ip(*args: str) -> None:
    # A session of its own, as everything the twin starts: a Ctrl-C in the terminal of the local
    # stack, which stops its tasks in order, must not kill a half-done network change.
    result = subprocess.run(
        ["ip", *args], capture_output=True, text=True, check=False, start_new_session=True
    )
    if result.returncode != 0:
        raise NetworkError(f"ip {' '.join(args)}: {result.stderr.strip()}")


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    STATE.mkdir(parents=True, exist_ok=True)
    with (STATE / "lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def ensure_bridge() -> None:
    """Create ``twin0`` once per machine boot (idempotent, safe across processes), with the
    fixed ``BRIDGE_MAC``."""
    with _locked():
        if not _link_exists(BRIDGE):
            _ip("link", "add", BRIDGE, "type", "bridge")
            _ip("addr", "add", f"{HOST_ADDRESS}/{NETWORK.prefixlen}", "dev", BRIDGE)
        # A bridge without an address of its own takes the lowest of its ports', so it changed
        # whenever a task started or stopped, and the running tasks, whose ARP caches held the
        # old one, lost the host (the broker) for seconds. Also mends a bridge made before.
        if Path(f"/sys/class/net/{BRIDGE}/address").read_text().strip() != BRIDGE_MAC:
            _ip("link", "set", BRIDGE, "address", BRIDGE_MAC)
        _ip("link", "set", BRIDGE, "up")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class TaskNetwork:
    """One task's network namespace (``/run/netns/<name>``) and address on the bridge."""

    index: int

    @property
    def name(self) -> str:
        return f"twin-{self.index}"

    @property
    def address(self) -> str:
        # .1 is the bridge's; indexes start at 2.
        return str(NETWORK.network_address + self.index)

    @property
    def namespace_path(self) -> str:
        return str(NAMESPACES / self.name)

    @property
    def hostname(self) -> str:
        """What Fargate names a task: its private address, e.g. ``ip-10-213-0-2``."""
        return "ip-" + self.address.replace(".", "-")

    @property
    def mac(self) -> str:
        """The task's MAC address, derived from its IP address like ``BRIDGE_MAC``: a task given
        an address another had shortly before is reached at once, by the host's ARP cache as it
        stands (a new random one would be unreachable until that entry expired, up to ~45 s)."""
        return mac_of(self.address)

    @property
    def _host_veth(self) -> str:
        return f"twv{self.index}"  # interface names are at most 15 characters

    def release(self) -> None:
        """Delete the namespace (and with it the veth pair); the address can be reused."""
        with _locked():
            self._delete()

    def _delete(self) -> None:
        if Path(self.namespace_path).exists():
            _ip("netns", "del", self.name)
        (STATE / f"{self.name}.owner").unlink(missing_ok=True)


def allocate() -> TaskNetwork:
    """A namespace with ``eth0`` on the bridge, loopback up and a default route via the host."""
    ensure_bridge()
    with _locked():
        for index in range(2, NETWORK.num_addresses - 1):
            network = TaskNetwork(index)
            owner = STATE / f"{network.name}.owner"
            if Path(network.namespace_path).exists():
                if owner.exists() and _alive(int(owner.read_text() or 0)):
                    continue
                network._delete()  # left behind by a process that is gone
            _ip("netns", "add", network.name)
            owner.write_text(str(os.getpid()))
            try:
                _configure(network)
            except NetworkError:
                network._delete()
                raise
            return network
    raise NetworkError(f"no free address left in {NETWORK}")


def _link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def _configure(network: TaskNetwork) -> None:
    veth = network._host_veth
    # A namespace deleted earlier under this name (``ip netns del``) is destroyed later, by the
    # kernel, with its veth pair: the old pair may still be here, or vanish while we delete it.
    if _link_exists(veth):
        try:
            _ip("link", "del", veth)
        except NetworkError:
            if _link_exists(veth):
                raise
    _ip("link", "add", veth, "type", "veth",
        "peer", "name", "eth0", "address", network.mac, "netns", network.name)  # fmt: skip
    _ip("link", "set", veth, "master", BRIDGE)
    _ip("link", "set", veth, "up")
    inside = ("-n", network.name)
    _ip(*inside, "addr", "add", f"{network.address}/{NETWORK.prefixlen}", "dev", "eth0")
    _ip(*inside, "link", "set", "eth0", "up")
    _ip(*inside, "link", "set", "lo", "up")
    _ip(*inside, "route", "add", "default", "via", HOST_ADDRESS)
