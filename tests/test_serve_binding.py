"""`moco serve` listens on this machine only unless told otherwise (and warns when told otherwise without a
token)."""
from __future__ import annotations

import inspect

from moco import cli, serve


def test_server_binds_loopback_by_default():
    assert inspect.signature(cli.serve).parameters["host"].default.default == "127.0.0.1"
    assert inspect.signature(serve.serve).parameters["host"].default == "127.0.0.1"
    assert serve.is_loopback("127.0.0.1") and serve.is_loopback("localhost") and serve.is_loopback("::1")
    assert not serve.is_loopback("0.0.0.0") and not serve.is_loopback("192.168.1.5")
