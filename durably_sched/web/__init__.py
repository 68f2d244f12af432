"""The web layer: an ASGI app (Starlette) with the JSON API, the live dashboard and the probes.

* :func:`create_app` builds the app; mount it in any Starlette or FastAPI app, or let
  ``durably-sched serve --http`` serve it (uvicorn on serve's own loop, :mod:`.server`).
* :func:`lifespan` starts and stops the worker and the scheduler inside a host app's lifespan.
"""

from .app import create_app
from .lifespan import DurablyLifespan, lifespan

__all__ = ["DurablyLifespan", "create_app", "lifespan"]
