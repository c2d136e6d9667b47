"""The stand-in of AWS's APIs (``testkit.aws_standin``): each one's state its own, a failed
start reported at once, no server left behind by a caller that dies."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from testkit.aws_standin import AwsStandIn
from testkit.processes import ROOT
from tests.support import wait_for

# The tier (tests/tiers.py): moto's server, in processes of its own, on loopback.
pytestmark = pytest.mark.redis

SECRET_ARN = "arn:aws:secretsmanager:eu-west-1:123456789012:secret:test/standin-AbCdEf"


def test_each_stand_in_keeps_its_own_state() -> None:
    first, second = AwsStandIn(), AwsStandIn()
    try:
        first.put_secret(SECRET_ARN, "one")
        first.put_secret(SECRET_ARN, "two")  # a new current version, as put-secret-value makes
        read = first.client("secretsmanager", "eu-west-1").get_secret_value(SecretId=SECRET_ARN)
        assert read["SecretString"] == "two"
        other = second.client("secretsmanager", "eu-west-1")
        with pytest.raises(other.exceptions.ResourceNotFoundException):
            other.get_secret_value(SecretId=SECRET_ARN)
    finally:
        first.stop()
        second.stop()


def test_an_address_it_cannot_bind_fails_at_once() -> None:
    began = time.monotonic()
    with pytest.raises(RuntimeError, match=r"did not start on 192\.0\.2\.1 \(exit code 1"):
        AwsStandIn("192.0.2.1")  # TEST-NET-1 (RFC 5737): on no interface of this machine
    assert time.monotonic() - began < 15


def test_the_server_does_not_outlive_its_caller() -> None:
    caller = subprocess.Popen(
        [sys.executable, "-c", "import time; from testkit.aws_standin import AwsStandIn; "
         "print(AwsStandIn().pid, flush=True); time.sleep(600)"],
        cwd=ROOT, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert caller.stdout is not None
    server_pid = int(caller.stdout.readline())
    caller.send_signal(signal.SIGKILL)  # no clean-up code of the caller runs
    caller.wait()
    caller.stdout.close()
    wait_for(lambda: not _running(server_pid), 15, what="the server to exit")


def _running(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie, exited but not reaped, is not)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
