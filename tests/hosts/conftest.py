"""
The host tests' fixtures: a real PostgreSQL server (L{tests.hosts.postgres_fixture}).
"""

from __future__ import annotations

from tests.hosts.postgres_fixture import postgres_server, postgres_url

__all__ = ["postgres_server", "postgres_url"]
