"""The run-list query (``list_runs_page`` and ``count_runs``), written once for both backends.

A page must cost the same at 10^3 and 10^6 runs, so every query is driven by an index whose order is
the page's order (creation order, newest first) and stops after ``limit`` rows:

* a label filter drives from ``run_labels (key, value, seq)``, except the label ``schedule``, which
  is the ``schedule_name`` column (schema v15) and filters as the schedule does;
* else a schedule filter from ``runs_schedule (schedule_name, seq)``;
* else job and status filters from ``runs_job_status`` / ``runs_job`` / ``runs_status``: one walk
  per (job, status) pair, each ordered and limited, merged by an outer ``ORDER BY ... LIMIT`` over
  at most pairs x limit rows (an ``IN`` list over the leading columns would make the database sort
  every matching run instead);
* else the primary key, newest first.

The other filters are checked on the rows the walk visits. ``created_after`` also bounds the walk:
``seq >= (smallest seq of a run created at or after the bound)``, read from ``runs_created``. That
bound is exact, not an estimate (every run created at or after the time has a seq at least that
large), so a walk for "the last hour" stops where the last hour starts instead of reading the whole
history when fewer than ``limit`` runs match.

``count_runs`` uses the same walks, each limited to ``cap + 1`` rows: counting stops at the cap.

SQLite gets ``INDEXED BY`` on each walk (its planner otherwise sometimes prefers the primary key
and filters); PostgreSQL's planner picks the same indexes from the same query shape.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from ..errors import InvalidArgumentError
from .records import RunQuery

Dialect = Literal["sqlite", "postgres"]


def parse_cursor(cursor: str | None) -> int | None:
    """The position a cursor stands for; InvalidArgumentError for anything a page did not hand out."""
    if cursor is None:
        return None
    if not cursor.isdigit() or len(cursor) > 19:
        raise InvalidArgumentError(f"invalid cursor {cursor!r} (use the `next` value of a previous page)")
    return int(cursor)


SCHEDULE_LABEL = "schedule"
"""A run's label ``schedule`` is its ``schedule_name`` column (every insert sets the column from it),
so it has no rows in the labels index (schema v15): a filter on it is a schedule filter."""


def labels_indexed(labels: Mapping[str, str]) -> bool:
    """Whether a new run with these labels has rows in the labels index."""
    return any(key != SCHEDULE_LABEL for key in labels)


def _schedule_label_as_column(query: RunQuery) -> RunQuery | None:
    """``query`` with a ``schedule`` label filter moved to the schedule filter (None: the two
    disagree, so no run can match)."""
    if SCHEDULE_LABEL not in query.labels:
        return query
    name = query.labels[SCHEDULE_LABEL]
    if query.schedule is not None and query.schedule != name:
        return None
    labels = {k: v for k, v in query.labels.items() if k != SCHEDULE_LABEL}
    return dataclasses.replace(query, schedule=name, labels=labels)


def _matchable(query: RunQuery) -> tuple[RunQuery, list[str] | None] | None:
    """The query as the walks take it (the schedule label as the schedule filter) and its jobs
    (see :func:`effective_jobs`); None when no run can match."""
    normal = _schedule_label_as_column(query)
    if normal is None:
        return None
    jobs = effective_jobs(normal)
    if jobs is not None and not jobs:
        return None
    return normal, jobs


def effective_jobs(query: RunQuery) -> list[str] | None:
    """The jobs a run may belong to (None: any); an empty list means nothing can match."""
    jobs = list(dict.fromkeys(query.job_names))
    if query.job_name is None:
        return jobs or None
    if not jobs:
        return [query.job_name]
    return [query.job_name] if query.job_name in jobs else []


@dataclass
class _Sql:
    dialect: Dialect
    time: Callable[[Any], Any]
    params: list[Any] = field(default_factory=list)

    def p(self, value: Any) -> str:
        self.params.append(value)
        return "?" if self.dialect == "sqlite" else f"${len(self.params)}"


def _qualified(columns: str) -> str:
    return ", ".join("r." + c.strip() for c in columns.split(","))


def _branches(query: RunQuery, jobs: list[str] | None) -> tuple[str, list[dict[str, Any]]]:
    """(driving kind, one dict of equality values per walk)."""
    if query.labels:
        key, value = next(iter(query.labels.items()))
        return "label", [{"key": key, "value": value}]
    if query.schedule is not None:
        return "schedule", [{"schedule_name": query.schedule}]
    statuses = list(dict.fromkeys(query.statuses))
    if jobs and statuses:
        return "runs_job_status", [{"job_name": j, "status": s} for j in jobs for s in statuses]
    if jobs:
        return "runs_job", [{"job_name": j} for j in jobs]
    if statuses:
        return "runs_status", [{"status": s} for s in statuses]
    return "all", [{}]


def _walk(
    sql: _Sql,
    query: RunQuery,
    jobs: list[str] | None,
    kind: str,
    equal: dict[str, Any],
    select: str,
    limit: int,
    before_seq: int | None,
) -> str:
    sqlite = sql.dialect == "sqlite"
    where: list[str] = []
    order = "r.seq"
    if kind == "label":
        where += [f"l.key = {sql.p(equal['key'])}", f"l.value = {sql.p(equal['value'])}"]
        order = "l.seq"
        only_label = (
            jobs is None and not query.statuses and query.schedule is None and len(query.labels) == 1
            and query.created_after is None and query.before_created is None
        )  # fmt: skip
        if select == "r.seq" and only_label:  # a count of one label: the labels index alone
            source, select = "run_labels l", "l.seq"
        elif sqlite:
            source = "run_labels l CROSS JOIN runs r"
            where.append("r.seq = l.seq")
        else:
            source = "run_labels l JOIN runs r ON r.seq = l.seq"
    elif kind == "schedule":
        source = "runs AS r INDEXED BY runs_schedule" if sqlite else "runs r"
        where.append(f"r.schedule_name = {sql.p(equal['schedule_name'])}")
    elif kind == "all":
        source = "runs AS r"
    else:
        source = f"runs AS r INDEXED BY {kind}" if sqlite else "runs r"
        where += [f"r.{column} = {sql.p(value)}" for column, value in equal.items()]
    # The remaining filters, checked on the rows the walk visits.
    if kind not in ("runs_job_status", "runs_job") and jobs is not None:
        where.append(f"r.job_name IN ({', '.join(sql.p(j) for j in jobs)})")
    if kind not in ("runs_job_status", "runs_status") and query.statuses:
        where.append(f"r.status IN ({', '.join(sql.p(s) for s in dict.fromkeys(query.statuses))})")
    if kind != "schedule" and query.schedule is not None:
        where.append(f"r.schedule_name = {sql.p(query.schedule)}")
    for i, (key, value) in enumerate(query.labels.items()):
        if kind == "label" and i == 0:
            continue
        where.append(
            f"EXISTS (SELECT 1 FROM run_labels x WHERE x.key = {sql.p(key)} AND x.value = {sql.p(value)} "
            "AND x.seq = r.seq)"
        )
    if query.created_after is not None:
        after = sql.time(query.created_after)
        hint = " INDEXED BY runs_created" if sqlite else ""
        where.append(f"r.created_at >= {sql.p(after)}")
        first = f"SELECT min(c.seq) FROM runs AS c{hint} WHERE c.created_at >= {sql.p(after)}"
        where.append(f"{order} >= ({first})")
    if query.before_created is not None:
        where.append(f"r.created_at < {sql.p(sql.time(query.before_created))}")
    if before_seq is not None:
        where.append(f"{order} < {sql.p(before_seq)}")
    clause = f" WHERE {' AND '.join(where)}" if where else ""
    return f"SELECT {select} FROM {source}{clause} ORDER BY {order} DESC LIMIT {sql.p(limit)}"


def page_sql(
    query: RunQuery, columns: str, dialect: Dialect, time: Callable[[Any], Any]
) -> tuple[str, list[Any]] | None:
    """(sql, params) selecting ``seq`` then ``columns`` for one page plus one row (to tell whether
    another page follows); None when no run can match."""
    matchable = _matchable(query)
    if matchable is None:
        return None
    query, jobs = matchable
    before_seq = parse_cursor(query.cursor)
    limit = max(0, query.limit) + 1
    sql = _Sql(dialect, time)
    kind, walks = _branches(query, jobs)
    select = f"r.seq AS seq, {_qualified(columns)}"
    parts = [_walk(sql, query, jobs, kind, equal, select, limit, before_seq) for equal in walks]
    if len(parts) == 1:
        return parts[0], sql.params
    union = " UNION ALL ".join(f"SELECT * FROM ({part}) AS w{i}" for i, part in enumerate(parts))
    return f"SELECT * FROM ({union}) AS u ORDER BY seq DESC LIMIT {sql.p(limit)}", sql.params


def count_sql(
    query: RunQuery, dialect: Dialect, time: Callable[[Any], Any], cap: int
) -> tuple[str, list[Any]] | None:
    """(sql, params) counting matching runs, each walk stopping after ``cap + 1`` rows."""
    matchable = _matchable(query)
    if matchable is None:
        return None
    query, jobs = matchable
    sql = _Sql(dialect, time)
    kind, walks = _branches(query, jobs)
    counts = [
        f"(SELECT count(*) FROM ({_walk(sql, query, jobs, kind, equal, 'r.seq', cap + 1, None)}) AS c{i})"
        for i, equal in enumerate(walks)
    ]
    return "SELECT " + " + ".join(counts), sql.params


def next_cursor(rows: Sequence[Any], limit: int) -> str | None:
    """The cursor after a page: the seq of its last row, when one more row was found."""
    if len(rows) <= limit or limit <= 0:
        return None
    return str(rows[limit - 1][0])
