"""Shared fixtures: a real throwaway Redis per test that asks for one."""

from __future__ import annotations

pytest_plugins = ["tests.emulator_fixtures"]

import pytest

from tests.redis_server import RedisServer


@pytest.fixture
def redis_server(tmp_path):
    """A fresh real redis-server on a free port; killed after the test."""
    server = RedisServer(tmp_path / "redis").start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server) -> str:
    return redis_server.url
