"""Who is a worker, and when is one certainly dead: the host identity and the process checks.

Every worker registers in the store (``workers`` table) with its host, pid and the process's start
time. That lets a worker on the **same host** resume a dead worker's runs as soon as the death is
certain, instead of waiting for the lease to expire (the stale threshold, 30 s by default).

"Same host" must mean that a pid names the same process for both workers: the same machine, the
same boot and the same pid namespace. Two containers on one machine can share a host name (host
networking) while their pids are unrelated, so a pid is only ever compared when the
**host key** -- host name, boot id (``/proc/sys/kernel/random/boot_id``) and pid namespace
(``/proc/self/ns/pid``) -- is equal. Where any part is unknown (not Linux, no /proc) the key is
None and no takeover is ever early.

A holder is *gone* only when one of these is certain:

* ``kill(pid, 0)`` says no such process (ProcessLookupError; a permission error means it exists);
* the process with that pid is a zombie (it exited; nothing it does can reach the database);
* the process with that pid started at another time than the registered one (the pid was reused).

The last two read ``/proc/<pid>/stat``, and only when ``/proc`` shows this process's own pid
namespace. A SIGSTOPped process is alive (state ``T``) and is never taken over early. A reused pid
whose start time cannot be read looks alive: pid reuse can only delay a takeover, never make it
early. A host that rebooted has a new boot id, so its old workers never match a key: their leases
simply expire (a reboot takes longer than a lease anyway, and machines cloned from one image may
share a host name and machine id). Fencing stays the final guarantee: a holder that was wrongly
thought dead could still write nothing once its run is claimed again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .store.base import WorkerRecord

__all__ = [
    "HostIdentity",
    "check_processes",
    "found_gone",
    "host_identity",
    "process_gone",
    "process_start",
    "worker_fields",
]


@dataclass(frozen=True, slots=True)
class HostIdentity:
    host: str
    host_key: str | None
    pid: int
    process_start: str | None


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            return fh.read().strip()
    except OSError:
        return None


def _host_key(host: str) -> str | None:
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return None
    if not boot or not namespace:
        return None
    return f"{host}|{boot}|{namespace}"


@functools.cache
def _proc_is_ours() -> bool:
    """Whether ``/proc`` shows this process's pid namespace (so /proc/<pid> means our pid)."""
    try:
        return os.readlink("/proc/self") == str(os.getpid())
    except OSError:
        return False


def _stat(pid: int) -> tuple[str, str] | None:
    """(state, start time in clock ticks since boot) from /proc/<pid>/stat, or None."""
    if not _proc_is_ours():
        return None
    text = _read(f"/proc/{pid}/stat")
    if not text:
        return None
    # "pid (comm) state ppid ...": comm may hold spaces and parentheses; it ends at the last ')'.
    fields = text[text.rfind(")") + 2 :].split()
    if len(fields) < 20:
        return None
    return fields[0], fields[19]  # state is field 3, starttime field 22 (both 1-based)


def process_start(pid: int | None = None) -> str | None:
    """The start time of a process (this one by default), as /proc gives it; None if unknown."""
    stat = _stat(os.getpid() if pid is None else pid)
    return None if stat is None else stat[1]


def host_identity() -> HostIdentity:
    """This process's identity for the registry. Computed per call (a forked child has its own)."""
    _proc_is_ours.cache_clear()
    host = socket.gethostname()
    return HostIdentity(host=host, host_key=_host_key(host), pid=os.getpid(), process_start=process_start())


def process_gone(pid: int, started: str | None) -> bool:
    """True only when the process ``pid`` (started at ``started``) has certainly ended.

    Call it only for a pid registered under this host's key (see the module notes).
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, owned by someone else
    except OSError:
        return False
    with contextlib.suppress(Exception):
        stat = _stat(pid)
        if stat is not None:
            state, start = stat
            if state in ("Z", "X"):
                return True  # exited, not yet reaped by its parent
            if started is not None and start != started:
                return True  # the pid now belongs to another process
    return False


def found_gone(worker: WorkerRecord, identity: HostIdentity) -> bool:
    """A registered worker not yet marked gone whose process, on this host, has certainly ended."""
    return (
        identity.host_key is not None
        and worker.host_key == identity.host_key
        and worker.gone_at is None
        and process_gone(worker.pid, worker.process_start)
    )


def check_processes(workers: list[WorkerRecord]) -> list[WorkerRecord]:
    """The registry as read, with the processes of this host's workers checked now: a worker whose
    process ended says ``gone`` at once (``process_gone``), before any worker takes it over."""
    identity = host_identity()
    return [dataclasses.replace(w, process_gone=True) if found_gone(w, identity) else w for w in workers]


def worker_fields(record: WorkerRecord, time: Callable[[datetime | None], str | None]) -> dict[str, Any]:
    """A registry row as JSON fields (``workers list --json``, ``runs show --json``'s holder and the
    HTTP API), its times written by ``time``; ``state`` is live, stale or gone. ``runs_held`` and
    ``runs`` are the runs it holds now; ``heartbeat_runs_held`` what its last heartbeat said."""
    return {
        "id": record.id,
        "state": record.state,
        "host": record.host,
        "pid": record.pid,
        "version": record.version,
        "jobs": list(record.jobs),
        "concurrency": record.concurrency,
        "runs_held": len(record.leased),
        "runs": list(record.leased),
        "heartbeat_runs_held": record.runs_held,
        "lease_seconds": record.lease_seconds,
        "started_at": time(record.started_at),
        "heartbeat_at": time(record.heartbeat_at),
        "heartbeat_age": round(record.heartbeat_age.total_seconds(), 3),
        "gone_at": time(record.gone_at),
        "gone_by": record.gone_by,
        "process_gone": record.process_gone,
    }
