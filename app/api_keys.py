"""Who may call the producer API: the accepted API keys, re-read while the web runs.

The keys are a JSON document, ``{"keys": ["<key>", ...]}``: more than one key at a time lets a
rotation overlap (add the new key, move the clients, remove the old one). The document lives in
one place, chosen by ``celery_ecs.settings.ApiKeysSettings``:

- ``WEB_API_KEYS_SECRET_ARN``: a Secrets Manager secret (the stack creates it), read with
  botocore and the task role's credentials, in the region of the ARN;
- ``WEB_API_KEYS_FILE``: a file (local runs and tests).

Either is read again once the cached keys are ``CACHE_SECONDS`` old, so a rotation takes effect
within a minute without a redeploy or a restart. A failed read keeps the last keys read for at
most ``STALE_LIMIT_SECONDS`` (and logs why); after that, or before any read succeeded, requests
are refused (``KeysUnavailable``): never accepted without a key.

A client presents its key as ``Authorization: Bearer <key>`` (RFC 6750); it is compared with
each accepted key in constant time (``hmac.compare_digest``).
"""

from __future__ import annotations

import hmac
import json
import logging
import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from celery_ecs.settings import SECRET_ARN, ApiKeysSettings

log = logging.getLogger(__name__)

#: Seconds the keys read are used before they are read again: the longest a rotation (a key
#: added or removed) waits to take effect, and one GetSecretValue a minute per web process.
CACHE_SECONDS = 60.0
#: Seconds the last keys read stay in use while reading them again fails. Bounded: a key
#: removed during an outage of Secrets Manager stops working at most this long after it.
STALE_LIMIT_SECONDS = 600.0
#: Seconds between two attempts while reading fails, so a request does not wait on a failing
#: read each time.
RETRY_SECONDS = 5.0
#: Longest wait, in seconds, for Secrets Manager to connect or answer (one attempt).
SECRETS_MANAGER_TIMEOUT = 2.0
#: Shortest key accepted: a key is a bearer credential and must not be guessable.
MIN_KEY_LENGTH = 32
#: A bearer token (RFC 6750, section 2.1: b64token).
BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


class KeysUnavailable(Exception):
    """No keys can be trusted now: none read yet, or the last read ones are too old."""


class InvalidKeys(ValueError):
    """The document is not ``{"keys": [...]}`` of valid keys. The message names no key."""


def parse_keys(text: str) -> tuple[bytes, ...]:
    """The accepted keys of the document ``text``, or InvalidKeys saying what is wrong."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        # The position only: the message of a JSON error may quote the text, a key.
        raise InvalidKeys(f"not JSON (line {exc.lineno}, column {exc.colno})") from None
    keys = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(keys, list) or not keys:
        raise InvalidKeys('expected {"keys": ["<key>", ...]} with at least one key')
    for position, key in enumerate(keys):
        if not isinstance(key, str) or not BEARER_TOKEN.fullmatch(key):
            raise InvalidKeys(
                f"keys[{position}] is not a bearer token (letters, digits and -._~+/)"
            )
        if len(key) < MIN_KEY_LENGTH:
            raise InvalidKeys(f"keys[{position}] is shorter than {MIN_KEY_LENGTH} characters")
    return tuple(key.encode() for key in keys)


def keys_document(*keys: str) -> str:
    """The document that accepts ``keys`` (what the secret or the file holds)."""
    return json.dumps({"keys": list(keys)})


class KeySource(Protocol):
    @property
    def description(self) -> str:
        """Where the keys are read, for the logs."""
        ...

    def read(self) -> str:
        """The document, as text; any exception means it could not be read."""
        ...


@dataclass(frozen=True)
class FileSource:
    path: Path

    @property
    def description(self) -> str:
        return f"the file {self.path}"

    def read(self) -> str:
        return self.path.read_text(encoding="utf-8")


class _SecretsManagerClient(Protocol):
    """The one call of botocore's Secrets Manager client used here (its methods are made from
    AWS's API model at run time, so botocore's types do not list them)."""

    def get_secret_value(self, *, SecretId: str) -> Mapping[str, Any]: ...


class SecretsManagerSource:
    """The secret's current value (``AWSCURRENT``), with the default credential chain (on ECS,
    the task role). ``AWS_ENDPOINT_URL_SECRETS_MANAGER`` or ``AWS_ENDPOINT_URL`` points botocore
    at another endpoint (the twin's and the tests' stand-in of the API)."""

    def __init__(self, arn: str) -> None:
        match = SECRET_ARN.fullmatch(arn)
        if match is None:
            raise ValueError(f"not a Secrets Manager secret ARN: {arn!r}")
        self.arn = arn
        self.description = f"the secret {arn}"
        # Imported here: only the web in AWS needs botocore (it loads AWS's API models).
        import botocore.session
        from botocore.config import Config

        client = botocore.session.get_session().create_client(
            "secretsmanager",
            region_name=match["region"],
            config=Config(
                connect_timeout=SECRETS_MANAGER_TIMEOUT,
                read_timeout=SECRETS_MANAGER_TIMEOUT,
                # One retry: the keys in use cover a failure, and a request waits on this call.
                retries={"total_max_attempts": 2, "mode": "standard"},
            ),
        )
        self._client = cast(_SecretsManagerClient, client)

    def read(self) -> str:
        return str(self._client.get_secret_value(SecretId=self.arn)["SecretString"])


def source_for(settings: ApiKeysSettings) -> KeySource:
    """The source the settings name (they hold exactly one)."""
    if settings.secret_arn is not None:
        return SecretsManagerSource(settings.secret_arn)
    assert settings.file is not None  # ApiKeysSettings holds exactly one
    return FileSource(settings.file)


class AcceptedKeys:
    """The keys read from ``source``, read again when ``CACHE_SECONDS`` old (thread-safe)."""

    def __init__(
        self,
        source: KeySource,
        *,
        clock: Callable[[], float] = time.monotonic,
        cache_seconds: float | None = None,
        stale_limit_seconds: float | None = None,
        retry_seconds: float | None = None,
    ) -> None:
        """The durations default to this module's constants, as they are when called."""
        self.source = source
        self._clock = clock
        self._cache_seconds = CACHE_SECONDS if cache_seconds is None else cache_seconds
        self._stale_limit = (
            STALE_LIMIT_SECONDS if stale_limit_seconds is None else stale_limit_seconds
        )
        self._retry_seconds = RETRY_SECONDS if retry_seconds is None else retry_seconds
        self._keys: tuple[bytes, ...] = ()
        self._read_at: float | None = None  # when the keys in use were read
        self._next_attempt = float("-inf")
        self._lock = threading.Lock()

    def current(self) -> tuple[bytes, ...]:
        """The keys to accept now, or KeysUnavailable."""
        now = self._clock()
        if self._read_at is not None and now - self._read_at < self._cache_seconds:
            return self._keys
        # One thread reads; the others keep using the keys in use while they are usable, or
        # wait for that read when there are none.
        if self._lock.acquire(blocking=not self._usable(now)):
            try:
                self._refresh()
            finally:
                self._lock.release()
        if not self._usable(self._clock()):
            raise KeysUnavailable(f"no usable API keys from {self.source.description}")
        return self._keys

    def accepts(self, presented: str) -> bool:
        """Whether ``presented`` is one of the keys (KeysUnavailable when none can be trusted)."""
        token = presented.encode()
        accepted = False
        for key in self.current():
            # Every key is compared, each in constant time: the time says nothing of which.
            accepted |= hmac.compare_digest(token, key)
        return accepted

    def _usable(self, now: float) -> bool:
        return self._read_at is not None and now - self._read_at < self._stale_limit

    def _refresh(self) -> None:
        now = self._clock()
        fresh = self._read_at is not None and now - self._read_at < self._cache_seconds
        if fresh or now < self._next_attempt:  # another thread has just read, or just failed
            return
        try:
            keys = parse_keys(self.source.read())
        except Exception as exc:  # any failure to read: the keys in use (if usable) stay
            self._next_attempt = now + self._retry_seconds
            age = "none read yet" if self._read_at is None else f"{now - self._read_at:.0f}s old"
            log.error(
                "could not read the API keys from %s: %s: %s; keeping the keys in use (%s, "
                "usable for %.0fs after their read)",
                self.source.description, type(exc).__name__, exc, age, self._stale_limit,
            )  # fmt: skip
            return
        if keys != self._keys:
            log.info("API keys read from %s: %d accepted", self.source.description, len(keys))
        self._keys, self._read_at = keys, now
