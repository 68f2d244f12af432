"""Find the user's jobs: import ``--jobs`` (a module, a package with all its submodules, or a .py file)
from the current directory and collect every :class:`JobDefinition` held by a module attribute."""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

from ..jobs import JobDefinition
from ._base import CliError

_NON_IDENTIFIER = re.compile(r"\W", re.ASCII)


def registration_key(job_name: str) -> str:
    """``process-image`` -> ``process_image``: the attribute under ``durably.jobs``."""
    key = _NON_IDENTIFIER.sub("_", job_name)
    return key if key.isidentifier() else f"_{key}"


def _where(exc: BaseException) -> str:
    """``path:line`` of the innermost frame in the user's code (or anywhere, failing that)."""
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{_shown_path(exc.filename)}:{exc.lineno}"
    frames = traceback.extract_tb(exc.__traceback__)
    cwd = os.getcwd() + os.sep
    own = [f for f in frames if f.filename.startswith(cwd)] or [
        f for f in frames if "importlib" not in f.filename
    ]
    if not own:
        return ""
    frame = own[-1]
    return f"{_shown_path(frame.filename)}:{frame.lineno}"


def _shown_path(path: str) -> str:
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return path
    return path if relative.startswith("..") else relative


def _import(name: str, spec: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (name == exc.name or name.startswith(exc.name + ".")):
            raise CliError(
                f"cannot import jobs module '{spec}': no module named '{exc.name}' in {os.getcwd()} "
                "(set --jobs or DURABLY_JOBS)"
            ) from None
        raise _failed(name, exc) from None
    except Exception as exc:
        raise _failed(name, exc) from None


def _failed(name: str, exc: BaseException) -> CliError:
    where = _where(exc)
    text = str(exc).strip()
    if isinstance(exc, SyntaxError):
        text = exc.msg
    what = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return CliError(f"jobs module '{name}' failed to import: {what}" + (f" ({where})" if where else ""))


def _modules(spec: str) -> Iterator[ModuleType]:
    """The module named by ``spec`` and, for a package, every module inside it."""
    cwd = os.getcwd()
    if spec.endswith(".py") or os.sep in spec or (os.altsep and os.altsep in spec):
        path = Path(spec)
        if not path.exists():
            raise CliError(f"cannot import jobs module '{spec}': {path} does not exist")
        directory = str(path.resolve().parent)
        name = path.stem if path.suffix == ".py" else path.name
    else:
        directory, name = cwd, spec
    if not name.replace(".", "_").isidentifier():
        raise CliError(f"--jobs '{spec}': not a module name (e.g. jobs, myapp.jobs) or a .py file")
    if directory not in sys.path:
        sys.path.insert(0, directory)
    module = _import(name, spec)
    yield module
    path_attr = getattr(module, "__path__", None)
    if path_attr is None:
        return

    def on_error(failed: str) -> None:
        exc = sys.exc_info()[1]
        raise _failed(failed, exc) if exc is not None else CliError(f"cannot import '{failed}'")

    for info in pkgutil.walk_packages(path_attr, prefix=module.__name__ + ".", onerror=on_error):
        yield _import(info.name, spec)


def load_jobs(spec: str) -> dict[str, JobDefinition[Any, Any]]:
    """{registration key: job} for every job found in the modules of ``spec``.

    The same job object reachable from several modules counts once; two different jobs with one
    name, or two names that make the same key, are errors.
    """
    found: dict[str, tuple[JobDefinition[Any, Any], str]] = {}
    by_name: dict[str, tuple[JobDefinition[Any, Any], str]] = {}
    for module in _modules(spec):
        for attribute, value in list(vars(module).items()):
            if not isinstance(value, JobDefinition):
                continue
            where = f"{module.__name__}.{attribute}"
            seen = by_name.get(value.name)
            if seen is not None:
                if seen[0] is not value:
                    raise CliError(f"two different jobs are named '{value.name}': {seen[1]} and {where}")
                continue
            key = registration_key(value.name)
            clash = found.get(key)
            if clash is not None:
                raise CliError(
                    f"jobs '{clash[0].name}' ({clash[1]}) and '{value.name}' ({where}) "
                    f"would both be registered as '{key}'; rename one"
                )
            found[key] = (value, where)
            by_name[value.name] = (value, where)
    return {key: job for key, (job, _) in found.items()}


def job_inputs(jobs: dict[str, JobDefinition[Any, Any]]) -> dict[str, Any]:
    """{job name: input model or None}: what the schedules loader validates entries against."""
    return {job.name: job.input for job in jobs.values()}
