import io

from redraft.demo import run_demo
from redraft.display import DraftView


def test_demo_runs_end_to_end_small(tmp_path, monkeypatch):
    monkeypatch.setenv("REDRAFT_CACHE", str(tmp_path / "cache"))
    out = io.StringIO()
    tiny = ["model.n_layer=1", "model.n_head=2", "model.d_model=32", "model.seq_len=64",
            "train.progress=false", "train.batch_size=4", "train.eval_batches=1"]
    results = run_demo(minutes=0.05, out_dir=str(tmp_path / "demo"), overrides=tiny, stream=out)
    text = out.getvalue()
    assert set(results) == {"mdlm", "ar"}
    assert "masked diffusion" in text and "AR twin" in text
    assert "upper bound (ELBO)" in text and "exact NLL" in text
    assert "── step 64/64" in text  # the last frame of the denoising view
    assert "AR twin + KV cache" in text


def test_draft_view_snapshots_when_not_a_tty():
    out = io.StringIO()
    view = DraftView(lambda ids, mask_text: "".join(mask_text if i < 0 else "x" for i in ids),
                     steps=8, stream=out, snapshots=2)
    for step in range(8):
        view(step, [[-1] * (8 - step - 1) + [1] * (step + 1)])
    text = out.getvalue()
    assert text.count("── step") == 2
    assert "step 4/8" in text and "step 8/8" in text and "xxxxxxxx" in text
