"""Every producer request is authenticated: an API key, checked in constant time against keys
that are read again while the web runs (a file here, Secrets Manager in AWS: ``app.api_keys``).
"""

from __future__ import annotations

import hmac
import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from app import api_keys
from app.api_keys import AcceptedKeys, InvalidKeys, KeysUnavailable, keys_document, parse_keys
from app.web import OPEN_ENDPOINTS
from celery_ecs.settings import ApiKeysSettings, ConfigError
from testkit.aws_standin import AwsStandIn
from testkit.redis_server import free_port
from tests.support import (
    API_KEY,
    API_KEYS_FILE,
    AppProcess,
    ClientFactory,
    start_process,
    wait_for,
)
from tests.test_web import call, gunicorn_argv

NEW_KEY = "new-api-key-" + "n" * 40
CREDIT = {"idempotency_key": "auth-1", "account": "acct-1", "amount": 5}
SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:test/web-api-keys-AbCdEf"


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def without_key(client: FlaskClient) -> FlaskClient:
    """The same app, its requests without the test key the fixture adds."""
    client.environ_base.pop("HTTP_AUTHORIZATION", None)
    return client


def assert_unauthorized(response: TestResponse, challenge: str) -> None:
    assert response.status_code == 401, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    assert response.get_json()["error"]["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"] == challenge


MISSING = 'Bearer realm="celery-ecs"'
INVALID = 'Bearer realm="celery-ecs", error="invalid_token"'


# --- Which requests need a key -----------------------------------------------------------------


def test_every_endpoint_but_the_health_checks_and_the_document_needs_a_key(
    client: FlaskClient,
) -> None:
    requests = {
        "submit_task": ("POST", "/tasks/noop"),
        "task_status": ("GET", f"/tasks/{uuid.uuid4()}"),
        "livez": ("GET", "/livez"),
        "readyz": ("GET", "/readyz"),
        "openapi_document": ("GET", "/openapi.json"),
        # Flask's own route to files under app/static (there are none): closed like the rest.
        "static": ("GET", "/static/file"),
    }
    # Every route of the app is listed: a new one must say here whether it is open.
    assert {rule.endpoint for rule in client.application.url_map.iter_rules()} == set(requests)
    anonymous = without_key(client)

    for endpoint, (method, path) in requests.items():
        response = anonymous.open(path, method=method, json={} if method == "POST" else None)
        if endpoint in OPEN_ENDPOINTS:
            assert response.status_code == 200, endpoint
        else:
            assert_unauthorized(response, MISSING)
    assert {"livez", "readyz", "openapi_document"} == OPEN_ENDPOINTS


def test_a_request_without_a_key_enqueues_nothing_and_learns_nothing(
    client: FlaskClient, redis_client: redis.Redis
) -> None:
    anonymous = without_key(client)

    assert_unauthorized(anonymous.post("/tasks/apply_credit", json=CREDIT), MISSING)
    # Refused before the name is looked up: no list of the allowed tasks.
    assert_unauthorized(anonymous.post("/tasks/no_such_task", json={}), MISSING)
    # ...and before the body is read.
    assert_unauthorized(anonymous.post("/tasks/noop", data="not json"), MISSING)
    assert redis_client.keys("*") == []


@pytest.mark.parametrize(
    ("authorization", "challenge"),
    [
        (f"Bearer {API_KEY}x", INVALID),
        (f"Bearer {API_KEY[:-1]}", INVALID),
        (f"Bearer {NEW_KEY}", INVALID),
        ("Bearer ", MISSING),
        ("Bearer", MISSING),
        (API_KEY, MISSING),  # no scheme
        (f"Basic {API_KEY}", MISSING),
        (f"Token {API_KEY}", MISSING),
    ],
)
def test_anything_but_an_accepted_key_as_a_bearer_token_is_refused(
    client: FlaskClient, authorization: str, challenge: str
) -> None:
    response = client.post("/tasks/noop", json={}, headers={"Authorization": authorization})

    assert_unauthorized(response, challenge)


def test_the_scheme_name_is_case_insensitive(client: FlaskClient) -> None:
    # RFC 9110, section 11.1: an authentication scheme is a case-insensitive token.
    response = client.post("/tasks/noop", json={}, headers={"Authorization": f"bearer {API_KEY}"})

    assert response.status_code == 202, response.get_json()


def test_the_key_is_compared_in_constant_time_with_every_accepted_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys_file = tmp_path / "keys.json"
    keys_file.write_text(keys_document(API_KEY, NEW_KEY))
    accepted = AcceptedKeys(api_keys.FileSource(keys_file))
    compared: list[tuple[bytes, bytes]] = []
    original = hmac.compare_digest

    def compare_digest(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return original(a, b)

    monkeypatch.setattr(api_keys.hmac, "compare_digest", compare_digest)

    assert accepted.accepts(API_KEY)
    # The first key matched, the second was compared all the same: the time tells nothing.
    assert compared == [(API_KEY.encode(), API_KEY.encode()), (API_KEY.encode(), NEW_KEY.encode())]


# --- Rotation: the keys are read again while the web runs --------------------------------------


def test_a_rotation_takes_effect_without_a_restart(
    make_client: ClientFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(api_keys, "CACHE_SECONDS", 0.2)
    keys_file = tmp_path / API_KEYS_FILE
    client = without_key(make_client())
    assert client.post("/tasks/noop", json={}, headers=bearer(API_KEY)).status_code == 202

    # 1. The new key is added: both work while the clients move.
    keys_file.write_text(keys_document(API_KEY, NEW_KEY))
    time.sleep(0.3)
    assert client.post("/tasks/noop", json={}, headers=bearer(NEW_KEY)).status_code == 202
    assert client.post("/tasks/noop", json={}, headers=bearer(API_KEY)).status_code == 202

    # 2. The old key is removed: it stops working, the new one goes on.
    keys_file.write_text(keys_document(NEW_KEY))
    time.sleep(0.3)
    assert_unauthorized(client.post("/tasks/noop", json={}, headers=bearer(API_KEY)), INVALID)
    assert client.post("/tasks/noop", json={}, headers=bearer(NEW_KEY)).status_code == 202


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class CountingSource:
    """A source whose document a test sets, or replaces with a failure."""

    description = "the test's source"

    def __init__(self, document: str) -> None:
        self.document: str | Exception = document
        self.reads = 0

    def read(self) -> str:
        self.reads += 1
        if isinstance(self.document, Exception):
            raise self.document
        return self.document


@pytest.fixture
def clock() -> Clock:
    return Clock()


def keys_of(source: CountingSource, clock: Clock) -> AcceptedKeys:
    return AcceptedKeys(
        source, clock=clock, cache_seconds=60, stale_limit_seconds=600, retry_seconds=5
    )


def test_the_keys_are_read_once_a_minute(clock: Clock) -> None:
    source = CountingSource(keys_document(API_KEY))
    accepted = keys_of(source, clock)

    for _ in range(100):
        assert accepted.accepts(API_KEY)
    clock.now += 59
    assert accepted.accepts(API_KEY)
    assert source.reads == 1
    source.document = keys_document(NEW_KEY)
    clock.now += 1
    assert not accepted.accepts(API_KEY)
    assert accepted.accepts(NEW_KEY)
    assert source.reads == 2


def test_a_failed_read_keeps_the_last_keys_for_a_bounded_time(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    source = CountingSource(keys_document(API_KEY))
    accepted = keys_of(source, clock)
    assert accepted.accepts(API_KEY)

    source.document = ConnectionError("Secrets Manager is unreachable")
    clock.now += 60
    with caplog.at_level(logging.ERROR, logger="app.api_keys"):
        assert accepted.accepts(API_KEY)  # the read failed: the last keys stay
    assert "could not read the API keys from the test's source" in caplog.text
    assert "Secrets Manager is unreachable" in caplog.text
    # No new attempt before the retry interval: requests do not each wait on a failing read.
    reads = source.reads
    clock.now += 4
    assert accepted.accepts(API_KEY)
    assert source.reads == reads
    clock.now += 1
    assert accepted.accepts(API_KEY)
    assert source.reads == reads + 1

    # The stale limit: past it, nothing is accepted (never everything).
    clock.now = 1000.0 + 600
    with pytest.raises(KeysUnavailable):
        accepted.accepts(API_KEY)
    # Readable again: accepted again.
    source.document = keys_document(API_KEY)
    clock.now += 5
    assert accepted.accepts(API_KEY)


def test_an_invalid_document_is_a_failed_read_and_its_keys_are_not_logged(
    clock: Clock, caplog: pytest.LogCaptureFixture
) -> None:
    source = CountingSource(keys_document(API_KEY))
    accepted = keys_of(source, clock)
    assert accepted.accepts(API_KEY)

    # An operator's mistake: the new key is too short, and the document broken.
    for broken in (keys_document("short"), '{"keys": ["' + NEW_KEY + '"'):
        source.document = broken
        clock.now += 60
        with caplog.at_level(logging.ERROR, logger="app.api_keys"):
            assert accepted.accepts(API_KEY)
            assert not accepted.accepts(NEW_KEY)
    assert "InvalidKeys" in caplog.text
    assert NEW_KEY not in caplog.text and API_KEY not in caplog.text


def test_without_keys_every_request_is_refused_with_503(
    make_client: ClientFactory, tmp_path: Path
) -> None:
    client = make_client(WEB_API_KEYS_FILE=str(tmp_path / "missing.json"))

    response = client.post("/tasks/noop", json={})
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "auth_unavailable"
    assert response.headers["Retry-After"].isdigit()
    assert_unauthorized(without_key(client).post("/tasks/noop", json={}), MISSING)
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "api_keys" in ready.get_json()["error"]["message"]
    assert client.get("/livez").status_code == 200


@pytest.mark.parametrize(
    ("document", "problem"),
    [
        ("", "not JSON"),
        ("[]", 'expected {"keys"'),
        ('{"keys": []}', 'expected {"keys"'),
        ('{"keys": "' + API_KEY + '"}', 'expected {"keys"'),
        ('{"key": ["' + API_KEY + '"]}', 'expected {"keys"'),
        ('{"keys": [42]}', "keys[0] is not a bearer token"),
        ('{"keys": ["' + API_KEY + '", "has space ' + "x" * 40 + '"]}', "keys[1] is not a bearer"),
        ('{"keys": ["' + "k" * 31 + '"]}', "keys[0] is shorter than 32 characters"),
    ],
)
def test_the_keys_document_is_checked(document: str, problem: str) -> None:
    with pytest.raises(InvalidKeys) as raised:
        parse_keys(document)

    assert problem in str(raised.value)
    assert API_KEY not in str(raised.value)


def test_a_document_of_keys_reads_back() -> None:
    assert parse_keys(keys_document(API_KEY, NEW_KEY)) == (API_KEY.encode(), NEW_KEY.encode())


# --- Where the keys are: exactly one source ----------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({}, "set exactly one of WEB_API_KEYS_SECRET_ARN"),
        (
            {"WEB_API_KEYS_SECRET_ARN": SECRET_ARN, "WEB_API_KEYS_FILE": "/keys.json"},
            "got both",
        ),
        ({"WEB_API_KEYS_SECRET_ARN": "test/web-api-keys"}, "expected a Secrets Manager secret ARN"),
        (
            {"WEB_API_KEYS_SECRET_ARN": SECRET_ARN.replace("secretsmanager", "ssm")},
            "expected a Secrets Manager secret ARN",
        ),
    ],
)
def test_the_web_needs_exactly_one_source_of_keys(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match="WEB_API_KEYS") as raised:
        ApiKeysSettings.from_env(env)

    assert message in str(raised.value)


def test_the_source_is_the_one_configured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = ApiKeysSettings.from_env({"WEB_API_KEYS_FILE": str(tmp_path / "k.json")})
    assert api_keys.source_for(settings) == api_keys.FileSource(tmp_path / "k.json")
    # botocore looks for credentials as it makes the client: without these it would ask the
    # instance metadata service (169.254.169.254), a network call in a unit test.
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unit-test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit-test")
    settings = ApiKeysSettings.from_env({"WEB_API_KEYS_SECRET_ARN": SECRET_ARN})
    source = api_keys.source_for(settings)
    assert isinstance(source, api_keys.SecretsManagerSource)
    assert source.arn == SECRET_ARN


# --- Secrets Manager: the production source, against a stand-in of the API ---------------------


@pytest.fixture
def secrets_manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[AwsStandIn]:
    """The stand-in, with this process's botocore pointed at it."""
    stand_in = AwsStandIn()
    for name, value in stand_in.environment().items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_SECRETS_MANAGER"):
        monkeypatch.delenv(name, raising=False)
    yield stand_in
    stand_in.stop()


def test_the_web_reads_the_keys_from_the_secret_and_follows_its_rotation(
    make_client: ClientFactory,
    secrets_manager: AwsStandIn,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(api_keys, "CACHE_SECONDS", 0.2)
    secrets_manager.put_secret(SECRET_ARN, keys_document(API_KEY))
    client = without_key(make_client(WEB_API_KEYS_FILE="", WEB_API_KEYS_SECRET_ARN=SECRET_ARN))

    assert client.post("/tasks/noop", json={}, headers=bearer(API_KEY)).status_code == 202
    assert_unauthorized(client.post("/tasks/noop", json={}, headers=bearer(NEW_KEY)), INVALID)

    # aws secretsmanager put-secret-value: the new version is the current one.
    secrets_manager.put_secret(SECRET_ARN, keys_document(API_KEY, NEW_KEY))
    time.sleep(0.3)
    assert client.post("/tasks/noop", json={}, headers=bearer(NEW_KEY)).status_code == 202
    secrets_manager.put_secret(SECRET_ARN, keys_document(NEW_KEY))
    time.sleep(0.3)
    assert_unauthorized(client.post("/tasks/noop", json={}, headers=bearer(API_KEY)), INVALID)
    assert client.post("/tasks/noop", json={}, headers=bearer(NEW_KEY)).status_code == 202


@pytest.mark.redis  # moto's server in a process
def test_an_unreachable_secrets_manager_keeps_the_keys_in_use(
    secrets_manager: AwsStandIn, caplog: pytest.LogCaptureFixture
) -> None:
    secrets_manager.put_secret(SECRET_ARN, keys_document(API_KEY))
    clock = Clock()
    accepted = AcceptedKeys(api_keys.SecretsManagerSource(SECRET_ARN), clock=clock)
    assert accepted.accepts(API_KEY)

    secrets_manager.stop()
    clock.now += api_keys.CACHE_SECONDS
    started = time.monotonic()
    with caplog.at_level(logging.ERROR, logger="app.api_keys"):
        assert accepted.accepts(API_KEY)
    # Bounded waits: two attempts of at most SECRETS_MANAGER_TIMEOUT each, and a back-off.
    assert time.monotonic() - started < 4 * api_keys.SECRETS_MANAGER_TIMEOUT + 2
    assert f"could not read the API keys from the secret {SECRET_ARN}" in caplog.text
    clock.now += api_keys.STALE_LIMIT_SECONDS
    with pytest.raises(KeysUnavailable):
        accepted.accepts(API_KEY)


def test_gunicorn_reads_the_keys_from_the_secret(
    app_env: dict[str, str],
    tmp_path: Path,
    processes: list[AppProcess],
    secrets_manager: AwsStandIn,
) -> None:
    # The container's command, with the environment the stack renders: the ARN, no file.
    secrets_manager.put_secret(SECRET_ARN, keys_document(API_KEY))
    env = {k: v for k, v in app_env.items() if k != "WEB_API_KEYS_FILE"}
    env |= {**secrets_manager.environment(), "WEB_API_KEYS_SECRET_ARN": SECRET_ARN}
    port = free_port()
    web = start_process("web", gunicorn_argv(), {**env, "WEB_PORT": str(port)}, tmp_path)
    processes.append(web)

    def ready() -> bool:
        if not web.alive():
            raise AssertionError(f"gunicorn exited:\n{web.logs()}")
        try:
            return call(port, "GET", "/readyz", timeout=3)[0] == 200
        except OSError:
            return False

    wait_for(ready, 30, what="gunicorn to be ready")
    status, _, body = call(port, "POST", "/tasks/noop", {}, authorization=bearer(API_KEY))
    assert status == 202, body
    status, headers, body = call(port, "POST", "/tasks/noop", {}, authorization={})
    assert (status, headers["WWW-Authenticate"]) == (401, MISSING), body
    assert json.dumps(API_KEY) not in web.logs()
