"""The CLI project fixtures (a directory with a jobs package and a schedules file), for every CLI test
module: they are defined with the CLI tests in test_cli.py."""

from tests.unit.test_cli import migrated, project

__all__ = ["migrated", "project"]
