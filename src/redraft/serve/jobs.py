"""What the server asks the engine for (Work), what it holds per request (Job) and what a
request tells its listener (Event): the decoders' own (redraft.decoders.jobs), which
`Model.generate` runs too."""

from redraft.decoders.jobs import FINAL, Event, Job, Work

__all__ = ["FINAL", "Event", "Job", "Work"]
