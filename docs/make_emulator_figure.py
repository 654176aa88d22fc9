"""Make docs/img/emulated_vs_real_nmnist.png: a real N-MNIST recording next to an emulated MNIST digit.

Both on the 34x34 N-MNIST sensor, binned into 6 equal time bins with the authors' 3-channel colouring
(ON red, OFF green, latest event wins), plus all events accumulated (ON - OFF counts).

    python docs/make_emulator_figure.py [--real ../shared/data/events/sample_nmnist.bin] [--digit 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import spquant.data as sd  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_REAL = HERE.parent / ".." / "shared" / "data" / "events" / "sample_nmnist.bin"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--real", default=str(DEFAULT_REAL))
    ap.add_argument(
        "--digit",
        type=int,
        default=None,
        help="index into the embedded MNIST test subset (default: the first test digit with --label)",
    )
    ap.add_argument(
        "--label", type=int, default=4, help="class of the emulated digit (the real sample shows a 4)"
    )
    ap.add_argument("--bins", type=int, default=6)
    ap.add_argument("--out", default=str(HERE / "img" / "emulated_vs_real_nmnist.png"))
    args = ap.parse_args(argv)

    real = sd.read_atis_bin(args.real, sensor_size=(34, 34)).events
    _, _, xte, yte = sd.load_embedded_mnist()
    if args.digit is None:
        args.digit = int(np.flatnonzero(yte == args.label)[0])
    # invert_polarity=True: N-MNIST's files mark the leading edge of the moving bright digit as OFF
    emu = sd.emulate(xte[args.digit], invert_polarity=True)
    rows = [
        (f"real N-MNIST recording\n{real.size} events", real),
        (f"emulated MNIST '{yte[args.digit]}'\n{emu.size} events", emu),
    ]
    T = args.bins
    fig, axes = plt.subplots(2, T + 1, figsize=(1.7 * (T + 1), 4.0))
    for r, (title, ev) in enumerate(rows):
        frames = sd.to_frames(ev, (34, 34), T, mode="polarity3")
        t0, t1 = int(ev["t"][0]), int(ev["t"][-1])
        edges = np.linspace(t0, t1 + 1, T + 1) - t0
        for k in range(T):
            ax = axes[r, k]
            ax.imshow(frames[k].transpose(1, 2, 0), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{edges[k] / 1000:.0f}-{edges[k + 1] / 1000:.0f} ms", fontsize=8)
        counts = sd.to_frames(ev, (34, 34), 1, mode="count2")[0]
        lim = max(1.0, np.abs(counts[1] - counts[0]).max())
        ax = axes[r, T]
        ax.imshow(counts[1] - counts[0], cmap="RdGy_r", vmin=-lim, vmax=lim, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("all: ON - OFF", fontsize=8)
        axes[r, 0].set_ylabel(title, fontsize=8)
    fig.suptitle(
        "34x34 sensor, 6 equal time bins; red = ON, green = OFF (latest event per pixel); "
        "emulator defaults + invert_polarity=True (N-MNIST's sign)",
        fontsize=9,
    )
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}: real {real.size} events, emulated {emu.size} events")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
