"""Pictures of a detector's predictions against the true boxes (``spquant detect plot RUN``)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

__all__ = ["draw_detections", "plot_detections"]


def draw_detections(ax, frames, boxes, detections, class_names=None, fontsize: int = 7) -> None:
    """Draw one sample on a matplotlib axis: event frames summed over T (ON red, OFF green), true
    boxes ``[x1, y1, x2, y2, class]`` white dashed, detections ``[x1, y1, x2, y2, score, class]``
    cyan with class and score."""
    from matplotlib.patches import Rectangle

    acc = frames.sum(0).numpy()  # [2, H, W]
    img = np.zeros((*acc.shape[1:], 3))
    scale = max(float(acc.max()), 1.0)
    img[..., 0] = np.clip(acc[1] / scale * 3, 0, 1)
    img[..., 1] = np.clip(acc[0] / scale * 3, 0, 1)
    ax.imshow(img, interpolation="nearest")
    ax.axis("off")

    def name(c):
        return class_names[int(c)] if class_names else str(int(c))

    for b in boxes.tolist():
        w, h = b[2] - b[0], b[3] - b[1]
        ax.add_patch(Rectangle((b[0] - 0.5, b[1] - 0.5), w, h, fill=False, ec="white", ls="--", lw=1.2))
        ax.text(b[0] - 0.5, b[3] + 0.3, name(b[4]), color="white", fontsize=fontsize, va="top")
    for d in detections:
        w, h = d[2] - d[0], d[3] - d[1]
        ax.add_patch(Rectangle((d[0] - 0.5, d[1] - 0.5), w, h, fill=False, ec="cyan", lw=1.4))
        ax.text(d[0] - 0.5, d[1] - 0.7, f"{name(d[5])} {d[4]:.2f}", color="cyan", fontsize=fontsize)


def plot_detections(model, ds, indices, path, conf_threshold: float = 0.3, class_names=None) -> None:
    """Save a figure of event frames (sum over T; ON red, OFF green) with true boxes (white, dashed)
    and predictions (cyan, with class and score)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    model.eval()
    n = len(indices)
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.4 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, i in zip(axes.flat, indices):
        frames, boxes = ds[i]
        with torch.no_grad():
            det = model.decode(model(frames[:, None]), conf_threshold=conf_threshold)[0]
        draw_detections(ax, frames, boxes, det.tolist(), class_names)
        ax.set_title(f"sample {i}", fontsize=8)
    fig.suptitle(
        f"true boxes (white, dashed: class) vs predictions (cyan: class score, score >= {conf_threshold})",
        fontsize=9,
    )
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
