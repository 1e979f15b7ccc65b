"""Built-in batch sequences for ``normspec diagnose`` (``python:normspec.diagnose.examples:NAME``).

``two_distributions``: the situation of a TensorFlow user whose model trained to a low loss but
evaluated badly on its own training set: images from two sources, A (channel values around 0)
and B (around 5, twice the spread), each batch from one source only.  ``shuffled``: the same
images in shuffled batches.  Seeded, so every run sees the same data.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

__all__ = ["two_distributions", "shuffled", "images"]

BATCH, STEPS, SHAPE = 32, 200, (3, 4, 4)


def images(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The two sources' images, float32 ``(STEPS * BATCH // 2, 3, 4, 4)`` each."""
    rng = np.random.default_rng(seed)
    half = STEPS * BATCH // 2
    a = rng.standard_normal((half, *SHAPE))
    b = 5 + 2 * rng.standard_normal((half, *SHAPE))
    return a.astype(np.float32), b.astype(np.float32)


def two_distributions(seed: int = 0) -> Iterator[np.ndarray]:
    """Batches of ``BATCH`` images, alternately all from A and all from B."""
    a, b = images(seed)
    for k in range(STEPS):
        source = a if k % 2 == 0 else b
        start = (k // 2) * BATCH
        yield source[start : start + BATCH]


def shuffled(seed: int = 0) -> Iterator[np.ndarray]:
    """The same images in batches drawn at random from both sources."""
    a, b = images(seed)
    everything = np.concatenate([a, b])
    order = np.random.default_rng(seed + 1).permutation(len(everything))
    for k in range(STEPS):
        yield everything[order[k * BATCH : (k + 1) * BATCH]]
