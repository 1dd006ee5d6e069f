"""The bench's PNG plots (matplotlib, headless): quality vs steps, the quality-latency frontier,
the roofline, and diffusion-over-AR time against model size."""

from __future__ import annotations

import warnings
from pathlib import Path

from redraft.errors import RedraftError


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise RedraftError("plots need matplotlib: pip install 'redraft[bench]'") from None
    matplotlib.use("Agg")  # no display needed; never opens a window
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    tmp.replace(path)
    return path.name


def _at_temperature_one(runs):
    return [r for r in runs if r["temperature"] == 1.0] or runs


def quality_vs_calls(result: dict, path: Path) -> str | None:
    """gen-ppl and entropy against network calls per sample, one line per sampler setting
    (steps vary along it; adaptive samplers are single points)."""
    runs = [r for r in _at_temperature_one(result["runs"]) if r["gen_ppl"]]
    if not runs:
        return None
    plt = _pyplot()
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    ref = result.get("reference") or {}
    series: dict[tuple, list] = {}
    for r in runs:
        series.setdefault((r["model"], r["sampler"]), []).append(r)
    for (model, sampler), rs in series.items():
        label = model if sampler == "ar-kv" else f"{model} {sampler}"
        if sampler == "ar-kv":
            for ax, key in ((ax1, "gen_ppl"), (ax2, "entropy")):
                ax.axhline(rs[0][key], ls="--", color="C3", label=label)
            continue
        rs.sort(key=lambda r: r.get("nfe") or 0)
        calls = [r.get("nfe") or r["nfe_batch1"] for r in rs]
        ax1.plot(calls, [r["gen_ppl"] for r in rs], "o-", label=label)
        ax2.plot(calls, [r["entropy"] for r in rs], "o-", label=label)
    for ax, key, name in ((ax1, "gen_ppl", "gen-ppl (judge)"), (ax2, "entropy", "entropy (nats)")):
        if ref.get(key):
            ax.axhline(ref[key], ls=":", color="k", label="held-out text")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("network calls per sample")
        ax.set_ylabel(name)
    ax1.set_yscale("log")
    ax1.set_title("quality vs test-time compute")
    ax2.set_title("sample entropy")
    ax1.legend(fontsize=6)
    return _save(fig, path)


def frontier(result: dict, path: Path) -> str | None:
    runs = [r for r in _at_temperature_one(result["runs"]) if r["gen_ppl"]]
    if not runs:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    series: dict[tuple, list] = {}
    for r in runs:
        series.setdefault((r["model"], r["sampler"]), []).append(r)
    for (model, sampler), rs in series.items():
        rs.sort(key=lambda r: r["latency_s_batch1"])
        marker = "s" if sampler == "ar-kv" else "o-"
        ax.plot([r["latency_s_batch1"] for r in rs], [r["gen_ppl"] for r in rs], marker,
                label=model if sampler == "ar-kv" else f"{model} {sampler}")
        for r in rs:
            if sampler != "ar-kv":
                tag = r["steps"] or f"~{r.get('nfe') or r['nfe_batch1']:.0f}"
                ax.annotate(str(tag), (r["latency_s_batch1"], r["gen_ppl"]), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))
    ref = (result.get("reference") or {}).get("gen_ppl")
    if ref:
        ax.axhline(ref, ls=":", color="k", label="held-out text")
    ax.set_xscale("log")
    ax.set_xlabel(f"latency, batch 1, {result['length']} tokens (s)")
    ax.set_ylabel("gen-ppl (judge)")
    ax.set_yscale("log")
    ax.set_title("quality vs latency (labels: steps, ~calls if adaptive)")
    ax.legend(fontsize=6)
    return _save(fig, path)


def roofline(result: dict, path: Path) -> str:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    bw = result["mem_bandwidth_gbs"]
    xs = [0.1, 1e4]
    for peak, name, style in ((result["peak_matmul_gflops"], "fp32", "-"),
                              (result.get("peak_matmul_gflops_bf16"), "bf16", "--")):
        if peak:
            ridge = peak / bw
            ax.plot([xs[0], ridge, xs[1]], [bw * xs[0], peak, peak], style, color="k", lw=1.2,
                    label=f"roof {name}: {peak:.0f} GFLOP/s, {bw:.1f} GB/s")
    for r in result["runs"]:
        for suffix, marker in (("", "o"), ("_batch1", "^")):
            ai, gf = r[f"arithmetic_intensity{suffix}"], r[f"achieved_gflops{suffix}"]
            if ai is None:  # a Hugging Face model: no FLOP count
                continue
            color = "C3" if r["sampler"] == "ar-kv" else "C0"
            ax.plot(ai, gf, marker, color=color, ms=5, alpha=0.8)
    for r in result.get("sweep", []):
        color = "C3" if r["sampler"] == "ar-kv" else "C0"
        ax.plot(r["arithmetic_intensity"], r["achieved_gflops"], ".", color=color, alpha=0.35)
    ax.plot([], [], "o", color="C0", label="diffusion (o batch 16, ^ batch 1, . sweep)")
    ax.plot([], [], "o", color="C3", label="AR + KV cache")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte moved)")
    ax.set_ylabel("achieved GFLOP/s")
    ax.set_title("roofline (this machine, measured ceilings)")
    ax.legend(fontsize=7, loc="lower right")
    return _save(fig, path)


def crossover(result: dict, path: Path) -> str | None:
    cross = result.get("crossovers") or []
    if not cross:
        return None
    plt = _pyplot()
    batches = sorted({c["batch"] for c in cross})
    fig, axes = plt.subplots(1, len(batches), figsize=(4.5 * len(batches), 3.6), squeeze=False)
    length = max(c["length"] for c in cross)
    for ax, batch in zip(axes[0], batches, strict=True):
        for c in cross:
            if c["batch"] != batch or c["length"] != length:
                continue
            pts = c["ratios"]
            ax.plot([p["params"] for p in pts], [p["diffusion_over_ar"] for p in pts],
                    "o-" if c["dtype"] == "fp32" else "s--",
                    label=f"{c['sampler']} {c['dtype']}")
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("diffusion time / AR+KV time")
        ax.set_title(f"batch {batch}, {length} tokens (< 1: diffusion faster)")
        ax.legend(fontsize=6)
    return _save(fig, path)


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def all_plots(result: dict, out: Path) -> dict[str, str]:
    """{title: file name} of the plots that apply to this result (none without matplotlib)."""
    if not available():
        warnings.warn("matplotlib is not installed: the report has no plots "
                      "(pip install 'redraft[bench]')", stacklevel=2)
        return {}
    made = {
        "Quality vs network calls": quality_vs_calls(result, out / "quality_vs_calls.png"),
        "Quality vs latency": frontier(result, out / "frontier.png"),
        "Roofline": roofline(result, out / "roofline.png"),
        "Diffusion vs AR by model size": crossover(result, out / "crossover.png"),
    }
    return {k: v for k, v in made.items() if v}
