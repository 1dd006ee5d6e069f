"""redraft serve: an OpenAI-shaped HTTP API over a step-level batching engine.

jobs.py (what a request is), engine.py (the tick loop), cohort.py (the AR twin's lockstep
groups), metrics.py, schemas.py (request bodies), app.py (routes, SSE), static/index.html.
Importing this package needs the `serve` extra (fastapi, uvicorn).
"""

from redraft.serve.app import create_app, run
from redraft.serve.engine import Engine, QueueFull, Unavailable
from redraft.serve.jobs import Event, Job, Work

__all__ = ["Engine", "Event", "Job", "QueueFull", "Unavailable", "Work", "create_app", "run"]
