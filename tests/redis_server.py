"""Test-side name of :mod:`emulator.redis_server` (the throwaway redis-server used by tests and demos)."""

from emulator.redis_server import RedisServer, free_port

__all__ = ["RedisServer", "free_port"]
