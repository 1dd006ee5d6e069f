"""Checks of user input that run before any work starts: argparse value types, output folders,
devices, text files, prompts, and the CLI's work limits (the same as the server's).

Each check raises a RedraftError (or, as an argparse type, an ArgumentTypeError) with one line
that names the bad value and what was expected; the CLI turns either into exit status 2.
"""

from __future__ import annotations

import argparse
import errno
import math
import os
import shutil
import tempfile
from pathlib import Path

from redraft.errors import RedraftError

# Seeds: sampling seeds row r with seed + r (the server's bound, serve/schemas.py); training
# seeds torch, numpy and per-step generators with seed * 1_000_003 + step, which must stay a
# 64-bit integer, hence the smaller training bound.
MAX_SAMPLE_SEED = 2**63 - 65
MAX_TRAIN_SEED = 2**32 - 1
# Work of one generation call: n x steps x length token positions for diffusion, n x length for
# AR: the server's default bound (serve --max-work); `sample --max-work` raises it.
MAX_WORK = 1 << 24
# The OS errors a user's environment causes (full disk, read-only or forbidden folder): one
# line, not a traceback.
USER_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
               errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENAMETOOLONG, errno.EFBIG}


def shown(value, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters, so an error about a huge argument stays one line."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit - 20]}...({len(text)} chars)"


def _number(text: str, kind):
    try:
        return kind(text)
    except ValueError:  # includes Python's 4300-digit limit on int("999...")
        what = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"{shown(text)} is not {what}") from None


def integer(low: int | None = None, high: int | None = None):
    """argparse type: an int in [low, high]."""
    def parse(text: str) -> int:
        value = _number(text, int)
        if low is not None and value < low:
            raise argparse.ArgumentTypeError(f"{shown(value)} is not >= {low}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{shown(value)} is not <= {high}")
        return value
    return parse


def number(low: float | None = None, high: float | None = None, low_open: bool = False):
    """argparse type: a finite float in [low, high] ((low, high] when low_open)."""
    def parse(text: str) -> float:
        value = _number(text, float)
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if low is not None and (value <= low if low_open else value < low):
            raise argparse.ArgumentTypeError(f"{value} is not {'>' if low_open else '>='} {low}")
        if high is not None and value > high:
            raise argparse.ArgumentTypeError(f"{value} is not <= {high}")
        return value
    return parse


def check_finite(name: str, value) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise RedraftError(f"{name}={value!r}: expected a finite number")


def check_output_dir(path: str | Path, what: str) -> Path:
    """Fail now, not after hours of work, if `path` cannot become a folder we write into.

    Nothing is left behind: a missing folder is not created here, its nearest existing parent
    is probed with a temporary file instead.
    """
    path = Path(path)
    probe_in = path
    while not probe_in.exists():
        if probe_in.parent == probe_in:
            break
        probe_in = probe_in.parent
    if probe_in.exists() and not probe_in.is_dir():
        where = "is" if probe_in == path else f"is inside {str(probe_in)!r}, which is"
        raise RedraftError(f"{what} {str(path)!r} {where} a file, not a folder")
    try:
        fd, name = tempfile.mkstemp(prefix=".redraft-probe-", dir=probe_in)
        os.close(fd)
        os.unlink(name)
    except OSError as e:
        raise RedraftError(f"{what} {str(path)!r} is not writable ({e.strerror})") from None
    return path


def check_device(device: str) -> None:
    """A torch device string that names a device this machine has."""
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise RedraftError(f"device {shown(device)}: expected 'cpu', 'cuda', 'cuda:N' or "
                           "'mps'") from None
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise RedraftError(f"device {device!r}: this machine has no CUDA GPU (use 'cpu')")
        if dev.index is not None and dev.index >= count:
            raise RedraftError(f"device {device!r}: this machine has {count} CUDA GPU(s), "
                               f"cuda:0..cuda:{count - 1}")
        return
    if dev.type == "meta":  # shapes without data: nothing could run or be loaded there
        raise RedraftError(f"device {device!r} holds no data: expected 'cpu', 'cuda', 'cuda:N' "
                           "or 'mps'")
    if dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise RedraftError(f"device {device!r}: MPS is not available on this machine")
        return
    try:
        torch.empty(1, device=dev)
    except Exception as e:  # backends raise assorted types for a device that is not there
        raise RedraftError(f"device {device!r} is not usable here ({type(e).__name__})") from None


def read_text(path: str | Path, what: str) -> str:
    """The UTF-8 text of a user's file, or one clear line saying why not."""
    path = Path(path)
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise RedraftError(f"{what} {str(path)!r} is not UTF-8 text (byte {e.start}: "
                           f"{e.reason})") from None
    except OSError as e:
        raise RedraftError(f"{what} {str(path)!r} cannot be read ({e.strerror})") from None


def check_work(n: int, steps: int, length: int, ar: bool, max_work: int) -> None:
    """n x steps x length (diffusion) or n x length (AR) token positions within max_work."""
    work = n * length if ar else n * steps * length
    if work > max_work:
        what = f"n x length = {n} x {length}" if ar else \
            f"n x steps x length = {n} x {steps} x {length}"
        raise RedraftError(f"{work:,} units of work ({what}) exceed the limit {max_work:,} "
                           "(--max-work): lower --num-samples, --steps or --length, or raise "
                           "--max-work")


def os_error_line(e: OSError) -> str | None:
    """One line for an OS error the user's environment causes (full disk, no permission...),
    or None for anything else (a bug, which keeps its traceback)."""
    if e.errno not in USER_ERRNOS:
        return None
    where = f" ({e.filename})" if e.filename else ""
    if e.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"no space left on the device{where}: free some space and run again"
    return f"{e.strerror or e}{where}"


def memory_error_line(e: BaseException) -> str | None:
    """One line for running out of memory (host or accelerator), else None."""
    if isinstance(e, MemoryError) or type(e).__name__ == "OutOfMemoryError" or \
            "can't allocate memory" in str(e):
        return ("out of memory: lower the model size, train.batch_size (or raise "
                "train.grad_accum), --num-samples or --length")
    return None


def device_memory(device) -> int | None:
    """Total bytes of memory of a device (host RAM for the CPU), or None when unknown."""
    import torch

    device = torch.device(device)
    try:
        if device.type == "cuda":
            return torch.cuda.get_device_properties(device).total_memory
        if device.type == "cpu":
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError, RuntimeError):
        pass
    return None


def check_sampling_memory(n: int, length: int, vocab_size: int, device="cpu") -> None:
    """All n rows are denoised in one batch: refuse when their logits alone (logits, their
    softmax and a sampling buffer: 3 x n x length x vocab float32) exceed the device's memory."""
    need = 3 * n * length * vocab_size * 4
    have = device_memory(device)
    if have is not None and need > have:
        raise RedraftError(f"{n} samples of {length} tokens need at least {need / 2**30:,.1f} GiB "
                           f"for their logits over {vocab_size} ids; this machine has "
                           f"{have / 2**30:,.1f} GiB: lower --num-samples or --length")


def estimate_params(model_cfg, vocab_size: int) -> int:
    """Parameters of the Transformer (blocks: attention 4 d^2 + MLP 2 r d^2; embeddings),
    within a few percent (norms and biases left out)."""
    d = model_cfg.d_model
    embed = vocab_size * d * (1 if model_cfg.tie_weights else 2)
    return model_cfg.n_layer * (4 + 2 * model_cfg.mlp_ratio) * d * d + embed


def check_training_fits(cfg, vocab_size: int, device, world_size: int = 1,
                        main: bool = True) -> None:
    """Refuse, before the first step, a run that cannot fit: memory for the weights, AdamW
    state and one micro-batch's logits (a lower bound, so no run that fits is refused), and
    disk for one more checkpoint in train.out_dir."""
    import torch

    tc = cfg.train
    params = estimate_params(cfg.model, vocab_size)
    copies = 4 + (1 if tc.ema > 0 else 0)  # weights, gradients, two AdamW moments, EMA
    micro = max(1, tc.batch_size // (world_size * tc.grad_accum))
    logits = 3 * micro * cfg.model.seq_len * vocab_size * 4  # logits, softmax, their gradient
    need = copies * params * 4 + logits
    device = torch.device(device)
    have = device_memory(device)
    if have is not None and need > have:
        raise RedraftError(f"this run needs at least {need / 2**30:,.1f} GiB of {device.type} "
                           f"memory (~{params:,} parameters with AdamW state, and the logits of "
                           f"a micro-batch of {micro} x {cfg.model.seq_len} tokens x "
                           f"{vocab_size} ids); the device has {have / 2**30:,.1f} GiB: lower "
                           "the model size or train.batch_size, or raise train.grad_accum")
    if not main:
        return
    ckpt = (copies + 1) * params * 4  # inference weights + the training state, roughly
    probe = Path(tc.out_dir)
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if ckpt > free:
        raise RedraftError(f"train.out_dir {tc.out_dir!r}: {free / 2**20:,.0f} MiB free, a "
                           f"checkpoint of this model takes about {ckpt / 2**20:,.0f} MiB")
