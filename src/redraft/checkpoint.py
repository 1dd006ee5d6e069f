"""Checkpoints: a folder with config.json + model.safetensors + tokenizer files (+ train_state.pt).

A run folder holds checkpoints as `ckpt-<step>/` subfolders. Each is written into a temporary
folder first, flushed to disk (fsync) and renamed into place, so a folder named ckpt-* is
complete even after a SIGKILL or a power cut; a crash mid-write leaves only a `.tmp-*` folder
that nothing trusts (and the next save clears). Resuming still checks each file
(`load_train_state`), so a checkpoint torn some other way (a partial copy) is skipped by
`--resume auto` rather than trusted.
`model.safetensors` holds the weights to use for inference (the EMA weights when EMA is on);
`train_state.pt` holds what exact resumption needs: raw weights, optimizer, EMA, RNG, step.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from redraft.config import Config, config_from_dict
from redraft.data import Tokenizer, load_tokenizer
from redraft.errors import RedraftError
from redraft.models import Transformer

FORMAT = "redraft-checkpoint"
VERSION = 1


@dataclass
class Checkpoint:
    """What load_checkpoint returns: ready-to-use model (eval mode) and its companions."""

    config: Config
    model: Transformer
    tokenizer: Tokenizer
    path: Path
    meta: dict[str, Any]


def weights_to_save(model: Transformer, params: dict[str, torch.Tensor] | None = None):
    """Named tensors to store: each parameter once (tied weights once) plus persistent buffers."""
    params = params if params is not None else dict(model.named_parameters())
    out = {name: t.detach().contiguous().cpu() for name, t in params.items()}
    persistent = set(model.state_dict())
    for name, buf in model.named_buffers():
        if name in persistent:
            out[name] = buf.detach().contiguous().cpu()
    return out


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    config: Config,
    model: Transformer,
    tokenizer: Tokenizer,
    inference_params: dict[str, torch.Tensor] | None = None,
    train_state: dict[str, Any] | None = None,
    extra_meta: dict[str, Any] | None = None,
    keep: int = 2,
) -> Path:
    """Write run_dir/ckpt-<step> atomically and keep only the newest `keep` checkpoints."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    final = run_dir / f"ckpt-{step:08d}"
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-ckpt-", dir=run_dir))
    try:
        meta = {
            "format": FORMAT,
            "version": VERSION,
            "step": step,
            "objective": config.diffusion.objective,
            "vocab_size": model.vocab_size,
            "params": model.num_params(),
            "config": config.to_dict(),
            **(extra_meta or {}),
        }
        save_file(weights_to_save(model, inference_params), str(tmp / "model.safetensors"))
        tokenizer.save(tmp)
        if train_state is not None:
            torch.save(train_state, tmp / "train_state.pt")
        (tmp / "config.json").write_text(json.dumps(meta, indent=2))
        _fsync_folder(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync(run_dir)  # make the rename itself durable
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    for stale in run_dir.glob(".tmp-ckpt-*"):
        shutil.rmtree(stale, ignore_errors=True)
    return final


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems cannot fsync a folder; the rename is still atomic
    finally:
        os.close(fd)


def _fsync_folder(folder: Path) -> None:
    """Flush every file of `folder`, then the folder itself, to disk."""
    for f in folder.iterdir():
        if f.is_file():
            _fsync(f)
    _fsync(folder)


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    return sorted(p for p in Path(run_dir).glob("ckpt-*") if (p / "config.json").is_file())


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint folder itself, or the newest checkpoint inside a run folder."""
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    found = list_checkpoints(path) if path.is_dir() else []
    if not found:
        raise RedraftError(f"no checkpoint at {str(path)!r}: expected a folder with config.json "
                           "or a run folder with ckpt-* subfolders")
    return found[-1]


def checkpoint_folders(run_dir: str | Path) -> list[Path]:
    """Every ckpt-* folder of a run, complete or not, newest first (for --resume auto)."""
    return sorted(Path(run_dir).glob("ckpt-*"), reverse=True)


def load_train_state(path: Path) -> dict[str, Any]:
    """The training state of checkpoint `path`, after checking that each of its files is there
    and readable; a RedraftError names the first one that is missing or torn."""
    read_meta(path)
    for name in ("model.safetensors", "train_state.pt"):
        if not (path / name).is_file():
            raise RedraftError(f"checkpoint {str(path)!r} has no {name}")
    try:
        with safe_open(str(path / "model.safetensors"), "pt") as f:
            f.keys()
    except (OSError, SafetensorError) as e:
        raise RedraftError(f"checkpoint {str(path)!r}: model.safetensors is unreadable "
                           f"({e})") from None
    load_tokenizer(path)
    try:
        return torch.load(path / "train_state.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for a torn or foreign file
        raise RedraftError(f"cannot resume {str(path)!r}: train_state.pt is unreadable "
                           f"({type(e).__name__}: {e})") from None


def read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise RedraftError(f"checkpoint {str(path)!r}: config.json is unreadable ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RedraftError(f"checkpoint {str(path)!r}: config.json is not a redraft checkpoint "
                           f"(format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise RedraftError(f"checkpoint {str(path)!r} has format version {meta.get('version')!r}; "
                           f"this redraft reads version {VERSION}")
    return meta


def load_weights(model: Transformer, file: Path) -> None:
    """Load safetensors weights into model, with clear errors for missing or misshapen tensors."""
    try:
        tensors = load_file(str(file))
    except (OSError, SafetensorError) as e:
        raise RedraftError(f"checkpoint weights {str(file)!r} are unreadable ({e})") from None
    expected = weights_to_save(model)
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise RedraftError(f"checkpoint weights {str(file)!r} do not fit the model: missing "
                           f"{missing[:5]}, unexpected {unexpected[:5]}")
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise RedraftError(f"checkpoint weights {str(file)!r}: tensor {name!r} has shape "
                               f"{tuple(tensor.shape)}, the config expects "
                               f"{tuple(expected[name].shape)}")
    model.load_state_dict(tensors, strict=False)


def build_model(config: Config, vocab_size: int) -> Transformer:
    d = config.diffusion
    return Transformer(config.model, vocab_size, causal=d.objective == "ar",
                       block_size=d.block_size if d.objective == "block" else None)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint (or a run folder's newest) for inference: EMA weights, eval mode."""
    path = resolve_checkpoint(path)
    meta = read_meta(path)
    config = config_from_dict(meta.get("config", {}))
    tokenizer = load_tokenizer(path)
    if tokenizer.vocab_size != meta.get("vocab_size"):
        raise RedraftError(f"checkpoint {str(path)!r}: tokenizer has {tokenizer.vocab_size} "
                           f"tokens but the model was built for {meta.get('vocab_size')}")
    model = build_model(config, tokenizer.vocab_size)
    load_weights(model, path / "model.safetensors")
    model.to(device).eval()
    return Checkpoint(config, model, tokenizer, path, meta)
