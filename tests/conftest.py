"""Shared pytest set-up of the gn_detection tests."""


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "slow: compiles or traces a model (tens of seconds); part of the normal suite"
    )
