"""The web tests use the contract suite's backends (SQLite, and PostgreSQL when configured)."""

from tests.contract.conftest import backend  # noqa: F401 - a fixture, re-exported for this package
