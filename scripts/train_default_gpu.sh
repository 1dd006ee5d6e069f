#!/usr/bin/env bash
# Trains the shipped default pair (issue 17) on one GPU and compares the two diffusion recipes
# at equal total wall clock. Three slots run at once on the one GPU, so each sees about a third
# of it, the same for all three:
#   ar         the AR twin (configs/stdlib-default-ar.yaml), T seconds
#   mdlm       masked diffusion from scratch (configs/stdlib-default-mdlm.yaml), T seconds
#   ar-mdlm    an AR model for T/3, then masked diffusion initialised from it (train.init_from)
#              for the remaining 2T/3: the initialising model's time counts.
# Then each run's inference weights are written as bf16 safetensors (under 16 MiB each) with a
# tarball of the checkpoints' other files and the metrics, and CUDA-path checks run: sampling
# from each model on the GPU and the block-diffusion vs AR training speed on the core model.
#
# Usage (repository root; CORPUS a folder holding the same stdlib .py files as `corpus: stdlib`
# on the machine that evaluates, so the validation split is the same):
#   OUT=out CORPUS=.gpu/stdlib SHAKESPEARE=.gpu/input.txt CONTINUE=225 \
#       bash scripts/train_default_gpu.sh 360
# (As run on 2026-11-30 on one H200: T=360 in one call, the CONTINUE phase in a second call on
# the same machine; figures in benchmarks/results/default_gpu_training.json.)
set -uo pipefail
T=${1:-380}
OUT=${OUT:?set OUT to the output folder}
CORPUS=${CORPUS:?set CORPUS to the stdlib folder}
DEVICE=${DEVICE:-cuda}
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1 REDRAFT_CACHE=${REDRAFT_CACHE:-/tmp/redraft-cache}
PY=${PYTHON:-python3}
RUNS=${RUNS:-/tmp/default-runs}
LOGS=$RUNS/logs
mkdir -p "$OUT" "$RUNS" "$LOGS"
start=$(date +%s)
common="data.corpus=$CORPUS train.device=$DEVICE ${EXTRA:-}"  # EXTRA: overrides for a dry run
third=$((T / 3))

# Tokenise the corpus once before the three slots start (they share the cache).
$PY -c "from redraft.config import load_config; from redraft.data.loading import load_data
cfg = load_config('configs/stdlib-default-mdlm.yaml'); cfg.data.corpus = '$CORPUS'
print(load_data(cfg.data, cfg.model.seq_len)[1].meta)" || exit 1

$PY -m redraft train configs/stdlib-default-ar.yaml $common train.out_dir=$RUNS/ar \
    train.time_budget_s=$T >"$LOGS/ar.log" 2>&1 &
$PY -m redraft train configs/stdlib-default-mdlm.yaml $common train.out_dir=$RUNS/mdlm \
    train.time_budget_s=$T >"$LOGS/mdlm.log" 2>&1 &
( $PY -m redraft train configs/stdlib-default-ar.yaml $common train.out_dir=$RUNS/ar-init \
      train.time_budget_s=$third &&
  $PY -m redraft train configs/stdlib-default-mdlm.yaml $common train.out_dir=$RUNS/ar-mdlm \
      train.init_from=$RUNS/ar-init train.warmup_steps=100 train.time_budget_s=$((T - third)) \
) >"$LOGS/ar-mdlm.log" 2>&1 &
wait
for f in "$LOGS"/*.log; do echo "== $f"; tail -4 "$f"; done
echo "training done after $(( $(date +%s) - start )) s"

# bf16 inference weights + the small files, then a CUDA sampling check of each model.
$PY - "$RUNS" "$OUT" "$DEVICE" <<'PYEOF'
import json, sys, tarfile, time
from pathlib import Path
import torch
from safetensors.torch import load_file, save_file
import redraft
from redraft.checkpoint import resolve_checkpoint
runs, out, device = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
summary = {}
with tarfile.open(out / "meta.tar.gz", "w:gz") as tar:
    tar.add(str(runs / "logs"), arcname="logs")
    for name in ["ar", "mdlm", "ar-init", "ar-mdlm"]:
        try:
            ckpt = resolve_checkpoint(runs / name)
        except Exception as e:  # a slot that failed: say so, keep the others
            summary[name] = {"error": str(e)}
            continue
        weights = load_file(str(ckpt / "model.safetensors"))
        if name != "ar-init":
            save_file({k: v.to(torch.bfloat16) if v.is_floating_point() else v
                       for k, v in weights.items()}, str(out / f"{name}.bf16.safetensors"))
        for f in (runs / name).rglob("*"):
            if f.is_file() and f.suffix not in (".safetensors", ".pt"):
                tar.add(str(f), arcname=f"{name}/{f.relative_to(runs / name)}")
        vals = [json.loads(line) for line in (runs / name / "metrics.jsonl").read_text().splitlines()
                if "val_bits_per_byte" in line]
        row = {"checkpoint": ckpt.name, "final": vals[-1] if vals else None,
               "best_val_bits_per_byte": min(v["val_bits_per_byte"] for v in vals) if vals else None}
        try:
            m = redraft.load(ckpt, device=device)
            prompt = "def fibonacci(n):\n"
            m.generate([prompt], max_new_tokens=128, seed=0)  # warm-up
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            o = m.generate([prompt] * 16, max_new_tokens=128, seed=0)
            if device == "cuda":
                torch.cuda.synchronize()
            row["sample_batch16_s"] = time.perf_counter() - t0
            row["sample"] = o.texts[0][:400]
            row["nfe"] = o.nfe
        except Exception as e:
            row["sample_error"] = repr(e)
        summary[name] = row
        print(name, json.dumps(row)[:600])
(out / "summary.json").write_text(json.dumps(summary, indent=2))
PYEOF
echo "weights done after $(( $(date +%s) - start )) s"

# Block diffusion vs AR training speed on the GPU (the core benchmark's model), if time allows.
if [ -n "${SHAKESPEARE:-}" ] && [ $(( $(date +%s) - start )) -lt $((T + 100)) ]; then
  for batch in 16 256; do
    for cfg in ar block; do
      $PY -m redraft train configs/shakespeare-$cfg.yaml data.corpus=$SHAKESPEARE \
          train.device=$DEVICE train.time_budget_s=15 train.batch_size=$batch train.eval_every=1000000 \
          train.out_dir=/tmp/speed-$cfg-$batch >"$LOGS/speed-$cfg-$batch.log" 2>&1
      tail -1 /tmp/speed-$cfg-$batch/metrics.jsonl | sed "s/^/speed $cfg batch $batch: /"
    done
  done 2>&1 | tee "$OUT/speed.txt"
  tar -czf "$OUT/speed-logs.tar.gz" -C "$LOGS" . /tmp/speed-*/metrics.jsonl 2>/dev/null
fi
# The shipped diffusion model continued alone on the GPU (the second device call of the
# 2026-11-30 run): initialised from the mdlm slot, half the peak LR, CONTINUE seconds.
if [ -n "${CONTINUE:-}" ]; then
  $PY -m redraft train configs/stdlib-default-mdlm.yaml $common train.out_dir=$RUNS/mdlm2 \
      train.init_from=$RUNS/mdlm train.warmup_steps=100 train.lr=5e-4 \
      train.time_budget_s=$CONTINUE >"$LOGS/mdlm2.log" 2>&1
  tail -3 "$LOGS/mdlm2.log"
fi
echo "all done after $(( $(date +%s) - start )) s"
