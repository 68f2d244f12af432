"""``durably-sched migrate`` and ``durably-sched healthcheck``."""

from __future__ import annotations

import http.client
import urllib.error
import urllib.request

import click

from ..durably import create_durably
from ._base import (
    EXIT_FAILURE,
    EXIT_OK,
    HTTP_ADDRESS,
    SECONDS,
    CliCommand,
    CliError,
    HttpAddress,
    redact_url,
    settings,
)


@click.command(
    "migrate",
    cls=CliCommand,
    epilog="""\b
Examples:
  durably-sched migrate
  durably-sched --database postgresql://durably@db:5432/durably migrate

\b
Idempotent and safe when several processes run it at once. `serve` migrates at start
as well; run this first when upgrading several instances.""",
)
async def migrate() -> None:
    """Create the database schema, or bring it up to this version."""
    url = settings().database
    durably = create_durably(url)
    try:
        version = await durably.migrate()
    finally:
        await durably.close()
    click.echo(f"database schema is at version {version} ({redact_url(url)})")


@click.command(
    "healthcheck",
    cls=CliCommand,
    epilog="""\b
Examples:
  durably-sched healthcheck --http 127.0.0.1:9464
  durably-sched healthcheck --ready          # address from DURABLY_HTTP

\b
Exit 0 when the endpoint answers 200, 1 otherwise. A wildcard address (0.0.0.0, ::)
is checked on loopback, so the value given to `serve --http` works here as is.""",
)
@click.option(
    "--http",
    "address",
    type=HTTP_ADDRESS,
    envvar="DURABLY_HTTP",
    metavar="HOST:PORT",
    help="Where `serve --http` listens (env DURABLY_HTTP).",
)
@click.option(
    "--ready", is_flag=True, help="Check /readyz (database, schema, scheduler) instead of /healthz."
)
@click.option("--timeout", type=SECONDS, default=5.0, show_default=True, metavar="SECONDS")
def healthcheck(address: HttpAddress | None, ready: bool, timeout: float) -> int:
    """Ask a running `serve` whether it is alive (/healthz) or ready (/readyz)."""
    if address is None:
        raise CliError("no address to check: pass --http HOST:PORT or set DURABLY_HTTP")
    if address.port == 0:
        raise CliError("--http: port 0 is not an address to check; give the port serve logged")
    url = f"http://{address.local}/{'readyz' if ready else 'healthz'}"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = response.status
            body = response.read(500).decode("utf-8", "replace")
    except urllib.error.HTTPError as exc:
        status = exc.code
        body = exc.read(500).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", None) or exc
        click.echo(f"unhealthy: {url}: {reason}", err=True)
        return EXIT_FAILURE
    text = " ".join(body.split())[:200]
    if status == 200:
        click.echo(f"healthy: {url}: {text or status}")
        return EXIT_OK
    click.echo(f"unhealthy: {url}: HTTP {status} {text}", err=True)
    return EXIT_FAILURE
