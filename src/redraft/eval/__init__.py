"""Evaluation: likelihood bounds (more metrics plug in here)."""

from redraft.eval.likelihood import evaluate, evaluate_model

__all__ = ["evaluate", "evaluate_model"]
