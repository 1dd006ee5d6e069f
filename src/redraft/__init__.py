"""redraft: diffusion language models — train, sample, measure and serve, CPU first.

    import redraft
    m = redraft.load()  # "default": masked diffusion on Python source, shipped in the package
    print(m.infill("def add(a, b):\\n    <|mask:<=24|>\\n"))
    m = redraft.load("runs/shakespeare-mdlm")  # or a checkpoint you trained
    print(m.generate("ROMEO:", max_new_tokens=64))
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy, so that `import redraft` (and the CLI's start-up) does not import torch.
    if name in ("load", "Model", "Output", "Score"):
        from redraft import model

        return getattr(model, name)
    if name == "speculative":
        from redraft.decoders.speculative import speculative

        return speculative
    raise AttributeError(f"module 'redraft' has no attribute {name!r}")


__all__ = ["Model", "Output", "Score", "load", "speculative"]
