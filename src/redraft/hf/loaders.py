"""From a folder or hub id to a redraft.Model, one function per kind (see hf/__init__.py).

`base` is redraft.model.Model, passed in by redraft.load: redraft.model imports this package,
so this package does not import it back (tests/test_imports.py keeps the graph acyclic). Every
kind is a plain Model; what differs is its backbone adapter, its decoder (redraft.decoders:
gemma, canvas, hf_causal) and its scorer.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from redraft.errors import RedraftError
from redraft.request import HF_NEW_TOKENS as DEFAULT_NEW_TOKENS


def _load_kwargs(path: str, trust: bool, revision: str | None) -> dict:
    kw = {"trust_remote_code": trust}
    if revision is not None:
        kw["revision"] = revision
    if Path(path).is_dir():
        kw["local_files_only"] = True
    return kw


def _call(what: str, path: str, fn, *args, **kw):
    """Run a transformers loader; its errors become one RedraftError line."""
    try:
        return fn(*args, **kw)
    except RedraftError:
        raise
    except Exception as e:  # OSError, ValueError, ImportError from the hub or remote code
        text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "trust_remote_code" in str(e):
            text = (f"the model ships its own modelling code ({remote_code_files(path)}): add "
                    "?trust_remote_code=1 to the spec only if you trust it, since redraft then "
                    "runs that Python with your permissions")
        raise RedraftError(f"hf:{path}: cannot load the {what}: {text}") from None


def remote_code_files(path: str) -> str:
    """What trust_remote_code would run for `path`: the Python files its config.json's auto_map
    names (local folder), or a description of them (hub id, or a map that cannot be read)."""
    file = Path(path) / "config.json"
    try:
        auto = json.loads(file.read_text(encoding="utf-8")).get("auto_map") or {}
        refs = [r for v in auto.values() for r in (v if isinstance(v, list) else [v]) if r]
    except (OSError, ValueError, AttributeError):
        refs = None
    if not refs:
        where = "downloaded from the hub" if not Path(path).is_dir() else "in the folder"
        return f"the .py files its config.json auto_map names, {where}"
    files = []
    for ref in refs:  # "module.Class", or "other/repo--module.Class" (code from another repo)
        repo, _, module = str(ref).rpartition("--")
        name = f"{module.rsplit('.', 1)[0]}.py"
        shown_ = f"{name} from hub repo {repo}" if repo else str(Path(path) / name)
        if shown_ not in files:
            files.append(shown_)
    return ", ".join(files)


# A hub id: "name" or "owner/name", letters, digits, - _ . (huggingface_hub's rule, loosely).
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")


def check_path(path: str) -> None:
    """Say what is wrong with an hf: path before transformers does, in its own terms: a local
    path that does not exist, a file, a folder without config.json, a redraft checkpoint or
    run folder (which loads without hf:)."""
    from redraft.checkpoint import FORMAT

    p = Path(path)
    if p.is_dir():
        config = p / "config.json"
        if config.is_file():
            try:
                fmt = json.loads(config.read_text(encoding="utf-8")).get("format")
            except (OSError, ValueError, AttributeError):
                fmt = None
            if fmt == FORMAT:
                raise RedraftError(f"hf:{path} is a redraft checkpoint, not a Hugging Face "
                                   f"folder: load it without the hf: prefix ({path!r})")
            return
        if any((c / "config.json").is_file() for c in p.glob("ckpt-*")):
            raise RedraftError(f"hf:{path} is a redraft run folder, not a Hugging Face folder: "
                               f"load it without the hf: prefix ({path!r}: its newest "
                               "checkpoint)")
        raise RedraftError(f"hf:{path}: the folder has no config.json, so it is not a Hugging "
                           "Face model folder")
    if p.exists():
        raise RedraftError(f"hf:{path}: expected a folder or a hub id, got a file")
    if not _HUB_ID.fullmatch(path) or path.startswith((".", "~")):
        raise RedraftError(f"hf:{path}: no such folder (and not a hub id, which has the form "
                           "owner/name)")


def read_config(path: str, trust: bool, revision: str | None):
    from transformers import AutoConfig

    check_path(path)
    try:
        return _call("config", path, AutoConfig.from_pretrained, path,
                     **_load_kwargs(path, trust, revision))
    except RedraftError as e:
        if Path(path).is_dir():
            raise
        # A hub id that did not load may have been meant as a local folder: say it is not one.
        raise RedraftError(f"{e} (nor is there a local folder {path!r})") from None


def _tokenizer(path: str, opts: dict, vocab_size: int, mask_id: int | None = None):
    from transformers import AutoTokenizer

    from redraft.hf.tokenizer import HFTokenizer

    tok = _call("tokenizer", path, AutoTokenizer.from_pretrained, path,
                **_load_kwargs(path, opts.get("trust_remote_code", False), opts.get("revision")))
    return HFTokenizer(tok, vocab_size, mask_id)


def _vocab(config) -> int:
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    v = getattr(text, "vocab_size", None)
    if not isinstance(v, int):
        raise RedraftError("the model's config has no vocab_size")
    return v


def _seq_len(config, opts: dict) -> int:
    if "seq_len" in opts:
        return opts["seq_len"]
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    for key in ("max_position_embeddings", "max_sequence_length", "n_positions", "seq_len"):
        v = getattr(text, key, None)
        if isinstance(v, int) and v > 0:
            return v
    raise RedraftError("the model's config names no context length: add ?seq_len=N")


def _finish(model, device):
    model.eval()
    try:
        return model.to(device)
    except (RuntimeError, AssertionError) as e:  # no such device, or torch built without it
        raise RedraftError(f"device {str(device)!r}: {str(e).splitlines()[0]}") from None


def load_gemma(path, config, opts, device, name, base):
    try:
        from transformers import DiffusionGemmaForBlockDiffusion
    except ImportError:
        import transformers

        raise RedraftError(f"hf:{path} is a DiffusionGemma, which needs a transformers with "
                           f"diffusion_gemma (5.x); this one is {transformers.__version__}"
                           ) from None

    from redraft.diffusion import make_process
    from redraft.hf.gemma_model import GEMMA, GemmaBackbone
    from redraft.scoring import NoScore

    hf = _call("model", path, DiffusionGemmaForBlockDiffusion.from_pretrained, path,
               **_load_kwargs(path, False, opts.get("revision")))
    tok = _tokenizer(path, opts, _vocab(config))
    backbone = GemmaBackbone(_finish(hf, device))
    # The noise its canvases start from; the decoder (redraft.decoders.gemma) drives the rest.
    process = make_process("uniform", mask_id=tok.mask_id, vocab_size=backbone.vocab_size)
    return base(backbone, tok, GEMMA, process, name=name, path=path,
                meta={"hf": path, "kind": "gemma"}, decoder="gemma", scorer=NoScore,
                default_new_tokens=DEFAULT_NEW_TOKENS)


def load_masked(path, config, opts, device, name, base):
    import transformers

    from redraft.diffusion import make_process
    from redraft.hf.backbones import MaskedBackbone

    trust = opts.get("trust_remote_code", False)
    auto_map = getattr(config, "auto_map", None) or {}
    names = [n for n in ("AutoModelForMaskedLM", "AutoModel", "AutoModelForCausalLM")
             if n in auto_map] or ["AutoModelForMaskedLM", "AutoModel"]
    model = _call("model", path, getattr(transformers, names[0]).from_pretrained, path,
                  **_load_kwargs(path, trust, opts.get("revision")))
    vocab = _vocab(config)
    mask_id = opts.get("mask_id", getattr(config, "mask_token_id", None))
    tok = _tokenizer(path, opts, vocab, mask_id)
    if mask_id is None and tok.tok.mask_token_id is None:
        raise RedraftError(f"hf:{path}: no mask id in the config or the tokenizer: add "
                           "?mask_id=N (or ?kind=causal for a causal LM)")
    if not 0 <= tok.mask_id < vocab:
        raise RedraftError(f"hf:{path}: mask id {tok.mask_id} is outside the vocabulary of "
                           f"{vocab}")
    shift = opts.get("shift", str(getattr(config, "model_type", "")).lower() == "dream")
    backbone = MaskedBackbone(_finish(model, device), vocab, _seq_len(config, opts), shift)
    process = make_process("mask", mask_id=tok.mask_id, vocab_size=vocab)
    return base(backbone, tok, "mdlm", process, name=name, path=None,
                 meta={"hf": path, "kind": "masked", "shift": shift},
                 default_new_tokens=DEFAULT_NEW_TOKENS)


def load_causal(path, config, opts, device, name, base):
    from transformers import AutoModelForCausalLM

    from redraft.hf.backbones import CausalBackbone

    model = _call("model", path, AutoModelForCausalLM.from_pretrained, path,
                  **_load_kwargs(path, opts.get("trust_remote_code", False),
                                 opts.get("revision")))
    vocab = _vocab(config)
    tok = _tokenizer(path, opts, vocab)
    backbone = CausalBackbone(_finish(model, device), vocab, _seq_len(config, opts))
    return base(backbone, tok, "ar", None, name=name, path=None,
                meta={"hf": path, "kind": "causal"}, decoder="hf_causal",
                default_new_tokens=DEFAULT_NEW_TOKENS)

