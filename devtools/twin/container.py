"""One ECS container, run under Fargate's container contract without a container engine.

``plan_container`` turns a task definition (as RegisterTaskDefinition takes it: the JSON the
Pulumi program renders) and one of its container definitions into a ``ContainerPlan``: pure
data, unit-testable. ``start_container`` runs a plan through ``devtools.twin.launcher`` (Linux
namespaces, as root) and returns a ``Container`` to signal, stop, inspect and ``exec`` into.

The rules reproduced, each from the ECS/Fargate documentation (docs/explanation/ecs-twin.md):

- the process runs as the definition's ``user`` (else the image's ``USER``), with no
  supplementary groups, the ``linuxParameters.capabilities.drop`` capabilities removed, the
  Dockerfile's ``WORKDIR`` and ``ENV`` under the definition's ``environment`` and ``secrets``;
- ``readonlyRootFilesystem``: the root filesystem is read-only; ``/dev/shm`` stays writable;
- a task volume without a host path is a fresh directory owned by root with mode 0755, unless
  the image declares a ``VOLUME`` at exactly the mount's ``containerPath``: then it gets the
  image's directory mode (ECS developer guide, "Use bind mounts with Amazon ECS", Fargate;
  aws/containers-roadmap#938);
- ``initProcessEnabled``: ``tini`` (Docker's ``--init``) is PID 1 and forwards signals;
  ``command``/``entryPoint`` override the image's ``CMD``/``ENTRYPOINT``, exec form only;
- stop: SIGTERM, ``stopTimeout`` seconds (default 30), then SIGKILL of the whole container.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from devtools.twin.dockerfile_image import IMAGE_VENV_PATH, Image, image_venv

#: ECS's default ``stopTimeout`` when a container definition has none.
DEFAULT_STOP_TIMEOUT = 30
#: Directories the image has (from its Debian base) besides those it bind-mounts, with modes.
BASE_DIRECTORIES: Mapping[str, str] = {
    "/etc": "0755", "/home": "0755", "/opt": "0755", "/run": "0755", "/srv": "0755",
    "/tmp": "1777", "/var": "0755", "/var/tmp": "1777", "/sys": "0555",
}  # fmt: skip
#: Debian's merged /usr: these are symlinks in the base image.
USR_MERGE = {"/bin": "usr/bin", "/lib": "usr/lib", "/lib64": "usr/lib64", "/sbin": "usr/sbin"}


class ContractError(ValueError):
    """A definition the twin cannot run as Fargate would (or that Fargate would refuse)."""


@dataclass(frozen=True)
class ContainerPlan:
    """Everything the launcher needs, as JSON-able data. Paths are host paths unless noted."""

    name: str
    hostname: str
    #: The task's network namespace (``devtools.twin.awsvpc``); None: this machine's network.
    network_namespace: str | None
    state_dir: str
    rootfs: str
    #: (container path, octal mode) created in the root filesystem, owned by root.
    directories: list[tuple[str, str]]
    symlinks: list[tuple[str, str]]
    #: (host path, container path, read-only): the image's files.
    binds: list[tuple[str, str, bool]]
    #: (host directory, container path, read-only): task volumes.
    volumes: list[tuple[str, str, bool]]
    read_only_root: bool
    argv: list[str]
    env: dict[str, str]
    workdir: str
    uid: int
    gid: int
    init: bool
    #: The ``setpriv`` command that becomes the user and drops the capabilities.
    privileges: list[str]
    stop_timeout: int
    health_check: dict[str, Any] | None


def _command(image: Image, definition: Mapping[str, Any]) -> list[str]:
    entrypoint = definition.get("entryPoint")
    command = definition.get("command")
    for key, value in (("entryPoint", entrypoint), ("command", command)):
        if value is not None and (
            not isinstance(value, list) or not all(isinstance(part, str) for part in value)
        ):
            raise ContractError(f"{key}: expected a list of strings (exec form), got {value!r}")
    # Docker's rule: an entryPoint override drops the image's CMD as well.
    argv = [*(entrypoint if entrypoint is not None else image.entrypoint)]
    if command is not None:
        argv += command
    elif entrypoint is None:
        argv += image.cmd
    if not argv:
        raise ContractError("neither the definition nor the image gives a command")
    return argv


def _capabilities(definition: Mapping[str, Any]) -> list[str]:
    capabilities = (definition.get("linuxParameters") or {}).get("capabilities") or {}
    added = capabilities.get("add") or []
    if any(cap != "SYS_PTRACE" for cap in added):
        raise ContractError(f"capabilities.add {added}: Fargate only allows SYS_PTRACE")
    if added:
        raise ContractError("capabilities.add: the twin does not grant capabilities")
    return list(capabilities.get("drop") or [])


def _privileges(uid: int, gid: int, drop: Sequence[str]) -> list[str]:
    argv = ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups"]
    if drop:
        bounding = "-all" if "ALL" in drop else ",".join(f"-{cap.lower()}" for cap in drop)
        argv += ["--inh-caps=-all", f"--bounding-set={bounding}"]
    return argv


def _volumes(
    image: Image, task: Mapping[str, Any], definition: Mapping[str, Any], state_dir: Path
) -> list[tuple[str, str, bool]]:
    """Fresh volume directories, created as Fargate creates them (see the module docstring)."""
    declared = {volume["name"]: volume for volume in task.get("volumes") or []}
    mounted: dict[str, tuple[str, bool]] = {}
    for mount_point in definition.get("mountPoints") or []:
        name = mount_point["sourceVolume"]
        if name not in declared:
            raise ContractError(f"mountPoints: volume {name!r} is not in the task's volumes")
        volume = declared[name]
        if volume.get("host") or volume.get("efsVolumeConfiguration"):
            raise ContractError(f"volume {name!r}: only Fargate task storage is reproduced")
        mounted[mount_point["containerPath"]] = (name, bool(mount_point.get("readOnly")))
    # A VOLUME the image declares and nothing mounts is an anonymous volume: the same copy.
    for path in image.volumes:
        mounted.setdefault(path, (f"anonymous{path.replace('/', '-')}", False))

    volumes = []
    for path, (name, read_only) in sorted(mounted.items()):
        directory = state_dir / "volumes" / name
        if not directory.exists():
            directory.mkdir(parents=True)
            os.chown(directory, 0, 0)
            os.chmod(directory, _image_mode(path) if path in image.volumes else 0o755)
        volumes.append((str(directory), path, read_only))
    return volumes


def _image_mode(path: str) -> int:
    """Mode of a directory in the image: this machine's same path stands in for the Debian base
    image (e.g. /tmp: 1777); a path it lacks is one Docker creates, 0755."""
    try:
        return os.stat(path).st_mode & 0o7777
    except FileNotFoundError:
        return 0o755


def _passwd_files(image: Image, state_dir: Path) -> list[tuple[str, str, bool]]:
    """The base image's accounts plus those the Dockerfile creates, as ``/etc`` files."""
    files = []
    for name, entries in (
        ("passwd", [f"{u.name}:x:{u.uid}:{u.gid}::{u.home}:{u.shell}" for u in image.users]),
        ("group", [f"{u.name}:x:{u.gid}:" for u in image.users]),
    ):
        path = state_dir / name
        path.write_text(Path("/etc", name).read_text() + "".join(f"{e}\n" for e in entries))
        files.append((str(path), f"/etc/{name}", True))
    return files


def with_overrides(
    definition: Mapping[str, Any],
    *,
    command: Sequence[str] | None = None,
    environment: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """``definition`` with a RunTask ``containerOverrides`` applied, as ECS applies one:
    ``command`` replaces the definition's, ``environment`` is set over its variables (the rest
    of them stay)."""
    overridden = dict(definition)
    if command is not None:
        overridden["command"] = list(command)
    if environment:
        variables = {item["name"]: item["value"] for item in definition.get("environment") or []}
        variables |= dict(environment)
        overridden["environment"] = [{"name": k, "value": v} for k, v in variables.items()]
    return overridden


def plan_container(
    image: Image,
    task: Mapping[str, Any],
    definition: Mapping[str, Any],
    *,
    secrets: Mapping[str, str],
    hostname: str,
    state_dir: Path,
    network_namespace: str | None = None,
    extra_env: Mapping[str, str] | None = None,
) -> ContainerPlan:
    """Plan one container of ``task``. ``secrets``: environment variable -> resolved value for
    every ``secrets`` entry (the twin has no Secrets Manager); ``network_namespace``: the
    task's (None: this machine's network); ``extra_env``: what the platform adds (e.g.
    ``ECS_AGENT_URI``). Creates ``state_dir`` and the task's volume directories."""
    name = definition["name"]
    unresolved = sorted(
        item["name"] for item in definition.get("secrets") or [] if item["name"] not in secrets
    )
    if unresolved:
        raise ContractError(f"{name}: no local value for the secrets {unresolved}")
    if definition.get("privileged"):
        raise ContractError(f"{name}: Fargate does not run privileged containers")
    state_dir.mkdir(parents=True, exist_ok=True)
    uid, gid = image.resolve_user(definition.get("user"))

    env = {
        **image.env,
        "HOSTNAME": hostname,
        "HOME": image.home_of(uid),
        "AWS_EXECUTION_ENV": "AWS_ECS_FARGATE",
        **(extra_env or {}),
        **{item["name"]: item["value"] for item in definition.get("environment") or []},
        **{item["name"]: secrets[item["name"]] for item in definition.get("secrets") or []},
    }
    venv = image_venv(image)
    binds: list[tuple[str, str, bool]] = [
        ("/usr", "/usr", True),
        ("/etc", "/etc", True),
        ("/sys", "/sys", True),
        # The interpreter the venv's python links to (this machine's, at its own path), and the
        # venv at its image path only, as the image holds it.
        (sys.base_prefix, sys.base_prefix, True),
        (str(venv), IMAGE_VENV_PATH, True),
        *((str(source), path, True) for path, source in sorted(image.copies.items())),
        *_passwd_files(image, state_dir),
    ]
    directories = sorted({**BASE_DIRECTORIES, image.workdir: "0755"}.items())
    health_check = definition.get("healthCheck")
    return ContainerPlan(
        name=name,
        hostname=hostname,
        network_namespace=network_namespace,
        state_dir=str(state_dir),
        rootfs=str(state_dir / "rootfs"),
        directories=directories,
        symlinks=sorted(USR_MERGE.items()),
        binds=binds,
        volumes=_volumes(image, task, definition, state_dir),
        read_only_root=bool(definition.get("readonlyRootFilesystem")),
        argv=_command(image, definition),
        env=env,
        workdir=definition.get("workingDirectory") or image.workdir,
        uid=uid,
        gid=gid,
        init=bool((definition.get("linuxParameters") or {}).get("initProcessEnabled")),
        privileges=_privileges(uid, gid, _capabilities(definition)),
        stop_timeout=int(definition.get("stopTimeout") or DEFAULT_STOP_TIMEOUT),
        health_check=dict(health_check) if health_check else None,
    )


@dataclass
class Container:
    """A running (or finished) container. Exit codes are Docker's: 137 after a SIGKILL."""

    plan: ContainerPlan
    process: subprocess.Popen[bytes]
    log_path: Path
    started: float

    @property
    def name(self) -> str:
        return self.plan.name

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.process.poll() is None

    @property
    def exit_code(self) -> int | None:
        return self.process.poll()

    def wait(self, timeout: float | None = None) -> int:
        return self.process.wait(timeout=timeout)

    def init_pid(self, timeout: float = 10.0) -> int:
        """Host PID of the container's PID 1."""
        path = Path(self.plan.state_dir, "init.pid")
        deadline = time.monotonic() + timeout
        while not path.exists() or not path.read_text():
            if not self.alive() or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: the container did not start:\n{self.logs()}")
            time.sleep(0.01)
        return int(path.read_text())

    def signal(self, signum: int) -> None:
        """Send ``signum`` to PID 1, as ``docker kill --signal`` does."""
        os.kill(self.init_pid(), signum)

    def kill(self) -> int:
        """SIGKILL the whole container (PID 1's death ends its namespace)."""
        if self.alive():
            os.kill(self.init_pid(), signal.SIGKILL)
        return self.wait()

    def stop(self, timeout: float | None = None) -> int:
        """What ECS does: SIGTERM, wait ``stopTimeout`` (or ``timeout``), then SIGKILL."""
        if self.alive():
            self.signal(signal.SIGTERM)
            try:
                return self.wait(self.plan.stop_timeout if timeout is None else timeout)
            except subprocess.TimeoutExpired:
                return self.kill()
        return self.wait()

    def exec(self, argv: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the container as its user (``docker exec``), with its
        environment, root and working directory. A timeout kills it and raises."""
        command = [
            "nsenter", f"--target={self.init_pid()}", "--mount", "--pid", "--uts", "--net",
            "--root", "--wd",
            *self.plan.privileges, "--", *argv,
        ]  # fmt: skip
        # A session of its own: a Ctrl-C in the local stack's terminal is not a failed check.
        return subprocess.run(
            command, env=self.plan.env, capture_output=True, text=True, timeout=timeout,
            start_new_session=True,
        )  # fmt: skip

    def health(self) -> tuple[bool, str]:
        """Run the definition's health check once: (healthy, output)."""
        check = self.plan.health_check
        if check is None:
            raise ContractError(f"{self.name}: the definition has no healthCheck")
        kind, *argv = check["command"]
        if kind == "CMD-SHELL":
            argv = ["/bin/sh", "-c", " ".join(argv)]
        elif kind != "CMD":
            raise ContractError(f"{self.name}: healthCheck command must start with CMD")
        try:
            result = self.exec(argv, timeout=float(check.get("timeout", 5)))
        except subprocess.TimeoutExpired:
            return False, f"timed out after {check.get('timeout', 5)} s"
        return result.returncode == 0, (result.stdout + result.stderr).strip()


def start_container(plan: ContainerPlan) -> Container:
    """Start the planned container; its output goes to ``<state_dir>/output.log``."""
    if os.geteuid() != 0:
        raise ContractError("the twin needs root (Linux namespaces and mounts)")
    state_dir = Path(plan.state_dir)
    plan_path = state_dir / "plan.json"
    plan_path.write_text(json.dumps(asdict(plan)))
    (state_dir / "init.pid").unlink(missing_ok=True)
    Path(plan.rootfs).mkdir(exist_ok=True)
    log_path = state_dir / "output.log"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "devtools.twin.launcher", str(plan_path)],
            cwd=Path(__file__).resolve().parents[2],
            env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Container(plan, process, log_path, time.monotonic())
