"""What a command may replace in the folders it writes: never a user's work by accident.

A run folder holds a run's checkpoints and log. Training into one that already holds a run
would replace them (and, into a longer run, mix two runs: `sample` then picks the old run's
newest checkpoint), so it is refused unless the user continues it (`--resume auto`) or asks
for a fresh start with `--overwrite`, which moves the old run aside (`<folder>.old-N`) and
never deletes it. `export --force` replaces only an earlier export; `bench --out` only an
earlier bench's report.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from redraft.errors import RedraftError

REPORT_FILES = ("report.md", "eval.json", "quality_vs_calls.png", "frontier.png",
                "roofline.png", "crossover.png")


def run_contents(run_dir: str | Path) -> list[str]:
    """The names in `run_dir` that belong to a training run (checkpoints, the log, a
    checkpoint moved aside mid-save), sorted; [] for a missing or unrelated folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    return sorted(p.name for p in run_dir.iterdir()
                  if p.name == "metrics.jsonl" or (p.is_dir() and (
                      p.name.startswith("ckpt-") or p.name.startswith(".old-ckpt-"))))


def describe(names: list[str]) -> str:
    ckpts = [n for n in names if n.startswith("ckpt-")]
    parts = [f"{len(ckpts)} checkpoint{'s' if len(ckpts) != 1 else ''} (newest "
             f"{ckpts[-1]})"] if ckpts else []
    if "metrics.jsonl" in names:
        parts.append("metrics.jsonl")
    return " and ".join(parts) or ", ".join(names)


def aside_name(folder: str | Path) -> Path:
    """`<folder>.old-N` with the first N not taken (absolute: `.` has no sibling name)."""
    folder = Path(folder).absolute()
    n = 1
    while (target := folder.with_name(f"{folder.name}.old-{n}")).exists():
        n += 1
    return target


def move_aside(folder: str | Path) -> Path:
    """Rename `folder` to `<folder>.old-N` (atomic, nothing copied or deleted); returns where."""
    target = aside_name(folder)
    os.replace(Path(folder).absolute(), target)
    return target


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _local_path(spec) -> Path | None:
    """A checkpoint spec as a local path; None for the shipped models and hf: specs."""
    text = str(spec)
    if text in ("default", "default-ar") or text.startswith("hf:"):
        return None
    return Path(text)


def check_run_dir(out_dir: str | Path, resume, init_from, overwrite: bool) -> None:
    """Refuse, before any work, a training run that would replace or mix into another run.

    Fresh start (no resume) into a folder holding a run: refused without `overwrite`;
    train.init_from inside train.out_dir: refused (the new run would replace the checkpoints
    it starts from); --resume of one run into a train.out_dir holding another: refused.
    """
    run_dir = Path(out_dir)
    if overwrite and resume is not None:
        raise RedraftError("--overwrite starts afresh and --resume continues: give one of them")
    init = _local_path(init_from) if init_from and resume is None else None
    if init is not None and _inside(init, run_dir):
        raise RedraftError(f"train.init_from={str(init_from)!r} is inside train.out_dir="
                           f"{str(out_dir)!r}: the new run would replace the checkpoints it "
                           "starts from; choose a new train.out_dir")
    found = run_contents(run_dir)
    if not found:
        return
    if resume is None and not overwrite:
        raise RedraftError(
            f"train.out_dir {str(out_dir)!r} already holds a run ({describe(found)}): continue "
            "it with --resume auto, train into a new train.out_dir, or give --overwrite to move "
            f"it aside (to {str(aside_name(run_dir))!r}) and start afresh")
    source = _local_path(resume) if resume is not None and str(resume) != "auto" else None
    if source is not None and not _inside(source, run_dir):
        raise RedraftError(
            f"--resume {str(resume)!r} would continue into train.out_dir {str(out_dir)!r}, which "
            f"holds another run ({describe(found)}): set train.out_dir to the run being resumed "
            "or to a new folder")


def check_report_dir(out: str | Path, what: str) -> None:
    """A bench report replaces report.md, eval.json and plots in `out`: only an earlier
    bench's (its eval.json names the machine and the runs)."""
    out = Path(out)
    taken = [name for name in REPORT_FILES if (out / name).exists()]
    if not taken:
        return
    try:
        earlier = json.loads((out / "eval.json").read_text(encoding="utf-8"))
        ours = isinstance(earlier, dict) and {"machine", "runs"} <= set(earlier)
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise RedraftError(f"{what} {str(out)!r} holds {', '.join(taken)} that an earlier "
                           "`redraft bench` did not write: choose another folder")


def _flat(values: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _resumed_checkpoint(cfg, resume) -> tuple[Path, dict] | None:
    """(checkpoint, its saved config) that --resume continues, or None (auto, nothing yet).
    A torn newest checkpoint is passed over here; training itself warns about it."""
    from redraft.checkpoint import list_checkpoints, read_meta, resolve_checkpoint

    candidates = (list(reversed(list_checkpoints(cfg.train.out_dir))) if str(resume) == "auto"
                  else [resolve_checkpoint(resume)])
    for ckpt in candidates:
        try:
            saved = read_meta(ckpt).get("config")
        except RedraftError:
            if str(resume) != "auto":
                raise
            continue
        if isinstance(saved, dict):
            return ckpt, saved
    return None


def resume_config(cfg, overrides: list[str], resume):
    """The config a resumed run trains with, and a line saying which settings it uses.

    A run keeps its own settings (the config saved in its checkpoint: the overrides it was
    started with included, e.g. train.time_budget_s=60) unless this command line overrides
    them again; the config file's values that differ from the run's are not applied, and the
    line names them. `cfg` is the config file + overrides; (cfg, None) for no resume or a
    fresh start of --resume auto.
    """
    from redraft.config import config_from_dict, merge, parse_overrides

    found = _resumed_checkpoint(cfg, resume) if resume is not None else None
    if found is None:
        return cfg, None
    ckpt, saved = found
    explicit = parse_overrides(list(overrides))
    values = merge(saved, explicit)
    if "out_dir" not in explicit.get("train", {}):
        # Continue where the checkpoint lives: the folder --resume auto looked in, or the run
        # folder of the checkpoint named (a lone checkpoint folder: the configured out_dir).
        in_run = ckpt.name.startswith("ckpt-")
        out_dir = cfg.train.out_dir if str(resume) == "auto" or not in_run else str(ckpt.parent)
        values = merge(values, {"train": {"out_dir": out_dir}})
    resumed = config_from_dict(values)
    now, asked, final = _flat(explicit), _flat(cfg.to_dict()), _flat(resumed.to_dict())
    before = _flat(config_from_dict(saved).to_dict())
    line = f"resuming {str(ckpt)!r} with its run's own settings"
    changed = [f"{k}={final[k]!r} (was {before[k]!r})" for k in now
               if k in final and k in before and final[k] != before[k] and k != "train.out_dir"]
    if changed:
        line += "; overridden now: " + ", ".join(changed)
    ignored = [f"{k}={asked[k]!r} (the run's: {final[k]!r})" for k in sorted(asked)
               if k in final and asked[k] != final[k] and k not in now and k != "train.out_dir"]
    if ignored:
        line += ("; not applied (give them as key=value to change the run): "
                 + ", ".join(ignored))
    return resumed, line
