"""Store contract: text that has no UTF-8 form, on SQLite and on PostgreSQL.

A string holding a lone surrogate (``"\\ud800"``) cannot be sent to either database. The facade
refuses it first, naming the field; the store is the backstop for every other path: both backends
raise InvalidArgumentError (never a UnicodeEncodeError, nor a StoreError that would read as "the
database is unavailable"), write nothing, and go on serving the other writes of the same moment.
"""

from __future__ import annotations

import asyncio
import uuid

import pytest

from durably_sched.errors import InvalidArgumentError
from durably_sched.store.base import NewRun, RunQuery, Store

BAD = "\ud800"


def _run(**fields: object) -> NewRun:
    options: dict[str, object] = {"id": str(uuid.uuid4()), "job_name": "job", "input": {}, **fields}
    return NewRun(**options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields",
    [{"labels": {"team": BAD}}, {"idempotency_key": BAD}, {"concurrency_key": BAD}, {"input": {"a": BAD}}],
    ids=["label", "idempotency-key", "concurrency-key", "input"],
)
async def test_a_write_with_text_that_has_no_utf8_form_is_refused_and_the_others_go_through(
    store: Store, fields: dict[str, object]
) -> None:
    good = _run()
    results = await asyncio.gather(
        store.create_runs([_run(**fields)]), store.create_runs([good]), return_exceptions=True
    )
    assert isinstance(results[0], InvalidArgumentError), results[0]
    assert "not valid Unicode" in str(results[0])
    assert not isinstance(results[1], BaseException), results[1]
    assert [r.id for r in await store.list_runs(RunQuery(limit=10))] == [good.id]


async def test_reads_and_operator_writes_with_such_text_are_invalid_arguments(store: Store) -> None:
    calls = [
        lambda: store.get_run(BAD),
        lambda: store.find_run_ids(BAD, 5),
        lambda: store.list_runs(RunQuery(job_name=BAD)),
        lambda: store.list_runs(RunQuery(labels={"a": BAD})),
        lambda: store.get_logs(BAD),
        lambda: store.cancel_run(BAD),
        lambda: store.retry_run(BAD),
        lambda: store.delete_run(BAD),
        lambda: store.get_schedule_state(BAD),
    ]
    for call in calls:
        with pytest.raises(InvalidArgumentError, match="not valid Unicode"):
            await call()
    assert await store.get_run(str(uuid.uuid4())) is None  # the store still answers
