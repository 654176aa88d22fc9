import torch

from spquant.train.config import load_config
from spquant.train.data import load_split, synthetic_split
from spquant.train.loop import epoch_order, lr_factor


def test_embedded_mnist_in_memory_padded_and_resized():
    cfg = load_config("demo", ["data.train_subset=100"])
    tr, te = load_split(cfg, "train"), load_split(cfg, "test")
    assert tr.inputs.shape == (100, 1, 28, 28) and tr.inputs.dtype == torch.uint8 and len(te) == 1000
    x, y = tr.batch(torch.arange(5), T=3)
    assert (
        x.shape == (3, 5, 1, 28, 28)
        and x.dtype == torch.float32
        and 0 <= float(x.min())
        and float(x.max()) <= 1
    )
    assert torch.equal(x[0], x[2])  # direct encoding: the same image at every step
    padded = load_split(load_config("demo", ["data.train_subset=10", "model.input=[32,32]"]), "train")
    assert padded.inputs.shape[-2:] == (32, 32) and padded.inputs[..., :2, :].sum() == 0
    resized = load_split(
        load_config("demo", ["data.train_subset=10", "model.input=[32,32]", "data.resize='resize'"]), "train"
    )
    assert resized.inputs.shape[-2:] == (32, 32)


def test_frames_and_augmentation_are_deterministic():
    d = synthetic_split(20, 3, (2, 8, 8), seed=1, split="train", T=4)
    x, y = d.batch(torch.arange(6), T=4)
    assert x.shape == (4, 6, 2, 8, 8)
    a = d.batch(torch.arange(6), 4, "crop-flip", torch.Generator().manual_seed(5))[0]
    b = d.batch(torch.arange(6), 4, "crop-flip", torch.Generator().manual_seed(5))[0]
    assert torch.equal(a, b) and not torch.equal(a, x)


def test_epoch_order_and_schedule():
    assert torch.equal(epoch_order(10, 0, 1), epoch_order(10, 0, 1))
    assert not torch.equal(epoch_order(10, 0, 1), epoch_order(10, 0, 2))
    shards = [epoch_order(11, 0, 0, r, 2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 6 and set(torch.cat(shards).tolist()) == set(range(11))
    assert (
        lr_factor(0, 100, "cosine") == 1.0
        and abs(lr_factor(50, 100, "cosine") - 0.5) < 1e-12
        and lr_factor(100, 100, "cosine") == 0.0
    )
    assert lr_factor(70, 100, "constant") == 1.0


def test_fit_centre_crop_keeps_integer_values_exactly():
    import torch

    from spquant.train.data import _fit

    frames = (
        torch.arange(2 * 3 * 2 * 34 * 34, dtype=torch.int64)
        .remainder(7)
        .to(torch.uint8)
        .reshape(2, 3, 2, 34, 34)
    )
    out = _fit(frames, (32, 32), "crop")
    assert out.dtype == torch.uint8 and out.shape == (2, 3, 2, 32, 32)
    assert torch.equal(out, frames[..., 1:33, 1:33])
    import pytest

    with pytest.raises(ValueError, match="cannot crop"):
        _fit(frames, (40, 40), "crop")
