"""redraft: diffusion language models — train, sample, measure (and soon serve), CPU first."""

__version__ = "0.1.0"
