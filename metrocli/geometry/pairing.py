"""Which pairs of photos to try: capture order plus image retrieval, not all N(N-1)/2 pairs.

* **Sequential**: each photo with the next ``window`` photos in capture order (file name order, which for
  phone photos and video frames is the time order).
* **Retrieval**: a bag of visual words built from the collection's own SIFT descriptors (k-means with
  OpenCV, no external vocabulary), tf-idf weighted histograms, cosine similarity; each photo with its ``k``
  most similar photos (this finds the loop closures of an orbit and photos taken out of order).

The cost is about ``(window + k) * N`` pairs instead of ``N(N-1)/2``.

numpy + OpenCV only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def sequential_pairs(n: int, window: int = 2) -> set[tuple[int, int]]:
    """``(i, j)`` with ``i < j <= i + window``."""
    return {(i, j) for i in range(n) for j in range(i + 1, min(n, i + window + 1))}


def bag_of_words(descriptors: Sequence[np.ndarray | None], *, words: int = 128, seed: int = 0) -> np.ndarray:
    """``(N, words)`` L2-normalised tf-idf histograms of each photo's descriptors over a vocabulary learnt
    (k-means) from a sample of all of them. Photos without descriptors get a zero row."""
    import cv2

    valid = [np.asarray(d, np.float32) for d in descriptors if d is not None and len(d)]
    n = len(descriptors)
    if not valid:
        return np.zeros((n, 1))
    pool = np.concatenate(valid)
    rng = np.random.default_rng(seed)
    if len(pool) > 200 * words:
        pool = pool[rng.choice(len(pool), 200 * words, replace=False)]
    k = max(1, min(words, len(pool) // 4))
    cv2.setRNGSeed(seed)
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 15, 1e-3)
    labels = np.zeros((len(pool), 1), np.int32)
    _, _, centres = cv2.kmeans(pool, k, labels, crit, 1, cv2.KMEANS_PP_CENTERS)
    centres = np.asarray(centres, np.float32)
    c2 = (centres**2).sum(axis=1)
    hist = np.zeros((n, k))
    for idx, d in enumerate(descriptors):
        if d is None or not len(d):
            continue
        d = np.asarray(d, np.float32)
        nearest = np.argmin(c2[None, :] - 2.0 * d @ centres.T, axis=1)
        hist[idx] = np.bincount(nearest, minlength=k)
    df = (hist > 0).sum(axis=0)
    idf = np.log((n + 1) / (df + 1)) + 1e-3
    tfidf = hist / np.maximum(hist.sum(axis=1, keepdims=True), 1) * idf
    norms = np.linalg.norm(tfidf, axis=1, keepdims=True)
    return np.where(norms > 0, tfidf / np.maximum(norms, 1e-12), 0.0)


def retrieval_pairs(histograms: np.ndarray, k: int = 4) -> set[tuple[int, int]]:
    """``(i, j)``, ``i < j``: each photo with its ``k`` most similar others (cosine of the histograms)."""
    n = len(histograms)
    sim = histograms @ histograms.T
    np.fill_diagonal(sim, -np.inf)
    out: set[tuple[int, int]] = set()
    for i in range(n):
        for j in np.argsort(-sim[i])[: min(k, n - 1)]:
            if np.isfinite(sim[i, j]):
                out.add((min(i, int(j)), max(i, int(j))))
    return out


def candidate_pairs(
    descriptors: Sequence[np.ndarray | None], *, window: int = 2, k: int = 4, seed: int = 0
) -> list[tuple[int, int]]:
    """Sorted union of :func:`sequential_pairs` and :func:`retrieval_pairs` (all pairs for small sets)."""
    n = len(descriptors)
    if n <= window + k + 1:
        return [(i, j) for i in range(n) for j in range(i + 1, n)]
    pairs = sequential_pairs(n, window) | retrieval_pairs(bag_of_words(descriptors, seed=seed), k)
    return sorted(pairs)
