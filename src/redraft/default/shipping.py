"""Shipping: a training checkpoint -> the form the package holds (redraft/default/): the
same checkpoint folder with bf16 weights, no training state and the training facts recorded.
(Its own module: redraft.checkpoint reads redraft.default's names, this writes checkpoints.)"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from redraft.errors import RedraftError


def ship(checkpoint: str | Path, dest: str | Path, dtype: str = "bfloat16") -> Path:
    """Write a training checkpoint (a checkpoint folder or a run folder: its newest checkpoint)
    into `dest` in shipped form: floating-point weights cast to `dtype`, no training state, the
    config's machine-specific paths cleared, training facts recorded under `shipped`.

    Written into a temporary folder beside `dest`, then renamed into place (a folder already
    at `dest` is replaced only once the new one is complete). Returns `dest`.
    """
    import torch
    from safetensors.torch import save_file

    from redraft.checkpoint import DTYPES, load_checkpoint, sha256_file, weights_to_save
    from redraft.files import user_modes

    if dtype not in DTYPES:
        raise RedraftError(f"dtype {dtype!r}: expected one of {list(DTYPES)}")
    ck = load_checkpoint(checkpoint)
    if ck.meta.get("weights_dtype", "float32") != "float32":
        raise RedraftError(f"checkpoint {str(ck.path)!r} is already a shipped copy "
                           f"({ck.meta['weights_dtype']} weights): ship the training checkpoint")
    config = ck.config
    config.data.cache_dir = None  # the training machine's folders mean nothing elsewhere
    config.train.init_from = None
    elapsed = training_seconds(ck.path, ck.meta.get("step"))
    facts = {
        "source": f"{ck.path.resolve().parent.name}/{ck.path.name}",
        "objective": config.diffusion.objective,
        "step": ck.meta.get("step"),
        "train_seconds": round(elapsed, 3) if elapsed is not None else None,
        "tokens_seen": (ck.meta["step"] * config.train.batch_size * config.model.seq_len
                        if isinstance(ck.meta.get("step"), int) else None),
        "train_device": config.train.device,
        "params": ck.model.num_params(),
    }
    cast = getattr(torch, dtype)
    tensors = {n: t.to(cast) if t.is_floating_point() else t
               for n, t in weights_to_save(ck.model).items()}
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{dest.name}-", dir=dest.parent))
    old = dest.with_name(f".old-{dest.name}")
    try:
        save_file(tensors, str(tmp / "model.safetensors"))
        ck.tokenizer.save(tmp)
        meta = {k: v for k, v in ck.meta.items() if k not in ("files", "config")}
        meta.update(config=config.to_dict(), weights_dtype=dtype, shipped=facts)
        meta["files"] = {f.name: sha256_file(f) for f in sorted(tmp.iterdir()) if f.is_file()}
        (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
        user_modes(tmp)
        shutil.rmtree(old, ignore_errors=True)
        if dest.exists():
            os.replace(dest, old)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    shutil.rmtree(old, ignore_errors=True)
    return dest


def training_seconds(path: Path, step) -> float | None:
    """Seconds of training behind checkpoint `path`: its train_state.pt's `elapsed`, else the
    run's metrics.jsonl (the last record at or before `step`: a checkpoint copied off a training
    machine often leaves its large train_state.pt behind); None when neither says."""
    import torch

    state_file = path / "train_state.pt"
    if state_file.is_file():
        state = torch.load(state_file, map_location="cpu", weights_only=True)
        if state.get("elapsed") is not None:
            return float(state["elapsed"])
    metrics = path.parent / "metrics.jsonl"
    if not metrics.is_file() or not isinstance(step, int):
        return None
    found = None
    for line in metrics.read_text().splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line torn by a crash
        if isinstance(record, dict) and record.get("step", step + 1) <= step \
                and isinstance(record.get("elapsed_s"), (int, float)):
            found = float(record["elapsed_s"])
    return found
