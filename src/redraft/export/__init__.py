"""`redraft export CKPT OUT`: a redraft checkpoint as a Hugging Face model folder, and back.

OUT holds

    config.json             transformers' config (model_type "redraft", auto_map to the code
                            below) plus redraft's whole config under "redraft_config"
    model.safetensors       the inference weights, under redraft's own parameter names
    modeling_redraft.py     the architecture in plain torch + transformers, for
                            trust_remote_code (a copy of redraft/export/modeling_redraft.py)
    tokenizer.json, tokenizer_config.json, special_tokens_map.json
                            a fast tokenizer giving redraft's ids (export/tokenizer.py)
    redraft_tokenizer.json  redraft's own tokenizer definition
    README.md               a short model card

so `AutoModelForMaskedLM` (diffusion) or `AutoModelForCausalLM` (the AR twin), and
`AutoModel`, load it with `trust_remote_code=True`, and `redraft.load("hf:OUT")`
(read_exported) rebuilds the redraft Model with the same weights. The folder is written
under a temporary name beside OUT and renamed into place: OUT is complete or absent.
config.json's "redraft_export" holds the SHA-256 of the files redraft reads back ("files"),
checked by read_exported, as a checkpoint's are.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from redraft.errors import RedraftError

MODEL_TYPE = "redraft"
EXPORT_VERSION = 1
CODE_FILE = "modeling_redraft.py"


def modeling_code() -> str:
    """The text of the remote-code modelling file shipped in this package."""
    return resources.files("redraft.export").joinpath(CODE_FILE).read_text(encoding="utf-8")


def hf_config(model) -> dict[str, Any]:
    """config.json of a redraft Model: what transformers reads, and redraft's config."""
    cfg = model.config
    m, d = cfg.model, cfg.diffusion
    backbone = model.backbone
    causal = model.backbone.causal  # the architecture transformers builds around the weights
    head = "RedraftForCausalLM" if causal else "RedraftForMaskedLM"
    auto = "AutoModelForCausalLM" if causal else "AutoModelForMaskedLM"
    tok = model.tokenizer
    return {
        "architectures": [head],
        "model_type": MODEL_TYPE,
        "auto_map": {"AutoConfig": "modeling_redraft.RedraftConfig",
                     "AutoModel": f"modeling_redraft.{head}",
                     auto: f"modeling_redraft.{head}"},
        "vocab_size": backbone.vocab_size,
        "n_layer": m.n_layer, "n_head": m.n_head, "d_model": m.d_model,
        "mlp_ratio": m.mlp_ratio, "seq_len": m.seq_len, "rope_base": m.rope_base,
        "time_conditioning": bool(backbone.time_conditioned),
        "tie_word_embeddings": m.tie_weights,
        "attention": backbone.attention,
        "block_size": backbone.block_size,
        "block_shift": d.block_shift if model.objective.blockwise else False,
        "block_reveal_last": d.block_reveal_last if model.objective.blockwise else False,
        "objective": model.objective.name,
        "process": model.process.name if model.process is not None else None,
        "schedule": d.schedule, "schedule_eps": d.schedule_eps,
        "mask_token_id": tok.mask_id, "eos_token_id": tok.eos_id, "pad_token_id": tok.pad_id,
        "bos_token_id": tok.eos_id,  # the AR twin reads eos as its BOS
        "dtype": "float32", "torch_dtype": "float32",
        "redraft_config": cfg.to_dict(),
        "redraft_export": {"version": EXPORT_VERSION, "name": model.name,
                           "step": model.meta.get("step"), "params": backbone.num_params()},
    }


def _model_card(config: dict[str, Any]) -> str:
    auto = "AutoModelForCausalLM" if config["objective"] == "ar" else "AutoModelForMaskedLM"
    return f"""---
library_name: transformers
tags: [redraft, diffusion-language-model]
---
# {config['redraft_export']['name']}

A redraft model (objective `{config['objective']}`, process `{config['process']}`,
{config['attention']} attention, {config['redraft_export']['params']:,} parameters,
context {config['seq_len']} tokens), exported by `redraft export`.

```python
from transformers import {auto}, AutoTokenizer
model = {auto}.from_pretrained("<this folder or repo>", trust_remote_code=True)
tok = AutoTokenizer.from_pretrained("<this folder or repo>")
logits = model(**tok("some text", return_tensors="pt")).logits
```

`trust_remote_code=True` runs this folder's `modeling_redraft.py` (plain torch, written by
redraft); read it before you trust a copy from elsewhere. With redraft (its samplers,
likelihood bounds and server): `redraft.load("hf:<folder>")`, which reads the weights natively
and runs none of the folder's code.
"""


def export_model(model, out: str | Path, overwrite: bool = False) -> Path:
    """Write `model` (a redraft Model with a redraft Transformer) as a Hugging Face folder at
    `out`, atomically (a temporary folder beside it, renamed into place). An existing `out`
    is an error unless overwrite, which replaces it only once the new folder is complete, and
    only an earlier export (or an empty folder): anything else there is a RedraftError."""
    from safetensors.torch import save_file

    from redraft.checkpoint import loaded_files, sha256_file, weights_to_save
    from redraft.export.tokenizer import write_hf_tokenizer
    from redraft.files import user_modes
    from redraft.models import Transformer
    from redraft.validate import check_output_dir

    out = Path(out)
    if not isinstance(model.backbone, Transformer) or model.config is None:
        raise RedraftError(f"{model.name!r} is not a redraft Transformer checkpoint: only "
                           "models redraft trained can be exported")
    check_export_target(out, overwrite)  # --force replaces an earlier export, nothing else
    check_output_dir(out, "the export folder")  # a clear line, not mkdir's traceback
    parent = out.parent if str(out.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=parent))
    try:
        config = hf_config(model)
        save_file(weights_to_save(model.backbone), str(tmp / "model.safetensors"),
                  metadata={"format": "pt"})
        model.tokenizer.save(tmp)
        write_hf_tokenizer(model.tokenizer, tmp, model.seq_len)
        (tmp / CODE_FILE).write_text(modeling_code(), encoding="utf-8")
        # The SHA-256 of each file redraft reads back (read_exported checks them), as in a
        # checkpoint's config.json; transformers ignores them.
        config["redraft_export"]["files"] = {n: sha256_file(tmp / n) for n in loaded_files(tmp)}
        (tmp / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        (tmp / "README.md").write_text(_model_card(config), encoding="utf-8")
        user_modes(tmp)
        aside = None
        if out.exists():
            aside = parent / f".old-{out.name}-{os.getpid()}"
            os.replace(out, aside)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return out


def read_export_config(folder: str | Path) -> dict[str, Any] | None:
    """config.json of a folder redraft exported; None when the folder is something else."""
    file = Path(folder) / "config.json"
    if not file.is_file():
        return None
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict) or config.get("model_type") != MODEL_TYPE:
        return None
    return config


def is_exported(folder: str | Path) -> bool:
    """Whether `folder` is a Hugging Face folder written by `redraft export`."""
    return read_export_config(folder) is not None


def read_exported(folder: str | Path, device: str | torch.device = "cpu"):
    """A folder `redraft export` wrote, read back as a checkpoint.Checkpoint (the backbone in
    eval mode, its config, tokenizer and export facts); `redraft.load("hf:<folder>")` makes
    the Model of it."""
    from redraft.checkpoint import (
        Checkpoint,
        build_model,
        load_weights,
        loaded_files,
        verify_loaded,
    )
    from redraft.config import config_from_dict
    from redraft.data import load_tokenizer

    folder = Path(folder)
    config = read_export_config(folder)
    if config is None:
        raise RedraftError(f"{str(folder)!r} is not a folder written by redraft export: "
                           "expected a config.json with model_type 'redraft'")
    facts = config.get("redraft_export")
    version = facts.get("version") if isinstance(facts, dict) else None
    if version != EXPORT_VERSION or not isinstance(config.get("redraft_config"), dict):
        raise RedraftError(f"{str(folder)!r}: redraft export version {version!r}; this "
                           f"redraft reads version {EXPORT_VERSION}")
    verify_loaded(folder, facts.get("files"), loaded_files(folder), what="export")
    cfg = config_from_dict(config["redraft_config"])
    tokenizer = load_tokenizer(folder)
    if tokenizer.vocab_size != config.get("vocab_size"):
        raise RedraftError(f"{str(folder)!r}: the tokenizer has {tokenizer.vocab_size} tokens "
                           f"but config.json says vocab_size {config.get('vocab_size')}")
    backbone = build_model(cfg, tokenizer.vocab_size)
    load_weights(backbone, folder / "model.safetensors")
    backbone.to(device).eval()
    return Checkpoint(cfg, backbone, tokenizer, folder, dict(facts))


# hf: options and what they mean for a folder redraft exported, which is read natively (never
# through transformers or its modeling_redraft.py): device applies; the rest describe how to
# drive a foreign model, which config.json already says for this one.
_NATIVE_OPTIONS = ("device",)


def read_exported_spec(spec: str, device: str | torch.device = "cpu", options: dict | None = None):
    """For an "hf:<folder>[?key=value&...]" spec (options: redraft.load's keyword options)
    naming a folder `redraft export` wrote: that folder read back natively (read_exported), on
    the device the spec names (`device=`, else `device`). None when the folder is anything else
    (the Hugging Face loaders take it). Any other option is refused: a redraft export is never
    loaded through transformers, so kind/mask_id/seq_len/shift/revision cannot apply and
    trust_remote_code is not needed (it would run the folder's modeling_redraft.py)."""
    from redraft.hf import check_options, parse_spec
    from redraft.validate import check_device

    path, query = parse_spec(str(spec))
    if not is_exported(path):
        return None
    opts = check_options({**query, **(options or {})})
    if opts.get("trust_remote_code"):
        raise RedraftError(f"hf:{path} is a folder redraft exported: redraft reads it natively, "
                           f"without running its {CODE_FILE}; drop trust_remote_code")
    opts.pop("trust_remote_code", None)  # =0 asks for nothing
    other = sorted(set(opts) - set(_NATIVE_OPTIONS))
    if other:
        raise RedraftError(f"hf:{path} is a folder redraft exported, read natively: option "
                           f"{other[0]}={opts[other[0]]!r} does not apply to it (its kind, "
                           "context and mask id are in its config.json); only "
                           f"{', '.join(f'{o}=' for o in _NATIVE_OPTIONS)} does")
    device = opts.get("device", device)
    check_device(str(device))
    return read_exported(path, device)


def check_export_target(out: str | Path, overwrite: bool) -> None:
    """`export --force` replaces an earlier export (or an empty folder) and nothing else."""
    out = Path(out)
    if not out.exists():
        return
    if not overwrite:
        raise RedraftError(f"{str(out)!r} already exists: choose a new folder, or --force to "
                           "replace an earlier export there")
    if not out.is_dir():
        raise RedraftError(f"{str(out)!r} exists and is not a folder: choose a new folder")
    if is_exported(out) or not any(out.iterdir()):
        return
    from redraft.runs import run_contents

    what = ("a training run" if run_contents(out) else "a checkpoint"
            if (out / "config.json").is_file() else "files that are not an export")
    raise RedraftError(f"{str(out)!r} holds {what}: --force replaces only an earlier "
                       "`redraft export`, never anything else; choose a new folder")
