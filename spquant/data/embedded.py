"""The real MNIST subset shipped inside the package (no download needed).

6,000 training images (600 per digit) and 1,000 test images (100 per digit), the first of each class
in the original files' order; see ``assets/MNIST_ATTRIBUTION.txt`` (MNIST by LeCun, Cortes and
Burges, CC BY-SA 3.0) and ``make_assets.py``.

>>> xtr, ytr, xte, yte = load_embedded_mnist()
>>> xtr.shape, xte.shape, xtr.dtype.name
((6000, 28, 28), (1000, 28, 28), 'uint8')
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

ASSET = Path(__file__).resolve().parent / "assets" / "mnist_subset.npz"
ATTRIBUTION = Path(__file__).resolve().parent / "assets" / "MNIST_ATTRIBUTION.txt"


@lru_cache(maxsize=1)
def _load() -> dict[str, np.ndarray]:
    if not ASSET.is_file():
        raise FileNotFoundError(
            f"embedded MNIST subset missing: {ASSET} (rebuild with python -m spquant.data.make_assets --mnist DIR)"
        )
    with np.load(ASSET, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def load_embedded_mnist() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_images uint8 [6000, 28, 28], train_labels int64 [6000], test_images uint8 [1000, 28, 28],
    test_labels int64 [1000]). Fresh copies, safe to modify."""
    d = _load()
    return (
        d["train_images"].copy(),
        d["train_labels"].astype(np.int64),
        d["test_images"].copy(),
        d["test_labels"].astype(np.int64),
    )


def embedded_source_indices() -> tuple[np.ndarray, np.ndarray]:
    """Indices of the embedded images in the original MNIST train / test files."""
    d = _load()
    return d["train_source_index"].astype(np.int64), d["test_source_index"].astype(np.int64)
