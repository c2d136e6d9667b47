"""A stand-in of the AWS Secrets Manager API, for the ECS twin and the tests.

moto's server (``ThreadedMotoServer``) answers Secrets Manager's HTTP API in this process, so the
web's real client (botocore, ``app.api_keys``) reads from it over HTTP exactly as it reads from
AWS; a process is pointed at it with ``AWS_ENDPOINT_URL_SECRETS_MANAGER`` (botocore's
service-specific endpoint variable, AWS SDKs and Tools Reference Guide, "Service-specific
endpoints") and stand-in credentials (``environment``).

A secret is put at a given ARN (the one the Pulumi program rendered, or one a test makes up):
moto finds a secret by the last part of an ARN, its name, in the region and account of the
request (moto/secretsmanager/models.py, ``SecretsStore``).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol, cast

import botocore.session
from moto.server import ThreadedMotoServer

from app.settings import SECRET_ARN

#: Credentials the stand-in accepts (any do); on ECS the task role's come from the agent.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "stand-in", "AWS_SECRET_ACCESS_KEY": "stand-in"}


class _Client(Protocol):
    def create_secret(self, *, Name: str, SecretString: str) -> dict[str, Any]: ...
    def put_secret_value(self, *, SecretId: str, SecretString: str) -> dict[str, Any]: ...
    def describe_secret(self, *, SecretId: str) -> dict[str, Any]: ...


class SecretsManagerStandIn:
    """Secrets Manager's API on ``http://<host>:<free port>`` until ``stop()``."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        # moto's server logs each request through Werkzeug's logger: a line a minute per web
        # process would bury the local stack's output.
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        self._server = ThreadedMotoServer(ip_address=host, port=0, verbose=False)
        self._server.start()
        bound_host, port = self._server.get_host_and_port()
        self.url = f"http://{bound_host}:{port}"

    @property
    def environment(self) -> dict[str, str]:
        """What a process needs to read secrets from the stand-in with botocore."""
        return {"AWS_ENDPOINT_URL_SECRETS_MANAGER": self.url, **CREDENTIALS}

    def client(self, region: str) -> _Client:
        client = botocore.session.get_session().create_client(
            "secretsmanager",
            region_name=region,
            endpoint_url=self.url,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        )
        return cast(_Client, client)

    def put(self, arn: str, value: str) -> None:
        """Make ``value`` the current value of the secret at ``arn`` (created if need be), as
        ``aws secretsmanager put-secret-value`` does."""
        match = SECRET_ARN.fullmatch(arn)
        if match is None:
            raise ValueError(f"not a Secrets Manager secret ARN: {arn!r}")
        client = self.client(match["region"])
        try:
            client.describe_secret(SecretId=arn)
        except Exception as exc:  # botocore's ResourceNotFoundException, made at run time
            if "ResourceNotFoundException" not in type(exc).__name__:
                raise
            client.create_secret(Name=arn.rsplit(":", 1)[1], SecretString=value)
            return
        client.put_secret_value(SecretId=arn, SecretString=value)

    def stop(self) -> None:
        self._server.stop()
