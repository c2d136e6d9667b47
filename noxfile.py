"""The version matrix: the runtime's tests on every supported pair of Celery and kombu releases.

One session per pair (``nox -l`` lists them; ``nox`` runs them all, as CI does after
``make test``). Each builds its virtualenv from the project's own requirements
(``requirements-dev.txt``, through it ``app/requirements.txt`` and ``app/constraints.txt``), with
only the celery and kombu pins replaced by the pair's, and runs the tests of the Redis runtime
(transport, consumer, liveness, result backend) and of the private names it relies on
(``celery_ecs.upstream``, whose ``VERIFIED`` lists the same releases). The image ships the pair of
``app/constraints.txt``; the others are kept working while users upgrade.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import nox

ROOT = Path(__file__).parent
sys.path.insert(0, str(ROOT))  # the upstream sessions use devtools (nox imports no package)

from devtools.upstream.suites import SUITES, unpack_release  # noqa: E402
from testkit.redis_server import start_redis  # noqa: E402

#: Supported (celery, kombu) pairs, by session id (``nox -s "runtime(celery-5.7)"``); the
#: image ships app/constraints.txt's.
PAIRS: dict[str, tuple[str, str]] = {
    "celery-5.6": ("5.6.3", "5.6.2"),
    "celery-5.7": ("5.7.0", "5.7.0"),
}

#: The tests of the runtime: what depends on kombu's and Celery's internals.
RUNTIME_TESTS = (
    "tests/test_upstream_names.py",
    "tests/test_runtime_api.py",
    "tests/test_runtime_lines.py",
    "tests/test_transport.py",
    "tests/test_liveness.py",
    "tests/test_revokes.py",
    "tests/test_worker_liveness.py",
    "tests/test_worker_reliability.py",
    "tests/test_results.py",
    "tests/test_broker_restart.py",
)

#: The requirements files requirements-dev.txt reads (by path, relative to the root).
REQUIREMENTS = ("requirements-dev.txt", "requirements.txt", "policy/requirements.txt",
                "app/requirements.txt", "app/constraints.txt")  # fmt: skip

#: A celery or kombu pin: ``celery==x``, ``celery[redis]==x``, ``kombu==x``.
PIN = re.compile(r"^(?P<name>celery|kombu)(?P<extras>\[[^\]]*\])?==\S+$", re.MULTILINE)

nox.options.default_venv_backend = "venv"
nox.options.envdir = ".venvs/nox"  # removed by make clean with the other virtualenvs
nox.options.error_on_missing_interpreters = True


def pinned_requirements(directory: Path, celery: str, kombu: str) -> Path:
    """A copy of the project's requirements files in ``directory``, with celery and kombu
    pinned to ``celery`` and ``kombu`` wherever the project pins them; its requirements-dev.txt.

    Fails if app/requirements.txt or app/constraints.txt no longer pins both: the matrix would
    then silently test something else."""
    versions = {"celery": celery, "kombu": kombu}
    for name in REQUIREMENTS:
        text = (ROOT / name).read_text()
        if name.startswith("app/"):
            found = {match["name"] for match in PIN.finditer(text)}
            if found != set(versions):
                raise RuntimeError(f"{name} pins {sorted(found)}, not celery and kombu")
            text = PIN.sub(lambda match: f"{match['name']}{match['extras'] or ''}=="
                                         f"{versions[match['name']]}", text)  # fmt: skip
        target = directory / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    return directory / "requirements-dev.txt"


def install_pair(session: nox.Session, celery: str, kombu: str) -> None:
    """The project's requirements with the pair's celery and kombu, checked once installed."""
    requirements = pinned_requirements(Path(session.create_tmp()), celery, kombu)
    session.install("--quiet", "-r", str(requirements))
    installed = "import celery, kombu; print(celery.__version__, kombu.__version__)"
    versions = session.run("python", "-c", installed, silent=True)
    if str(versions).split() != [celery, kombu]:
        session.error(f"installed celery and kombu {versions!r}, not {celery} and {kombu}")


@nox.session
@nox.parametrize(("celery", "kombu"), list(PAIRS.values()), ids=list(PAIRS))
def runtime(session: nox.Session, celery: str, kombu: str) -> None:
    """The runtime's tests on one supported pair."""
    install_pair(session, celery, kombu)
    # Two processes: CI runs the sessions one after the other on a 2-core machine.
    session.run("python", "-m", "pytest", "-p", "no:cacheprovider", "--numprocesses=2",
                *RUNTIME_TESTS, *session.posargs)  # fmt: skip


@nox.session
@nox.parametrize(("celery", "kombu"), list(PAIRS.values()), ids=list(PAIRS))
def upstream(session: nox.Session, celery: str, kombu: str) -> None:
    """Celery's and kombu's own tests of the pair's releases, on the runtime
    (``devtools.upstream``): each suite from its release's source distribution on PyPI, with
    its plugin plugging the runtime in, against a redis-server of its own."""
    install_pair(session, celery, kombu)
    releases = {"celery": celery, "kombu": kombu}
    work = Path(session.create_tmp()).resolve()  # the suites run in their own directories
    for suite in SUITES:
        release = releases[suite.package]
        tree = unpack_release(suite, release, work / "suites")
        # A conftest at the root: its plugins' fixtures rank above celery.contrib.pytest's.
        (tree / "conftest.py").write_text(f"pytest_plugins = {list(suite.plugins)!r}\n")
        proof = work / f"{suite.name}.json"
        proof.unlink(missing_ok=True)
        server = start_redis()
        try:
            env = {
                # Celery's suite: its broker and backend; both suites: the server's address.
                "TEST_BROKER": server.url, "TEST_BACKEND": server.url,
                "REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(server.port),
                "REDIS_6379_TCP": str(server.port),
                # The project's app (imported by the plugins) reads its settings from these.
                "CELERY_BROKER_URL": server.url, "APP_HEARTBEAT_DIR": str(work),
                # Celery's "Task received/succeeded" lines, which its suite reads (the app
                # drops them by default: a logging choice, not the runtime's).
                "APP_LOG_TASKS": "true",
                "PYTHONPATH": str(ROOT), "UPSTREAM_PROOF": str(proof),
            }  # fmt: skip
            with session.chdir(tree):
                session.run("python", "-m", "pytest", "-p", "no:cacheprovider",
                            f"--timeout={suite.timeout}", "-rfEs",
                            *suite.paths(release), *session.posargs, env=env)  # fmt: skip
        finally:
            server.stop()
        # The plugin's checks that the runtime was plugged in: a run without them proves
        # nothing about the runtime, whatever pytest said.
        if not proof.is_file():
            session.error(f"{suite.name}: the plugin wrote no proof ({proof})")
        checked = json.loads(proof.read_text())
        if checked.get("failures"):
            session.error(f"{suite.name}: {checked['failures']}")
        session.log(f"{suite.name}: runtime checked: {json.dumps(checked)}")
