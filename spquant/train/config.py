"""Training recipes: TOML files validated into frozen dataclasses.

A recipe has a top-level ``task`` (``classify``, the default, or ``detect``), the sections
``[model]``, ``[quant]``, ``[data]``, ``[train]``, ``[run]`` and, for detection, ``[detect]`` (every
key optional; the defaults are below) plus optional ``[variants.NAME]`` tables of dotted overrides,
e.g.::

    [variants.quant]
    "quant.mode" = "quant"

Recipes shipped with spquant live in ``spquant/configs/*.toml`` and are found by name
(``mnist``, ``vgg9-cifar10dvs``, ...); ``NAME:VARIANT`` (or ``NAME-VARIANT``) applies a variant. Any
path to a ``.toml`` file works too. ``--set section.key=value`` overrides are parsed as TOML values
(``--set train.lr=3e-4``, ``--set model.input=[32,32]``); a value that is not valid TOML is taken as
a string (``--set quant.mode=quant``). ``"none"`` sets an optional key to None.

Errors name the file, the key, the expected type and close matches (difflib)::

    config error in mnist.toml: unknown key 'train.lr_rate' (did you mean 'train.lr'?)
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from spquant.errors import ConfigError
from spquant.models.common import MODES, QuantSpec

__all__ = [
    "ConfigError",
    "Config",
    "ModelConfig",
    "DataConfig",
    "TrainConfig",
    "RunConfig",
    "DetectConfig",
    "TASKS",
    "load_config",
    "list_recipes",
    "parse_overrides",
    "config_from_dict",
]


@dataclass(frozen=True)
class ModelConfig:
    """The network. ``plan`` overrides the layer plan of VGG-9 (channel counts and "A" for 2x2
    average pooling) or of the YOLO backbone ("M" for 2x2 max pooling)."""

    name: str = "vgg9"
    width: float = 1.0
    input: tuple[int, int] = (32, 32)  # (H, W) the model sees; data is padded/resized to it
    in_channels: int = 1
    classes: int = 10
    T: int = 4
    plan: tuple | None = None
    anchors: tuple | None = None  # detectors: [[w, h], ...] in input pixels (None = the model's default)
    head_kernel: int = 1  # detectors: kernel of the head conv (1 = YOLOv2's 1x1; 3 reads neighbouring cells)

    def __post_init__(self):
        from spquant.models import MODELS

        _choice("model.name", self.name, sorted(MODELS))
        _positive("model.T", self.T)
        _positive("model.in_channels", self.in_channels)
        _positive("model.classes", self.classes)
        if self.anchors is not None:
            ok = all(
                isinstance(a, (list, tuple))
                and len(a) == 2
                and all(isinstance(v, (int, float)) and v > 0 for v in a)
                for a in self.anchors
            )
            if not ok or not self.anchors:
                raise ConfigError(
                    f"model.anchors must be a list of [w, h] pairs > 0, got {list(self.anchors)}"
                )
            object.__setattr__(self, "anchors", tuple(tuple(float(v) for v in a) for a in self.anchors))
        _positive("model.width", self.width)
        if len(self.input) != 2:
            raise ConfigError(f"model.input must be [H, W], got {list(self.input)}")
        if self.plan is not None:
            for item in self.plan:
                if not (item in ("A", "M") or (isinstance(item, int) and item > 0)):
                    raise ConfigError(
                        f'model.plan items must be positive channel counts, "A" (average) or "M" '
                        f"(max pooling, detectors), got {item!r}"
                    )


@dataclass(frozen=True)
class DataConfig:
    """The data. ``dataset``: ``mnist`` (static images, direct encoding), ``mnist-dvs`` (events from
    the emulator, frames), ``synthetic`` (random class templates, for tests), the detection sets
    ``moving-digits`` and ``gen1``, and the paper's sets.
    ``source``: ``embedded`` (the 6000/1000 MNIST subset inside spquant) or ``full`` (the files
    under the data root). ``root``: the dataset's folder; '' = ``$SPQUANT_DATA/<dataset>``
    (:mod:`spquant.data.roots`). ``options``: keyword arguments of the detection data sets
    (:class:`spquant.data.detection.MovingDigits`, :class:`~spquant.data.detection.Gen1DetectionFrames`);
    ``train_subset`` / ``test_subset`` are the sample counts of a generated set (moving-digits)."""

    dataset: str = "mnist"
    source: str = "embedded"
    root: str = ""
    encoding: str = "direct"  # 'direct' (static, repeated T times) or 'events'
    train_subset: int = 0  # 0 = all
    test_subset: int = 0
    resize: str = (
        "pad"  # how inputs become model.input: 'pad' (zero border), 'crop' (centre), 'resize' (bilinear)
    )
    augment: str = "none"  # '+'-joined: flip, roll, crop, shift, nda ('crop-flip' = crop+flip); docs/data.md
    cache: str = ""  # directory for encoded frames ('' = the default cache folder)
    options: dict = field(default_factory=dict)
    # event-frame preprocessing of the prepared data sets (spquant.data.prepare; docs/data.md)
    bins: str = "time"  # events -> model.T frames by equal 'time' spans or equal event 'count's
    polarity: str = "auto"  # 'count2' | 'polarity3' | 'auto' (model.in_channels 2 -> count2, 3 -> polarity3)
    integer: bool = False  # frames must stay integer counts (refuses data.resize='resize' of event frames)
    split: str = "authors"  # sets without an official split: 'authors' (seeded random) | 'per_class'
    layout: str = "auto"  # CIFAR10-DVS files: 'auto' | 'aedat2' | 'aedat4' | 'npz' (SpikingJelly)
    roll_px: int = 5  # augment 'roll' / 'nda': largest circular shift, pixels
    crop_pad: int = 4  # augment 'crop': zero padding before the random crop, pixels
    workers: int = 0  # DataLoader worker processes reading map-style data sets (0: the main process)

    def __post_init__(self):
        _choice("data.dataset", self.dataset, CLASSIFY_DATASETS + DETECT_DATASETS)
        _choice("data.encoding", self.encoding, ["direct", "events"])
        _choice("data.resize", self.resize, ["pad", "crop", "resize"])
        from spquant.data.transforms import parse_augment

        try:
            parse_augment(self.augment)
        except ValueError as e:
            raise ConfigError(f"data.augment: {e}") from None
        _choice("data.bins", self.bins, ["time", "count"])
        _choice("data.polarity", self.polarity, ["auto", "count2", "polarity3"])
        _choice("data.split", self.split, ["authors", "per_class"])
        _choice("data.layout", self.layout, ["auto", "aedat2", "aedat4", "npz"])
        for k in ("roll_px", "crop_pad", "workers"):
            if getattr(self, k) < 0:
                raise ConfigError(f"data.{k} must be >= 0, got {getattr(self, k)}")
        for k in ("train_subset", "test_subset"):
            if getattr(self, k) < 0:
                raise ConfigError(f"data.{k} must be >= 0 (0 = all), got {getattr(self, k)}")


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation. ``threshold_lr``: lr of the learnable thresholds (None = ``lr``).
    ``lam``/``phi``: TET loss (phi a number, 'one' or 'threshold'). ``prune_loss_weight``: weight of
    the gate predictor loss in spquant mode (None = spquant.prune's default). ``max_steps`` stops
    early (0 = no limit; for tests and smoke runs).
    ``init_from``: a finished FP32 run folder to start from (exact weight load, BN recalibrated on
    ``init_calib_batches`` training batches, gates opened; see spquant.train.init_from).
    ``distill_teacher``: a run folder whose network is the frozen teacher; the loss becomes
    ``(1 - distill_weight) * TET + distill_weight * KD`` with KD the per-step KL divergence at
    ``distill_temperature`` (see spquant.train.loss.distill_loss)."""

    epochs: int = 1
    batch_size: int = 64
    eval_batch_size: int = 500
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    schedule: str = "cosine"
    weight_decay: float = 0.0
    threshold_lr: float | None = None
    seed: int = 0
    lam: float = 0.05
    phi: str | float = "one"
    prune_loss_weight: float | None = None
    max_steps: int = 0
    init_from: str = ""
    init_calib_batches: int = 20
    distill_teacher: str = ""
    distill_weight: float = 0.5
    distill_temperature: float = 1.0

    def __post_init__(self):
        _choice("train.optimizer", self.optimizer, ["adam", "sgd"])
        _choice("train.schedule", self.schedule, ["cosine", "constant"])
        _positive("train.epochs", self.epochs)
        _positive("train.batch_size", self.batch_size)
        _positive("train.eval_batch_size", self.eval_batch_size)
        _positive("train.lr", self.lr)
        if not 0 <= self.lam <= 1:
            raise ConfigError(f"train.lam must be in [0, 1], got {self.lam}")
        if isinstance(self.phi, str):
            _choice("train.phi", self.phi, ["one", "threshold"])
        if self.max_steps < 0:
            raise ConfigError("train.max_steps must be >= 0")
        if self.init_calib_batches < 0:
            raise ConfigError("train.init_calib_batches must be >= 0")
        if not 0 <= self.distill_weight <= 1:
            raise ConfigError(f"train.distill_weight must be in [0, 1], got {self.distill_weight}")
        _positive("train.distill_temperature", self.distill_temperature)


@dataclass(frozen=True)
class RunConfig:
    """Book-keeping. ``checkpoint_every``: steps between checkpoints (0 = end of each epoch only).
    ``device``: auto, cpu or cuda. ``threads``: torch CPU threads (0 = auto: torch's default, or 1
    when the CPUs are already busy; -1 = leave torch's setting alone)."""

    log_every: int = 20
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    device: str = "auto"
    threads: int = 0
    progress: bool = True
    tensorboard: bool = True

    def __post_init__(self):
        _choice("run.device", self.device, ["auto", "cpu", "cuda"])
        _positive("run.log_every", self.log_every)
        _positive("run.keep_checkpoints", self.keep_checkpoints)
        if self.checkpoint_every < 0:
            raise ConfigError("run.checkpoint_every must be >= 0")


@dataclass(frozen=True)
class DetectConfig:
    """Detection only: the YOLOv2 loss weights (:class:`spquant.detect.YOLOLoss`) and decoding
    (confidence threshold, NMS IoU, detections per image) for mAP."""

    lambda_coord: float = 5.0
    lambda_obj: float = 1.0
    lambda_noobj: float = 0.5
    lambda_cls: float = 1.0
    ignore_threshold: float = 0.6
    class_radius: int = 0  # the class loss also at cells this many cells around the centre cell
    conf_threshold: float = 0.05
    nms_iou: float = 0.45
    max_det: int = 100

    def __post_init__(self):
        for k in ("lambda_coord", "lambda_obj", "lambda_noobj", "lambda_cls"):
            if getattr(self, k) < 0:
                raise ConfigError(f"detect.{k} must be >= 0, got {getattr(self, k)}")
        for k in ("ignore_threshold", "conf_threshold", "nms_iou"):
            if not 0 <= getattr(self, k) <= 1:
                raise ConfigError(f"detect.{k} must be in [0, 1], got {getattr(self, k)}")
        _positive("detect.max_det", self.max_det)
        if not isinstance(self.class_radius, int) or self.class_radius < 0:
            raise ConfigError(f"detect.class_radius must be an integer >= 0, got {self.class_radius!r}")

    def loss_weights(self) -> dict:
        return {
            k: getattr(self, k)
            for k in (
                "lambda_coord",
                "lambda_obj",
                "lambda_noobj",
                "lambda_cls",
                "ignore_threshold",
                "class_radius",
            )
        }


TASKS = ("classify", "detect")
CLASSIFY_DATASETS = [
    "mnist",
    "mnist-dvs",
    "synthetic",
    "cifar10-dvs",
    "ncaltech101",
    "cifar10",
    "nmnist",
    "dvs128-gesture",
]
DETECT_DATASETS = ["moving-digits", "gen1", "1mpx"]


@dataclass(frozen=True)
class Config:
    """A whole recipe. ``quant`` is a :class:`spquant.models.QuantSpec`; ``task`` is 'classify'
    or 'detect' (a detector: ``model.name = "yolo"``, a detection data set, ``[detect]``)."""

    name: str = "custom"
    description: str = ""
    task: str = "classify"
    model: ModelConfig = field(default_factory=ModelConfig)
    quant: QuantSpec = field(default_factory=QuantSpec)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    run: RunConfig = field(default_factory=RunConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)

    def __post_init__(self):
        _choice("task", self.task, TASKS)
        detector = self.model.name == "yolo"
        if (self.task == "detect") != detector:
            raise ConfigError(
                f"task {self.task!r} does not fit model.name {self.model.name!r} (detection uses 'yolo', "
                "classification any other model)"
            )
        if (self.task == "detect") != (self.data.dataset in DETECT_DATASETS):
            raise ConfigError(
                f"task {self.task!r} does not fit data.dataset {self.data.dataset!r} (detection sets: "
                f"{', '.join(DETECT_DATASETS)})"
            )
        if self.task == "detect" and self.data.augment != "none":
            raise ConfigError("data.augment is not supported for detection (boxes would have to move too)")

    @property
    def mode(self) -> str:
        return self.quant.mode

    def to_dict(self) -> dict:
        """Plain dict, TOML/JSON friendly (None is written as the string "none")."""
        return _none_str(dataclasses.asdict(self))

    def count_values(self) -> int | None:
        """Number of values in the state dict of :meth:`build_model`'s model, counted without
        allocating it (built on the meta device, initialisers skipped); None if that fails."""
        import contextlib
        from unittest import mock

        import torch

        inits = [n for n in dir(torch.nn.init) if n.endswith("_") and not n.startswith("_")]
        try:
            with contextlib.ExitStack() as stack:
                for n in inits:  # random init on meta tensors would import the compiler stack
                    stack.enter_context(mock.patch.object(torch.nn.init, n, lambda t, *a, **k: t))
                with torch.device("meta"):
                    model = self.build_model()
            return sum(v.numel() for v in model.state_dict().values())
        except ConfigError:
            raise
        except Exception:  # noqa: BLE001 - a model that cannot be built on meta: no estimate
            return None

    def build_model(self):
        """The model this recipe trains (on CPU, freshly initialised)."""
        from spquant.models import build_model

        kw = dict(
            num_classes=self.model.classes,
            in_channels=self.model.in_channels,
            input_size=tuple(self.model.input),
            width=self.model.width,
            spec=self.quant,
        )
        if self.model.plan is not None:
            if self.model.name not in ("vgg9", "yolo"):
                raise ConfigError("model.plan is only supported by vgg9 and yolo")
            kw["plan"] = tuple(self.model.plan)
        if self.model.anchors is not None:
            if self.model.name != "yolo":
                raise ConfigError("model.anchors is only for detectors (model.name = 'yolo')")
            kw["anchors"] = [list(a) for a in self.model.anchors]
        if self.model.name == "yolo":
            kw["head_kernel"] = self.model.head_kernel
        elif self.model.head_kernel != 1:
            raise ConfigError("model.head_kernel is only for detectors (model.name = 'yolo')")
        try:
            return build_model(self.model.name, **kw)
        except (ValueError, TypeError) as e:  # e.g. an input size the model cannot take
            raise ConfigError(f"config {self.name}: cannot build model {self.model.name!r}: {e}") from None


SECTIONS = {
    "model": ModelConfig,
    "quant": QuantSpec,
    "data": DataConfig,
    "train": TrainConfig,
    "run": RunConfig,
    "detect": DetectConfig,
}
TOP_KEYS = {"name": str, "description": str, "task": str}


# ---------------------------------------------------------------------------------------------
def _choice(key, value, choices):
    if value not in choices:
        hint = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        more = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"{key} must be one of {list(choices)}, got {value!r}{more}")


def _positive(key, value):
    if not value > 0:
        raise ConfigError(f"{key} must be > 0, got {value!r}")


def _none_str(d):
    if isinstance(d, dict):
        return {k: _none_str(v) for k, v in d.items()}
    if isinstance(d, (list, tuple)):
        return [_none_str(v) for v in d]
    return "none" if d is None else d


def _type_name(tp) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (tuple, list):
        return "array"
    if tp is type(None):
        return '"none"'
    return {int: "integer", float: "number", str: "string", bool: "boolean", dict: "table"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _coerce(value, tp, key: str, where: str):
    """Check ``value`` (parsed TOML) against annotation ``tp``; return the converted value."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (value is None or (isinstance(value, str) and value.lower() == "none")):
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, where)
            except ConfigError:
                pass
        raise ConfigError(
            f"config error in {where}: {key} must be {_type_name(tp)}, got {type(value).__name__} {value!r}"
        )
    if origin in (tuple, list) or tp in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(
                f"config error in {where}: {key} must be an array, got {type(value).__name__} {value!r}"
            )
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        if args and len(set(args)) == 1:
            value = [_coerce(v, args[0], f"{key}[{i}]", where) for i, v in enumerate(value)]
        return tuple(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
    elif tp is dict:
        if isinstance(value, dict):
            return dict(value)
    else:
        return value
    raise ConfigError(
        f"config error in {where}: {key} must be {_type_name(tp)}, got {type(value).__name__} {value!r}"
    )


def _unknown(key: str, known, where: str) -> ConfigError:
    section, _, name = key.rpartition(".")
    hint = difflib.get_close_matches(name, list(known), n=1, cutoff=0.5)
    if not hint:  # 'lr_rate' -> 'lr': a known key that prefixes the unknown one (or vice versa)
        hint = sorted((k for k in known if name.startswith(k) or k.startswith(name)), key=len, reverse=True)[
            :1
        ]
    full = [f"{section}.{h}" if section else h for h in hint]
    more = f" (did you mean {full[0]!r}?)" if full else ""
    return ConfigError(
        f"config error in {where}: unknown key {key!r}{more}; known keys: {', '.join(sorted(known))}"
    )


def _build_section(cls, raw: dict, section: str, where: str):
    if not isinstance(raw, dict):
        raise ConfigError(f"config error in {where}: [{section}] must be a table, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in names:
            raise _unknown(f"{section}.{key}", names, where)
        kwargs[key] = _coerce(value, hints[key], f"{section}.{key}", where)
    try:
        return cls(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"config error in {where}: {e}") from None
    except (ValueError, TypeError) as e:
        raise ConfigError(f"config error in {where}: [{section}] {e}") from None


def config_from_dict(raw: dict, where: str = "<dict>") -> Config:
    """Validate a parsed recipe (``variants`` must already be applied/removed).

    The one validator for recipes, ``--set`` overrides and the configs stored in run folders: types,
    choices, and the value ranges of :data:`LIMITS` (finite numbers, sane sizes).
    """
    if not isinstance(raw, dict):
        raise ConfigError(f"config error in {where}: a recipe must be a table, got {type(raw).__name__}")
    kwargs: dict[str, Any] = {}
    known = set(SECTIONS) | set(TOP_KEYS)
    for key, value in raw.items():
        if key == "variants":
            continue
        if key not in known:
            raise _unknown(key, known, where)
        if key in TOP_KEYS:
            kwargs[key] = _coerce(value, TOP_KEYS[key], key, where)
        else:
            kwargs[key] = _build_section(SECTIONS[key], value, key, where)
    try:
        cfg = Config(**kwargs)
    except ConfigError as e:
        raise ConfigError(f"config error in {where}: {e}") from None
    check_limits(cfg, where)
    return cfg


# (lo, hi) inclusive bounds of numeric settings; every float must also be finite. The upper bounds
# are far above any sensible run and keep a typo (or an edited run folder) from asking for
# terabytes or running for hours.
LIMITS: dict[str, tuple[float, float]] = {
    "model.width": (1e-6, 16.0),
    "model.input": (1, 4096),
    "model.in_channels": (1, 4096),
    "model.classes": (1, 100_000),
    "model.T": (1, 4096),
    "data.workers": (0, 256),
    "model.plan": (1, 65_536),
    "quant.membrane_lb": (-(2**15), 0),
    "quant.membrane_ub": (0, 2**15),
    "quant.membrane_k": (1e-6, 1e6),
    "quant.tau": (0.0, 1.0),
    "quant.threshold": (1e-9, 1e9),
    "quant.surrogate_param": (-1e9, 1e9),
    "data.train_subset": (0, 2**40),
    "data.test_subset": (0, 2**40),
    "train.epochs": (1, 1_000_000),
    "train.batch_size": (1, 1 << 20),
    "train.eval_batch_size": (1, 1 << 20),
    "train.lr": (1e-12, 1e3),
    "train.momentum": (0.0, 1.0),
    "train.weight_decay": (0.0, 1e3),
    "train.threshold_lr": (1e-12, 1e3),
    "train.seed": (0, 2**63 - 1),
    "train.lam": (0.0, 1.0),
    "train.phi": (-1e9, 1e9),
    "train.prune_loss_weight": (0.0, 1e9),
    "train.max_steps": (0, 2**40),
    "run.log_every": (1, 2**40),
    "run.checkpoint_every": (0, 2**40),
    "run.keep_checkpoints": (1, 1_000_000),
    "run.threads": (-1, 4096),
    "quant.prune.*": (-1e9, 1e9),
    "model.head_kernel": (1, 15),
    "model.anchors": (1e-6, 1e5),
    "detect.max_det": (1, 100_000),
    "detect.lambda_coord": (0.0, 1e6),
    "detect.lambda_obj": (0.0, 1e6),
    "detect.lambda_noobj": (0.0, 1e6),
    "detect.lambda_cls": (0.0, 1e6),
}


def _check_number(key: str, value, where: str, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"config error in {where}: {key} must be a finite number, got {value}")
    if not lo <= value <= hi:
        raise ConfigError(
            f"config error in {where}: {key} = {value} is outside the allowed range [{lo:g}, {hi:g}]"
        )


def check_limits(cfg: Config, where: str = "<config>") -> None:
    """Raise ConfigError when a numeric setting is not finite or outside :data:`LIMITS`."""
    for section in SECTIONS:
        obj = getattr(cfg, section)
        for f in dataclasses.fields(obj):
            key, value = f"{section}.{f.name}", getattr(obj, f.name)
            if key == "quant.prune":
                for k, v in value.items():
                    _check_number(f"quant.prune.{k}", v, where, *LIMITS["quant.prune.*"])
                continue
            lo, hi = LIMITS.get(key, (-(2**53), 2**53))
            if key == "model.anchors" and value is not None:  # [[w, h], ...]
                if not all(isinstance(a, (list, tuple)) and len(a) == 2 for a in value):
                    raise ConfigError(
                        f"config error in {where}: model.anchors must be [[w, h], ...], got {value!r:.80}"
                    )
                value = [v for a in value for v in a]
            for v in value if isinstance(value, (list, tuple)) else (value,):
                _check_number(key, v, where, lo, hi)
    q = cfg.quant
    _choice("quant.backend", q.backend, ["reference", "fused"])
    _choice("quant.membrane_grad", q.membrane_grad, ["stacked", "ste"])
    if isinstance(q.learn_threshold, str):
        _choice("quant.learn_threshold", q.learn_threshold, ["layer", "channel"])
    if not q.membrane_lb < q.membrane_ub:
        raise ConfigError(
            f"config error in {where}: quant.membrane_lb ({q.membrane_lb}) must be below "
            f"quant.membrane_ub ({q.membrane_ub})"
        )


# ---------------------------------------------------------------------------------------------
MAX_RECIPE_BYTES = 1 << 20
MAX_KEY_PARTS = 16
MAX_NESTING = 32


def parse_toml(text: str | bytes, where: str) -> dict:
    """Parse recipe text (bytes must be UTF-8) into a dict; ConfigError for anything malformed,
    oversized (over MAX_RECIPE_BYTES), too deeply nested (MAX_NESTING) or with dotted keys of more
    than MAX_KEY_PARTS parts (the TOML parser is slow on those)."""
    if isinstance(text, bytes):
        if len(text) > MAX_RECIPE_BYTES:
            raise ConfigError(
                f"config error in {where}: {len(text)} bytes is over the {MAX_RECIPE_BYTES}-byte limit"
            )
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError(f"config error in {where}: not UTF-8 text (byte {e.start})") from None
    if len(text) > MAX_RECIPE_BYTES:
        raise ConfigError(
            f"config error in {where}: {len(text)} characters is over the {MAX_RECIPE_BYTES} limit"
        )
    _check_shape(text, where)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config error in {where}: invalid TOML: {e}") from None
    except (ValueError, RecursionError) as e:  # e.g. an integer of more than 4300 digits
        raise ConfigError(f"config error in {where}: invalid TOML: {str(e)[:200]}") from None
    return raw


_TOML_STRING = re.compile(r"'[^']*'|\"(?:[^\"\\]|\\.)*\"")
_TOML_FLOAT = re.compile(r"\d[\d_]*\.\d")


def _check_shape(text: str, where: str) -> None:
    """Refuse dotted keys of MAX_KEY_PARTS parts or more and nesting deeper than MAX_NESTING on one
    line before the TOML parser sees them (its time grows with the square of a key's parts). Dots
    and brackets are counted outside strings and number literals: a cheap over-estimate."""
    for lineno, line in enumerate(text.splitlines(), 1):
        if "." not in line and "[" not in line and "{" not in line:
            continue
        line = _TOML_FLOAT.sub("0", _TOML_STRING.sub("s", line))
        if line.count(".") >= MAX_KEY_PARTS:
            raise ConfigError(
                f"config error in {where}: line {lineno}: a dotted key of more than {MAX_KEY_PARTS} parts"
            )
        if line.count("[") + line.count("{") > MAX_NESTING:
            raise ConfigError(
                f"config error in {where}: line {lineno} nests arrays/tables deeper than {MAX_NESTING}"
            )


def _parse_value(text: str):
    if len(text) > MAX_RECIPE_BYTES:
        raise ConfigError(f"--set value of {len(text)} characters is too long")
    _check_shape(text, "--set")
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    except (ValueError, RecursionError) as e:
        raise ConfigError(f"--set value {text[:60]!r}...: {str(e)[:200]}") from None


def parse_overrides(items: list[str] | None) -> list[tuple[str, Any]]:
    """``['train.lr=1e-3', 'quant.mode=quant']`` -> ``[('train.lr', 0.001), ('quant.mode', 'quant')]``."""
    out = []
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects KEY=VALUE (e.g. train.lr=3e-4), got {item!r}")
        out.append((key.strip(), _parse_value(value.strip())))
    return out


def _apply(raw: dict, key: str, value, where: str) -> None:
    parts = key.split(".")
    if parts[0] in TOP_KEYS and len(parts) == 1:
        raw[key] = value
        return
    if parts[0] not in SECTIONS:
        raise _unknown(parts[0], set(SECTIONS) | set(TOP_KEYS), where)
    if len(parts) < 2:
        raise ConfigError(f"config error in {where}: override {key!r} must name section.key")
    if len(parts) > MAX_KEY_PARTS or any(not p for p in parts):
        raise ConfigError(f"config error in {where}: override key {key[:80]!r} is not section.key")
    node = raw
    for p in parts[:-1]:  # nested tables, e.g. quant.prune.loss_weight
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config error in {where}: {key}: {p} is not a table")
    node[parts[-1]] = value


def _recipe_dir():
    return resources.files("spquant") / "configs"


def list_recipes() -> list[str]:
    """Names of the recipes shipped with spquant."""
    return sorted(p.name[:-5] for p in _recipe_dir().iterdir() if p.name.endswith(".toml"))


def _locate(spec: str) -> tuple[str, str, str | None]:
    """Resolve FILE or RECIPE[:VARIANT] -> (text, where, variant)."""
    p = Path(spec)
    if p.suffix == ".toml" or p.is_file():
        if not p.is_file():
            raise ConfigError(f"config file not found: {spec}")
        try:
            with open(p, "rb") as f:
                data = f.read(MAX_RECIPE_BYTES + 1)
        except OSError as e:
            raise ConfigError(f"config file {spec}: cannot read ({e.strerror})") from None
        return data, str(p), None
    name, _, variant = spec.partition(":")
    recipes = list_recipes()
    if name not in recipes and not variant:
        # NAME-VARIANT, e.g. vgg9-cifar10dvs-quant
        base, _, var = name.rpartition("-")
        if base in recipes:
            name, variant = base, var
    if name not in recipes:
        hint = difflib.get_close_matches(name, recipes, n=1)
        more = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"no config file or recipe named {spec!r}{more}; recipes: {', '.join(recipes)}")
    text = (_recipe_dir() / f"{name}.toml").read_text()
    return text, f"recipe {name}", variant or None


def load_config(spec: str | Path, overrides: list[str] | list[tuple[str, Any]] | None = None) -> Config:
    """Load a recipe by file path or name (``NAME[:VARIANT]``), apply ``--set`` overrides, validate."""
    text, where, variant = _locate(str(spec))
    raw = parse_toml(text, where)
    variants = raw.pop("variants", {}) or {}
    if not isinstance(variants, dict) or not all(isinstance(v, dict) for v in variants.values()):
        raise ConfigError(f"config error in {where}: [variants] must hold tables of dotted overrides")
    if variant is not None:
        if variant not in variants:
            raise ConfigError(
                f"config error in {where}: no variant {variant!r}; variants: {', '.join(sorted(variants)) or 'none'}"
            )
        for key, value in variants[variant].items():
            _apply(raw, key, value, f"{where} [variants.{variant}]")
        raw.setdefault("name", Path(where.split()[-1]).stem)
        if not isinstance(raw["name"], str):
            raise ConfigError(f"config error in {where}: name must be a string, got {raw['name']!r}")
        raw["name"] = f"{raw['name']}:{variant}"
    if overrides:
        pairs = parse_overrides(overrides) if isinstance(overrides[0], str) else overrides
        for key, value in pairs:
            _apply(raw, key, value, f"{where} (--set {key})")
    return config_from_dict(raw, where)


def variants_of(spec: str) -> list[str]:
    """Variant names defined by a recipe (e.g. ['fp32', 'quant', 'spquant'])."""
    text, where, _ = _locate(spec.partition(":")[0])
    variants = parse_toml(text, where).get("variants") or {}
    if not isinstance(variants, dict):
        raise ConfigError(f"config error in {where}: [variants] must be a table")
    return sorted(variants)


assert set(MODES) == {"fp32", "quant", "spquant"}
