"""The default models that ship inside the package: `redraft.load("default")` and its
autoregressive twin `redraft.load("default-ar")`.

Each lives in a subfolder here (mdlm/, ar/) that is an ordinary redraft checkpoint folder
(config.json + model.safetensors + tokenizer files, checksummed), with two differences from what
`redraft train` writes: the weights are stored in bfloat16 (config.json says so in
`weights_dtype`; they load to float32), and there is no train_state.pt. config.json also holds
`shipped`: the facts the model card quotes (source checkpoint, steps, training time, tokens).

`redraft.default.shipping.ship(checkpoint, dest)` makes such a folder from a training
checkpoint; scripts/train_default.py trains the pair and calls it. MODEL_CARD.md (`card()`)
says what the models are and how well they do.
"""

from __future__ import annotations

from pathlib import Path

from redraft.errors import RedraftError

FOLDER = Path(__file__).parent
NAMES = {"default": "mdlm", "default-ar": "ar"}
"""Spec -> subfolder. These names win over a folder of the same name in the working directory
(give that one as ./default)."""


def shipped(spec) -> Path | None:
    """The folder of a shipped model named `spec` ("default", "default-ar"), None for any other
    spec; a RedraftError when the name is right but this install lacks the weights."""
    if not isinstance(spec, str) or spec not in NAMES:
        return None
    folder = FOLDER / NAMES[spec]
    if not (folder / "config.json").is_file():
        raise RedraftError(f"{spec!r}: this install of redraft has no default model (expected "
                           f"{str(folder)!r}); reinstall the package, or train one with "
                           "scripts/train_default.py")
    return folder


def card() -> str:
    """The model card (markdown)."""
    return (FOLDER / "MODEL_CARD.md").read_text(encoding="utf-8")
