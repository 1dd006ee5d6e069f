"""What verifying token shards costs: the SHA-256 + largest-id pass prepare_shards makes every
time it builds or reuses a cache, against the tokenising it saves.

    python benchmarks/shard_checksum.py [--synthetic-mb 512]

Two caches: the Python standard library (byte tokenizer, always on the machine) and a synthetic
shard of random uint16 ids (a stand-in for a bigger corpus). For each: the first build
(tokenising included), a reuse (the pass over a warm page cache), and the checksum pass alone.
Writes benchmarks/results/shard_checksum.json and the shard-checksum section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import machine, write_json, write_section  # noqa: E402

from redraft.data import build_tokenizer, prepare_shards  # noqa: E402
from redraft.data.shards import _digest  # noqa: E402


def timed(fn, repeat: int = 3) -> float:
    """The best of `repeat` wall-clock times (seconds): the pass itself, not disk noise."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def stdlib_case(cache: Path) -> dict:
    tok = build_tokenizer("byte")
    t0 = time.perf_counter()
    data = prepare_shards("stdlib", tok, cache)
    build = time.perf_counter() - t0
    size = sum((data.directory / f).stat().st_size for f in ("train.bin", "val.bin"))
    reuse = timed(lambda: prepare_shards("stdlib", tok, cache))
    check = timed(lambda: [_digest(data.directory / f, data.train.dtype)
                           for f in ("train.bin", "val.bin")])
    return {"corpus": "stdlib (byte tokenizer)", "shard_mb": round(size / 2**20, 1),
            "first_build_s": round(build, 3), "reuse_s": round(reuse, 3),
            "checksum_s": round(check, 3), "checksum_mb_per_s": round(size / 2**20 / check, 1),
            "checksum_share_of_build": round(check / build, 4)}


def synthetic_case(folder: Path, mb: int) -> dict:
    path = folder / "train.bin"
    ids = np.random.default_rng(0).integers(0, 50_257, mb * 2**19, dtype=np.uint16)
    ids.tofile(path)
    check = timed(lambda: _digest(path, np.uint16))
    return {"corpus": f"synthetic uint16 ids ({mb} MB)", "shard_mb": mb,
            "checksum_s": round(check, 3), "checksum_mb_per_s": round(mb / check, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--synthetic-mb", type=int, default=512)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [stdlib_case(Path(tmp) / "cache"), synthetic_case(Path(tmp), args.synthetic_mb)]
    command = f"python benchmarks/shard_checksum.py --synthetic-mb {args.synthetic_mb}"
    result = {"machine": machine(), "command": command, "rows": rows}
    write_json("shard_checksum", result)
    m = result["machine"]
    lines = [
        "## Token shard checksums",
        "",
        f"`{command}` on {m['cpu']} ({m['cores']} cores), {m['date']}. The SHA-256 and "
        "largest-id pass that every build or reuse of a token cache makes (warm page cache; "
        "best of 3):",
        "",
        "| cache | shard MB | checksum pass s | MB/s | first build s | reuse s |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['corpus']} | {r['shard_mb']} | {r['checksum_s']} | "
                     f"{r['checksum_mb_per_s']} | {r.get('first_build_s', '-')} | "
                     f"{r.get('reuse_s', '-')} |")
    write_section("shard-checksum", "\n".join(lines))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
