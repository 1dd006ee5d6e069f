"""Checkpoints: a folder with config.json + model.safetensors + tokenizer files (+ train_state.pt).

A run folder holds checkpoints as `ckpt-<step>/` subfolders. Each is written into a temporary
folder first, flushed to disk (fsync) and renamed into place, so a folder named ckpt-* is
complete even after a SIGKILL or a power cut; a crash mid-write leaves only a `.tmp-*` folder
that nothing trusts (and the next run clears, `clean_run_dir`). config.json lists a SHA-256 of
every other file (`files`), checked on load, so a checkpoint damaged some other way (flipped
bytes, a partial copy) is refused with a clear error: `--resume auto` then skips it for the one
before, and readers given a run folder fall back to its newest checkpoint that verifies (and
say so on stderr). Checkpoints written before checksums existed still load, unverified, and
so does a file the map lacks (an edited config.json): stderr says so for each (verify_loaded).

Crash-safe retention: a checkpoint being replaced (the same step written again) is first
renamed aside to `.old-ckpt-*`, and old checkpoints are pruned only once the new one is in
place, each renamed to `.tmp-*` before it is deleted, so no `ckpt-*` folder is ever half
deleted and a crash at any point leaves at least one complete checkpoint.
`model.safetensors` holds the weights to use for inference (the EMA weights when EMA is on);
`train_state.pt` holds what exact resumption needs: raw weights, optimizer, EMA, RNG, step.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
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
from redraft.files import user_modes
from redraft.models import Transformer
from redraft.validate import shown

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
    aside = None
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
        meta["files"] = {f.name: sha256_file(f) for f in sorted(tmp.iterdir()) if f.is_file()}
        (tmp / "config.json").write_text(json.dumps(meta, indent=2))
        user_modes(tmp)  # safetensors writes its file 0600
        _fsync_folder(tmp)
        if final.exists():
            # The same step again (e.g. a finished run resumed): the old copy stays on disk,
            # under a name clean_run_dir restores, until the new one is in place.
            aside = run_dir / f".old-{final.name}"
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(final, aside)
        os.replace(tmp, final)
        _fsync(run_dir)  # make the rename itself durable
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if aside is not None:
        _remove(aside)
    prune_checkpoints(run_dir, keep, final)
    return final


def prune_checkpoints(run_dir: str | Path, keep: int, newest: Path) -> None:
    """Keep only the newest `keep` complete checkpoints of a run (never `newest`, the one just
    written or resumed from), each removed crash-safely."""
    for old in list_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        if old != newest:
            _remove(old)


def _remove(folder: Path) -> None:
    """Delete a folder so that a crash midway never leaves it half there under its name: rename
    it to a `.tmp-*` name first (atomic), then delete that."""
    doomed = folder.with_name(f".tmp-rm-{folder.name.lstrip('.')}")
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(folder, doomed)
    shutil.rmtree(doomed)


def clean_run_dir(run_dir: str | Path) -> list[str]:
    """Finish what a crash interrupted in a run folder; returns a line per thing done.

    A `.old-ckpt-*` folder is restored when its checkpoint is missing (a crash between moving
    it aside and renaming the new one in), else deleted; `.tmp-*` folders (writes and
    deletions that never finished) and `ckpt-*` folders without config.json (never complete)
    are deleted.
    """
    run_dir = Path(run_dir)
    done = []
    if not run_dir.is_dir():
        return done
    for old in sorted(run_dir.glob(".old-ckpt-*")):
        final = run_dir / old.name.removeprefix(".old-")
        if (final / "config.json").is_file():
            shutil.rmtree(old, ignore_errors=True)
        else:
            shutil.rmtree(final, ignore_errors=True)
            os.replace(old, final)
            done.append(f"restored {str(final)!r} (its replacement never finished)")
    # Only the names redraft writes (.tmp-ckpt-*, .tmp-rm-*): a user's own .tmp-* is not ours.
    for tmp in sorted([*run_dir.glob(".tmp-ckpt-*"), *run_dir.glob(".tmp-rm-*")]):
        shutil.rmtree(tmp, ignore_errors=True)
        done.append(f"removed {str(tmp)!r}: a checkpoint write or deletion that never finished")
    for ckpt in sorted(run_dir.glob("ckpt-*")):
        if ckpt.is_dir() and not (ckpt / "config.json").exists():
            shutil.rmtree(ckpt, ignore_errors=True)
            done.append(f"removed {str(ckpt)!r}: an incomplete checkpoint folder")
    return done


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def verify_files(path: Path, meta: dict[str, Any], names: list[str] | None = None) -> bool:
    """Check the SHA-256 of the checkpoint's files (all listed, or just `names`) against
    config.json; False when the checkpoint predates checksums (nothing to check)."""
    return _verify(path, meta.get("files"), names, "checkpoint")


def _verify(path: Path, files, names: list[str] | None, what: str) -> bool:
    if files is None:
        return False
    if not isinstance(files, dict):
        raise RedraftError(f"{what} {str(path)!r}: config.json 'files' is not a mapping")
    for name in names if names is not None else sorted(files):
        if not isinstance(name, str) or Path(name).name != name or name in (".", ".."):
            # Only the folder's own files: a path here would make loading read elsewhere.
            raise RedraftError(f"{what} {str(path)!r}: config.json 'files' names {shown(name)}, "
                               "not a file of the folder")
        if name not in files:
            raise RedraftError(f"{what} {str(path)!r}: config.json has no checksum of {name}")
        file = path / name
        if not file.is_file():
            raise RedraftError(f"{what} {str(path)!r} has no {name}")
        if sha256_file(file) != files[name]:
            raise RedraftError(f"{what} {str(path)!r}: {name} does not match its SHA-256 in "
                               "config.json (the file is damaged)")
    return True


def loaded_files(folder: Path, train_state: bool = False) -> list[str]:
    """The files of a checkpoint (or export) folder that loading it reads, besides config.json:
    the weights, the tokenizer's definition and backend, and for resuming train_state.pt."""
    from redraft.data.tokenizers import BACKEND_FILE, META_FILE

    names = ["model.safetensors", META_FILE]
    if (folder / BACKEND_FILE).is_file():
        names.append(BACKEND_FILE)
    return [*names, "train_state.pt"] if train_state else names


def verify_loaded(path: Path, files, loaded: list[str], what: str = "checkpoint",
                  skip: tuple[str, ...] = ()) -> None:
    """Check every file `files` (config.json's name -> SHA-256 map, None when it has none)
    lists, but `skip`, and say on stderr which of the `loaded` files nothing verifies: all of
    them when there is no map (written by an older redraft), else those the map lacks (an
    edited config.json: a damaged file there would load silently otherwise)."""
    if files is not None and isinstance(files, dict):
        names = [n for n in files if n not in skip]
    else:
        names = None
    if not _verify(path, files, names, what):
        print(f"redraft: note: {what} {str(path)!r} has no checksums (written by an older "
              "redraft): loaded unverified", file=sys.stderr)
        return
    missing = [n for n in loaded if n not in files]
    if missing:
        print(f"redraft: warning: {what} {str(path)!r}: config.json lists no checksum of "
              f"{', '.join(missing)}: loaded unverified", file=sys.stderr)


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
    meta = read_meta(path)
    for name in ("model.safetensors", "train_state.pt"):
        if not (path / name).is_file():
            raise RedraftError(f"checkpoint {str(path)!r} has no {name}")
    verify_loaded(path, meta.get("files"), loaded_files(path, train_state=True))
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
    if isinstance(meta, dict) and meta.get("format") != FORMAT and "model_type" in meta:
        what = ("a folder redraft exported" if meta["model_type"] == "redraft"
                else "a Hugging Face model folder")
        raise RedraftError(f"{str(path)!r} is {what}, not a redraft checkpoint: load it as "
                           f"'hf:{path}'")
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RedraftError(f"checkpoint {str(path)!r}: config.json is not a redraft checkpoint "
                           f"(format {meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != VERSION:
        raise RedraftError(f"checkpoint {str(path)!r} has format version {meta.get('version')!r}; "
                           f"this redraft reads version {VERSION}")
    return meta


def load_weights(model: Transformer, file: Path, stored: str = "float32") -> None:
    """Load safetensors weights into model, with clear errors for missing or misshapen tensors.
    stored: the dtype config.json declares for the floating-point tensors (`weights_dtype`:
    float32 as training writes them, bfloat16 in a shipped copy); they are cast to the model's
    dtype on load."""
    try:
        tensors = load_file(str(file))
    except (OSError, SafetensorError) as e:
        raise RedraftError(f"checkpoint weights {str(file)!r} are unreadable ({e})") from None
    fit_weights(model, tensors, f"checkpoint weights {str(file)!r}", stored)


def fit_weights(model: Transformer, tensors: dict[str, torch.Tensor], where: str,
                stored: str = "float32") -> None:
    """Load named tensors (from `where`, for the messages) into model: every tensor the model
    stores, each of the declared dtype and the model's shape, or a RedraftError."""
    expected = weights_to_save(model)
    declared = getattr(torch, stored)
    want = {n: declared if t.is_floating_point() else t.dtype for n, t in expected.items()}
    wrong = [(n, t.dtype) for n, t in tensors.items() if n in want and t.dtype != want[n]]
    if wrong:
        # The rule: stored tensors have exactly the dtype config.json declares; a silent
        # conversion on load would hide a file written by something else.
        name, dtype = wrong[0]
        raise RedraftError(f"{where}: tensor {name!r} is {dtype}, "
                           f"expected {want[name]} ({len(wrong)} tensor(s) differ)")
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if missing or unexpected:
        raise RedraftError(f"{where} do not fit the model: missing "
                           f"{missing[:5]}, unexpected {unexpected[:5]}")
    for name, tensor in tensors.items():
        if tensor.shape != expected[name].shape:
            raise RedraftError(f"{where}: tensor {name!r} has shape "
                               f"{tuple(tensor.shape)}, the config expects "
                               f"{tuple(expected[name].shape)}")
    model.load_state_dict({n: t.to(expected[n].dtype) for n, t in tensors.items()}, strict=False)


DTYPES = ("float32", "bfloat16", "float16")  # the weights' dtypes a checkpoint may store


def build_model(config: Config, vocab_size: int) -> Transformer:
    """The backbone a config describes; its attention is the objective's (diffusion.registry)."""
    from redraft.diffusion import objective

    d = config.diffusion
    obj = objective(d.objective)
    return Transformer(config.model, vocab_size, causal=obj.causal,
                       block_size=d.block_size if obj.blockwise else None,
                       draft_block=d.block_size if obj.hybrid else None)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Checkpoint:
    """Load a checkpoint for inference: EMA weights, eval mode, files verified.

    Given a run folder, its newest checkpoint that loads and verifies; when a newer one is
    damaged, stderr says which and why. A checkpoint folder named directly must verify.
    (The shipped models, "default" and "default-ar", are folders that redraft.load resolves
    with redraft.default.shipped.)
    """
    path = Path(path)
    if (path / "config.json").is_file() or not path.is_dir():
        return _load_one(resolve_checkpoint(path), device)
    found = list_checkpoints(path)[::-1]
    if not found:
        resolve_checkpoint(path)  # raises the "no checkpoint" error
    failed = []
    for ckpt in found:
        try:
            loaded = _load_one(ckpt, device)
        except RedraftError as e:
            failed.append(f"{ckpt.name} ({e})")
            continue
        if failed:
            print(f"redraft: warning: using {str(ckpt)!r}: newer checkpoint(s) are damaged: "
                  f"{'; '.join(failed)}", file=sys.stderr)
        return loaded
    raise RedraftError(f"every checkpoint in {str(path)!r} is damaged: {'; '.join(failed)}")


def _load_one(path: Path, device) -> Checkpoint:
    meta = read_meta(path)
    verify_loaded(path, meta.get("files"), loaded_files(path), skip=("train_state.pt",))
    config = config_from_dict(meta.get("config", {}))
    tokenizer = load_tokenizer(path)
    if tokenizer.vocab_size != meta.get("vocab_size"):
        raise RedraftError(f"checkpoint {str(path)!r}: tokenizer has {tokenizer.vocab_size} "
                           f"tokens but the model was built for {meta.get('vocab_size')}")
    stored = meta.get("weights_dtype", "float32")
    if stored not in DTYPES:
        raise RedraftError(f"checkpoint {str(path)!r}: weights_dtype {stored!r} in config.json, "
                           "expected float32, bfloat16 or float16")
    model = build_model(config, tokenizer.vocab_size)
    load_weights(model, path / "model.safetensors", stored)
    model.to(device).eval()
    return Checkpoint(config, model, tokenizer, path, meta)
