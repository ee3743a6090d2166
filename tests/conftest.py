"""Shared pytest set-up of the gn_detection tests."""

import pytest

from gn_devices import DEVICES


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: compiles or traces a model (tens of seconds); part of the normal suite"
    )


@pytest.fixture(params=DEVICES)
def device(request) -> str:
    """The device an op test runs on: "cpu", and "cuda" where a GPU is visible."""
    return request.param
