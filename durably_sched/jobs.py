"""Job definitions: a name, optional pydantic input/output models and the async function to run."""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic

from pydantic import BaseModel, ValidationError
from typing_extensions import TypeVar

from .codec import encode_json_value
from .errors import ArgumentTypeError, InputValidationError, InvalidArgumentError, StepError
from .retry import Retry, RetryPolicyError, timeout_seconds

if TYPE_CHECKING:
    from .step import Step

# Defaults (PEP 696) let `define_job(name=..., run=...)` without models type-check as is.
I = TypeVar("I", bound=BaseModel, default=BaseModel)  # noqa: E741
O = TypeVar("O", bound=BaseModel, default=BaseModel)  # noqa: E741
JOB_NAME = re.compile(r"^[A-Za-z0-9_.:-]+$")


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming the first failing field: ``field 'a.b': Input should be a valid integer``."""
    errors = exc.errors(include_url=False)
    if not errors:
        return str(exc).splitlines()[0]
    first = errors[0]
    loc = ".".join(str(part) for part in first.get("loc", ()))
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    where = f"field '{loc}': " if loc else ""
    return f"{where}{first.get('msg', 'invalid')}{more}"


@dataclass(frozen=True, eq=False)
class JobDefinition(Generic[I, O]):
    """What ``define_job`` returns. Register it on a Durably instance to run it."""

    name: str
    run: Callable[[Step, Any], Awaitable[Any]]
    input: type[I] | None = None
    output: type[O] | None = None
    description: str | None = None
    retry: Retry | None = None
    """Automatic retries of failed runs (None: a failed run stays failed until retried by hand)."""
    timeout: float | None = None
    """Seconds one attempt of a run may take (None: no limit)."""

    def validate_input(self, raw: Any) -> dict[str, Any]:
        """The stored (JSON) form of a trigger's input; raises InputValidationError."""
        if self.input is None:
            if raw is None:
                return {}
            if not isinstance(raw, Mapping):
                raise InputValidationError(f"job '{self.name}': input must be a JSON object")
            try:
                encoded = encode_json_value(dict(raw))
            except StepError as exc:
                raise InputValidationError(f"job '{self.name}': input {exc}") from None
            return encoded[1]  # type: ignore[no-any-return]
        try:
            model = raw if isinstance(raw, self.input) else self.input.model_validate(raw)
        except ValidationError as exc:
            raise InputValidationError(
                f"job '{self.name}': invalid input: {describe_validation_error(exc)}"
            ) from None
        return model.model_dump(mode="json")

    def parse_input(self, stored: dict[str, Any]) -> Any:
        """The value handed to the job function: a model instance, or the dict."""
        if self.input is None:
            return stored
        return self.input.model_validate(stored)

    def validate_output(self, result: Any) -> tuple[Any, Any]:
        """(value for listeners/waiters, stored JSON form); raises InputValidationError."""
        if self.output is None:
            if result is not None and not isinstance(result, Mapping | BaseModel):
                raise InputValidationError(
                    f"job '{self.name}' returned {type(result).__name__}; "
                    "return a dict or define an output model"
                )
            if result is None:
                return None, None
            try:
                _, stored = encode_json_value(result)
            except StepError as exc:
                raise InputValidationError(f"job '{self.name}' output {exc}") from None
            return stored, stored
        try:
            model = (
                result
                if isinstance(result, self.output)
                else self.output.model_validate(
                    result.model_dump() if isinstance(result, BaseModel) else result
                )
            )
        except ValidationError as exc:
            raise InputValidationError(
                f"job '{self.name}' returned invalid output: {describe_validation_error(exc)}"
            ) from None
        return model, model.model_dump(mode="json")

    def parse_output(self, stored: Any) -> Any:
        if self.output is None or stored is None:
            return stored
        return self.output.model_validate(stored)


def define_job(
    *,
    name: str,
    run: Callable[[Step, Any], Awaitable[Any]],
    input: type[I] | None = None,
    output: type[O] | None = None,
    description: str | None = None,
    retry: Retry | None = None,
    timeout: float | timedelta | str | None = None,
) -> JobDefinition[I, O]:
    """Define a job. ``run(step, payload)`` receives the validated input model (or a dict).

    ``run`` must be an ``async def`` function; a plain (sync) function is refused here, with a
    TypeError saying so, rather than failing at its first run. Blocking code belongs in steps:
    ``await step.run("name", sync_function)`` runs it in a thread and checkpoints its result.

    ``retry``: a :class:`Retry` policy for failed runs (schedules and triggers may override it).
    ``timeout``: how long one attempt of a run may take (seconds, a timedelta or ``"2h"``); an
    attempt that takes longer fails with ``RunTimeoutError``, which the retry policy treats like
    any other failure.
    """
    if not JOB_NAME.match(name):
        raise InvalidArgumentError(f"job name {name!r}: use letters, digits and _ . : -")
    for label, model in (("input", input), ("output", output)):
        if model is not None and not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ArgumentTypeError(f"job {name!r}: {label} must be a pydantic BaseModel subclass")
    if not callable(run):
        raise ArgumentTypeError(f"job {name!r}: run must be an async function (step, payload)")
    if not _is_async(run):
        what = getattr(run, "__qualname__", None) or type(run).__name__
        raise ArgumentTypeError(
            f"job {name!r}: run must be an async function (async def {_plain_name(run)}(step, payload)), "
            f"but {what} is a plain function; sync work goes inside a step: "
            "await step.run('name', sync_function) runs it in a thread"
        )
    if retry is not None and not isinstance(retry, Retry):
        raise ArgumentTypeError(
            f"job {name!r}: retry must be a Retry(...) policy (got {type(retry).__name__})"
        )
    try:
        seconds = timeout_seconds(timeout)
    except RetryPolicyError as exc:
        raise InvalidArgumentError(f"job {name!r}: {exc}") from None
    return JobDefinition(
        name=name,
        run=run,
        input=input,
        output=output,
        description=description,
        retry=retry,
        timeout=seconds,
    )


def _is_async(fn: Callable[..., Any]) -> bool:
    """``async def`` functions, partials and wrappers of them, and objects with ``async __call__``.

    A plain function is refused even if it happens to return an awaitable (a lambda calling an async
    function): whether it does cannot be known before it runs, and the job would fail only then.
    """
    candidates = [fn, inspect.unwrap(fn), getattr(fn, "__call__", None)]  # noqa: B004
    return any(c is not None and inspect.iscoroutinefunction(c) for c in candidates)


def _plain_name(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__name__", "run")
    return name if name.isidentifier() else "run"
