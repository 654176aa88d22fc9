"""spquant.data: event-camera readers, datasets, transforms, an event-camera emulator and MNIST.

Data flow: files -> :mod:`readers` -> event arrays (:mod:`events`) -> :mod:`transforms` (frames) ->
:mod:`prepare` (on-disk frame cache, DataLoader of ``[T, B, C, H, W]`` batches). Static images
come from :mod:`idx` / :mod:`embedded` / :mod:`datasets` and can be turned into events by
:mod:`emulator`.

>>> import spquant.data as sd
>>> xtr, ytr, xte, yte = sd.load_embedded_mnist()
>>> ev = sd.emulate(xtr[0])
>>> sd.ToFrames(10, (34, 34))(ev).shape
torch.Size([10, 3, 34, 34])
"""

from spquant.data.datasets import (
    CIFAR10,
    CIFAR10DVS,
    KMNIST,
    MNIST,
    NMNIST,
    DVSGesture,
    FashionMNIST,
    Gen1Detection,
    IDXImages,
    Megapixel1Detection,
    NCaltech101,
    load_cifar10_batch,
    per_class_split_indices,
    random_split_indices,
)
from spquant.data.embedded import load_embedded_mnist
from spquant.data.emulated import EmulatedEvents, EmulatedMNIST, emulate_to_cache
from spquant.data.emulator import EmulatorConfig, emulate, emulate_batch, saccade_path
from spquant.data.events import (
    EVENT_DTYPE,
    EventFileError,
    Recording,
    finish_events,
    make_events,
    sort_events,
)
from spquant.data.fetch import SOURCES, FetchError, default_root, fetch
from spquant.data.idx import load_idx_split, read_idx, write_idx
from spquant.data.loader import mnist_frames
from spquant.data.readers import *  # noqa: F401,F403
from spquant.data.readers import __all__ as _readers_all
from spquant.data.transforms import (
    Compose,
    DirectEncode,
    RandomCrop,
    RandomFlip,
    Resize,
    ToFrames,
    direct_encode,
    random_crop,
    random_flip,
    resize,
    to_frames,
    to_frames_batch,
)

__all__ = [
    "EVENT_DTYPE",
    "EventFileError",
    "Recording",
    "make_events",
    "sort_events",
    "finish_events",
    *_readers_all,
    "read_idx",
    "write_idx",
    "load_idx_split",
    "load_embedded_mnist",
    "NMNIST",
    "NCaltech101",
    "CIFAR10DVS",
    "DVSGesture",
    "Gen1Detection",
    "Megapixel1Detection",
    "CIFAR10",
    "IDXImages",
    "MNIST",
    "FashionMNIST",
    "KMNIST",
    "load_cifar10_batch",
    "random_split_indices",
    "per_class_split_indices",
    "ToFrames",
    "Resize",
    "RandomCrop",
    "RandomFlip",
    "DirectEncode",
    "Compose",
    "to_frames",
    "to_frames_batch",
    "resize",
    "random_crop",
    "random_flip",
    "direct_encode",
    "EmulatorConfig",
    "emulate",
    "emulate_batch",
    "saccade_path",
    "EmulatedEvents",
    "EmulatedMNIST",
    "emulate_to_cache",
    "mnist_frames",
    "fetch",
    "FetchError",
    "SOURCES",
    "default_root",
    "Gen1DetectionFrames",
    "MovingDigits",
    "collate_detection",
]
from spquant.data.detection import Gen1DetectionFrames, MovingDigits, collate_detection  # noqa: E402
