"""Evaluation: likelihood bounds (more metrics plug in here)."""

from redraft.likelihood import evaluate, evaluate_model

__all__ = ["evaluate", "evaluate_model"]
