"""The application image as the twin reproduces it, read from the project's ``Dockerfile``.

There is no container engine here, so the image is not built; the twin assembles an equivalent
root filesystem for every container from three sources:

- the final stage of the Dockerfile (parsed with ``dockerfile-parse``): ``ENV``, ``WORKDIR``,
  ``USER``, ``VOLUME``, ``EXPOSE``, ``CMD``/``ENTRYPOINT``, the ``useradd`` that creates the user,
  and what ``COPY`` puts where;
- this machine's Debian ``/usr`` and ``/etc``, standing in for the Debian base image (a
  directory's mode in the image, e.g. ``/tmp``'s 1777, is taken from the same path here);
- an "image venv" built the way the Dockerfile's build stage builds ``/opt/venv``: a venv
  without pip, ``app/requirements.txt`` installed with ``app/constraints.txt``, then the runtime
  package built from its source (``pyproject.toml``, ``celery_ecs/``), nothing else: the stage's
  own ``pip`` commands, run on a copy of what it ``COPY``s, laid out at the image paths. A
  container therefore cannot import what the image would not have (pytest, Pulumi...).

What the twin cannot reproduce of the image: the base image's exact Python patch release and
Debian packages (this machine's are used), and ``RUN`` steps of the final stage other than the
user creation.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
#: Where built image venvs are kept (one per set of requirements; ``make clean`` removes it).
CACHE = ROOT / ".twin"

#: The environment the base image (``python:3.11-slim-bookworm``) sets, which the Dockerfile's
#: own ``ENV`` extends (its ``$PATH``): Debian's default ``PATH`` with ``/usr/local/bin`` first,
#: and ``LANG``, from the official image's Dockerfile.
BASE_IMAGE_ENV: Mapping[str, str] = {
    "PATH": "/usr/local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}
#: Where the build stage puts the venv the final stage copies (``COPY --from=build``).
IMAGE_VENV_PATH = "/opt/venv"
#: Part of every image venv's cache key: raise it when the way one is built here changes, so
#: that venvs built the old way are not reused.
VENV_LAYOUT = 3
#: What ``.dockerignore`` keeps out of a copied directory: bytecode the checkout's runs left.
_NOT_SENT = ("__pycache__", "*.pyc", "*.pyo", "*.pyd")


class ImageError(ValueError):
    """The Dockerfile does something the twin cannot reproduce."""


@dataclass(frozen=True)
class ImageUser:
    """The account ``useradd`` creates in the image (what ``/etc/passwd`` says of it)."""

    name: str
    uid: int
    gid: int
    home: str
    shell: str


@dataclass(frozen=True)
class VenvBuild:
    """The build stage: its ``RUN`` commands (each ``&&`` part, image paths) and the context
    files it ``COPY``s (image path -> context path)."""

    commands: tuple[tuple[str, ...], ...]
    files: Mapping[str, Path]


@dataclass(frozen=True)
class Image:
    """The final stage of the Dockerfile, as a container sees it."""

    env: Mapping[str, str]
    workdir: str
    #: ``USER``: "uid[:gid]" or a name; None = root.
    user: str | None
    #: Paths declared with ``VOLUME``.
    volumes: tuple[str, ...]
    exposed_ports: tuple[int, ...]
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    #: Image path -> path in the build context, for every ``COPY`` from the context.
    copies: Mapping[str, Path]
    #: How the build stage makes the ``/opt/venv`` the final stage copies.
    venv_build: VenvBuild
    users: tuple[ImageUser, ...] = field(default=())

    def resolve_user(self, spec: str | None) -> tuple[int, int]:
        """(uid, gid) for a ``user`` of a container definition, or the image's ``USER``."""
        spec = spec or self.user
        if not spec:
            return 0, 0
        name, _, group = spec.partition(":")
        by_name = {user.name: user for user in self.users}
        if name.isdigit():
            uid = int(name)
            known = next((user for user in self.users if user.uid == uid), None)
            gid = known.gid if known else uid
        elif name in by_name:
            uid, gid = by_name[name].uid, by_name[name].gid
        else:
            raise ImageError(f"user {name!r} does not exist in the image")
        if group:
            if not group.isdigit():
                raise ImageError(f"group {group!r}: the twin resolves numeric groups only")
            gid = int(group)
        return uid, gid

    def home_of(self, uid: int) -> str:
        """``HOME`` as Docker sets it: the passwd entry's home, else ``/``."""
        if uid == 0:
            return "/root"
        return next((user.home for user in self.users if user.uid == uid), "/")


@dataclass(frozen=True)
class Stage:
    """One ``FROM`` of a Dockerfile: its base image, name and instructions (keyword, value),
    comments dropped and continuation lines joined."""

    image: str
    name: str | None
    instructions: tuple[tuple[str, str], ...]

    def arguments(self, keyword: str) -> list[str]:
        return [value for instruction, value in self.instructions if instruction == keyword]


def dockerfile_stages(dockerfile: Path = DOCKERFILE) -> list[Stage]:
    """Every stage of ``dockerfile``, in order."""
    # dockerfile-parse reads (and would write) bytes; types-dockerfile-parse says str.
    parser = DockerfileParser(fileobj=io.BytesIO(dockerfile.read_bytes()))  # type: ignore[arg-type]
    stages: list[tuple[str, str | None, list[tuple[str, str]]]] = []
    for item in parser.structure:
        instruction, value = item["instruction"], item["value"]
        if instruction == "COMMENT":
            continue
        if instruction == "FROM":
            image, _, name = value.partition(" AS ")
            stages.append((image.strip(), name.strip() or None, []))
        elif not stages:
            raise ImageError(f"{instruction} before the first FROM")
        else:
            stages[-1][2].append((instruction, value))
    if not stages:
        raise ImageError("the Dockerfile has no FROM")
    return [Stage(image, name, tuple(items)) for image, name, items in stages]


def _copy(value: str, workdir: str, context: Path) -> tuple[str | None, dict[str, Path | str]]:
    """(source stage or None, image path -> context path or stage path) of one ``COPY``,
    with Docker's rules: a directory's contents go to the destination, a file goes into a
    destination ending with "/"."""
    *sources, destination = shlex.split(value)
    stage = next((s[len("--from=") :] for s in sources if s.startswith("--from=")), None)
    sources = [source for source in sources if not source.startswith("--")]
    target = os.path.normpath(os.path.join(workdir, destination))
    copied: dict[str, Path | str] = {}
    for source in sources:
        origin: Path | str = source if stage is not None else context / source
        is_file = stage is None and (context / source).is_file()
        if is_file and destination.endswith("/"):
            copied[os.path.join(target, Path(source).name)] = origin
        else:
            copied[target] = origin
    return stage, copied


_VARIABLE = re.compile(r"\$(?:\{(\w+)\}|(\w+))")


def _env_pairs(value: str, env: Mapping[str, str]) -> dict[str, str]:
    """``ENV`` KEY=value pairs, ``$VAR``/``${VAR}`` replaced with the environment so far."""
    pairs = {}
    for word in shlex.split(value):
        key, separator, item = word.partition("=")
        if not separator:
            raise ImageError(f"ENV {value}: use the KEY=value form")
        pairs[key] = _VARIABLE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), item)
    return pairs


def _exec_form(value: str, instruction: str) -> tuple[str, ...]:
    try:
        command = json.loads(value)
    except json.JSONDecodeError:
        raise ImageError(f"{instruction} {value}: use the exec form (a JSON list)") from None
    if not isinstance(command, list) or not all(isinstance(part, str) for part in command):
        raise ImageError(f"{instruction} {value}: expected a JSON list of strings")
    return tuple(command)


def _users(run: str) -> list[ImageUser]:
    """The accounts a ``RUN`` creates with ``useradd`` (its long options only)."""
    users = []
    for command in run.split("&&"):
        words = shlex.split(command)
        if not words or words[0] != "useradd":
            continue
        options: dict[str, str] = {}
        name = ""
        index = 1
        while index < len(words):
            word = words[index]
            if word in ("--uid", "--gid", "--home-dir", "--shell"):
                options[word] = words[index + 1]
                index += 2
                continue
            if not word.startswith("-"):
                name = word
            index += 1
        if not name or "--uid" not in options:
            raise ImageError(f"useradd in {run!r}: give --uid and a name")
        users.append(
            ImageUser(
                name=name,
                uid=int(options["--uid"]),
                gid=int(options.get("--gid", options["--uid"])),
                home=options.get("--home-dir", f"/home/{name}"),
                shell=options.get("--shell", "/bin/sh"),
            )
        )
    return users


def built_image(inputs: Mapping[str, Any]) -> Image:
    """The image a ``docker-build:index:Image`` of the program builds: its Dockerfile and
    context (``{"location": path}``, relative to the project directory, as the stack's
    ``image`` key gives them)."""
    return parse_image(
        ROOT / inputs["dockerfile"]["location"], ROOT / inputs["context"]["location"]
    )


def parse_image(dockerfile: Path = DOCKERFILE, context: Path | None = None) -> Image:
    """Read ``dockerfile`` (build context: its directory unless given): the final stage, and
    the commands of the build stage whose venv it copies."""
    context = context or dockerfile.parent
    stages = dockerfile_stages(dockerfile)
    workdir = "/"
    user: str | None = None
    volumes: list[str] = []
    ports: list[int] = []
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    copies: dict[str, Path] = {}
    venv_stage: str | None = None
    users: list[ImageUser] = []
    env = dict(BASE_IMAGE_ENV)
    for instruction, value in stages[-1].instructions:
        if instruction == "ENV":
            env.update(_env_pairs(value, env))
        elif instruction == "WORKDIR":
            workdir = os.path.normpath(os.path.join(workdir, value))
        elif instruction == "USER":
            user = value.strip()
        elif instruction == "VOLUME":
            declared = json.loads(value) if value.lstrip().startswith("[") else value.split()
            volumes += [os.path.normpath(path) for path in declared]
        elif instruction == "EXPOSE":
            ports += [int(port.split("/")[0]) for port in value.split()]
        elif instruction == "ENTRYPOINT":
            entrypoint = _exec_form(value, instruction)
        elif instruction == "CMD":
            cmd = _exec_form(value, instruction)
        elif instruction == "RUN":
            users += _users(value)
        elif instruction in ("COPY", "ADD"):
            stage, copied = _copy(value, workdir, context)
            if stage is None:
                copies.update({path: Path(origin) for path, origin in copied.items()})
            elif copied == {IMAGE_VENV_PATH: IMAGE_VENV_PATH}:
                venv_stage = stage
            else:
                raise ImageError(
                    f"COPY --from={stage}: the twin only reproduces a stage's {IMAGE_VENV_PATH}"
                )
    return Image(
        env=env,
        workdir=workdir,
        user=user,
        volumes=tuple(volumes),
        exposed_ports=tuple(ports),
        entrypoint=entrypoint,
        cmd=cmd,
        copies=copies,
        venv_build=_venv_build(stages, venv_stage, context),
        users=tuple(users),
    )


def _venv_build(stages: list[Stage], name: str | None, context: Path) -> VenvBuild:
    """The commands of build stage ``name``, with the files it copies from the context."""
    if name is None:
        raise ImageError(f"no stage builds the {IMAGE_VENV_PATH} the final stage runs")
    stage = next((stage for stage in stages if stage.name == name), None)
    if stage is None:
        raise ImageError(f"COPY --from={name}: no stage is named {name!r}")
    commands: list[tuple[str, ...]] = []
    files: dict[str, Path] = {}
    workdir = "/"
    for instruction, value in stage.instructions:
        if instruction == "RUN":
            commands += [tuple(shlex.split(command)) for command in value.split("&&")]
        elif instruction in ("COPY", "ADD"):
            source_stage, copied = _copy(value, workdir, context)
            if source_stage is not None:
                raise ImageError(f"stage {name}: COPY --from is not reproduced")
            files.update({path: Path(origin) for path, origin in copied.items()})
        elif instruction == "WORKDIR":
            workdir = os.path.normpath(os.path.join(workdir, value))
        elif instruction not in ("ENV", "ARG", "LABEL"):
            raise ImageError(f"stage {name}: {instruction} is not reproduced")
    for command in commands:
        if not command or command[0] not in ("python", "pip"):
            raise ImageError(
                f"stage {name}: RUN {' '.join(command)}: the twin runs python and pip only"
            )
    return VenvBuild(commands=tuple(commands), files=files)


# --- The image venv -------------------------------------------------------------------------------


def _localize(argument: str, paths: Mapping[str, str], context: Path) -> str:
    """``argument`` with an image path made local: the venv's, or one under which the stage
    copied something (``context`` holds those copies at their image paths)."""
    for image_path, local in paths.items():
        if argument == image_path or argument.startswith(f"{image_path}/"):
            return local + argument[len(image_path) :]
    if argument.startswith("/") and (context / argument.lstrip("/")).exists():
        return str(context / argument.lstrip("/"))
    return argument


def _sent_files(source: Path) -> Iterator[tuple[str, Path]]:
    """(path relative to ``source``, file) of what a ``COPY`` of ``source`` sends: the file
    itself ("" for its path), or a directory's files less what ``.dockerignore`` leaves out."""
    if not source.is_dir():
        yield "", source
        return
    for file in sorted(source.rglob("*")):
        relative = file.relative_to(source)
        ignored = any(relative.match(pattern) for pattern in _NOT_SENT) or any(
            part == "__pycache__" for part in relative.parts
        )
        if file.is_file() and not ignored:
            yield str(relative), file


def _stage_context(build: VenvBuild, context: Path) -> None:
    """Lay out what the build stage copies at its image paths under ``context``."""
    shutil.rmtree(context, ignore_errors=True)
    for image_path, source in build.files.items():
        for relative, file in _sent_files(source):
            target = context / image_path.lstrip("/") / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, target)


def _build_key(build: VenvBuild) -> str:
    digest = hashlib.sha256(repr(build.commands).encode())
    for path, source in sorted(build.files.items()):
        for relative, file in _sent_files(source):
            name = f"{path}/{relative}" if relative else path
            digest.update(name.encode() + b"\0" + file.read_bytes())
    digest.update(sys.version.encode())
    digest.update(f"layout {VENV_LAYOUT}".encode())
    return digest.hexdigest()[:16]


def _scripts_at_image_path(venv: Path) -> None:
    """Make the scripts pip wrote in ``venv/bin`` name ``/opt/venv``, as the image's do.

    pip names the venv's interpreter in a console script's ``#!`` line (or, for a path too long
    for one, in a ``/bin/sh`` trampoline), and ``activate`` names the venv: here that is this
    checkout's path, which a container cannot rely on seeing (a checkout under ``/tmp`` lies
    under the task's ``/tmp`` volume). A container sees the venv at ``/opt/venv`` only."""
    local = str(venv).encode()
    for script in (venv / "bin").iterdir():
        if script.is_file() and not script.is_symlink():
            content = script.read_bytes()
            if local in content:
                script.write_bytes(content.replace(local, IMAGE_VENV_PATH.encode()))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test processes build it once
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def image_venv(image: Image) -> Path:
    """The image's ``/opt/venv``: the build stage's own commands run here, once per input.

    ``python``/``pip`` become this interpreter; ``/opt/venv`` and the copied files (laid out at
    their image paths in a directory next to the venv, removed after the build) become local
    paths; then the console scripts name ``/opt/venv`` in their ``#!`` line, as in the image (so
    they run only in a container). ``.complete`` marks a finished build.
    """
    build = image.venv_build
    venv = CACHE / f"image-venv-{_build_key(build)}"
    with _locked(CACHE / ".lock"):
        if (venv / ".complete").exists():
            return venv
        shutil.rmtree(venv, ignore_errors=True)  # an interrupted build
        context = venv.with_name(f"{venv.name}-context")
        _stage_context(build, context)
        paths = {IMAGE_VENV_PATH: str(venv)}
        for command in build.commands:
            program, *arguments = command
            interpreter = [sys.executable] if program == "python" else [sys.executable, "-m", "pip"]
            localized = [_localize(argument, paths, context) for argument in arguments]
            result = subprocess.run(
                [*interpreter, *localized], capture_output=True, text=True, check=False
            )
            if result.returncode != 0:
                raise ImageError(
                    f"build stage: RUN {' '.join(command)} failed ({result.returncode}):\n"
                    f"{result.stdout}{result.stderr}"
                )
        shutil.rmtree(context)
        _scripts_at_image_path(venv)
        (venv / ".complete").touch()
    return venv
