"""Build ``spquant/data/assets/mnist_subset.npz``: a class-balanced real MNIST subset.

Takes, for every digit, the first 600 training images and the first 100 test images (file order)
of the original MNIST IDX files — deterministic, no randomness — and stores them as uint8 with
``np.savez_compressed``. Run:

    python -m spquant.data.make_assets --mnist $SPQUANT_DATA/mnist
"""

from __future__ import annotations

import argparse
import hashlib
import os
from pathlib import Path

import numpy as np

from spquant.data.idx import load_idx_split

ASSET_DIR = Path(__file__).resolve().parent / "assets"
SUBSET_FILE = ASSET_DIR / "mnist_subset.npz"
PER_CLASS = {"train": 600, "test": 100}


def balanced_indices(labels: np.ndarray, per_class: int, n_classes: int = 10) -> np.ndarray:
    """Indices of the first ``per_class`` samples of each class, in file order."""
    out = []
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)[:per_class]
        if idx.size < per_class:
            raise ValueError(f"class {c} has only {idx.size} samples, need {per_class}")
        out.append(idx)
    return np.sort(np.concatenate(out))


def make_mnist_subset(mnist_root, out: os.PathLike = SUBSET_FILE) -> dict:
    arrays = {}
    for split, per in PER_CLASS.items():
        images, labels = load_idx_split(mnist_root, split)
        idx = balanced_indices(labels, per)
        arrays[f"{split}_images"] = images[idx]
        arrays[f"{split}_labels"] = labels[idx].astype(np.uint8)
        arrays[f"{split}_source_index"] = idx.astype(np.int32)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    return {k: v.shape for k, v in arrays.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mnist", required=True, help="folder with the four MNIST IDX files (.gz or raw)")
    ap.add_argument("--out", default=str(SUBSET_FILE))
    args = ap.parse_args(argv)
    shapes = make_mnist_subset(args.mnist, args.out)
    digest = hashlib.sha256(Path(args.out).read_bytes()).hexdigest()
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB, sha256 {digest[:16]}...): {shapes}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
