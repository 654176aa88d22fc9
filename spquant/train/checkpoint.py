"""Checkpoints: tensors in safetensors, everything else in a JSON sidecar; written atomically.

A checkpoint is two files in ``RUN/checkpoints/``::

    step-00000120.safetensors   model.* (state_dict), optim.<param>.<key> (optimizer state), rng.*
    step-00000120.json          config, versions, epoch / step, optimizer param groups, metrics,
                                the SHA-256 of the .safetensors file and the integrity hash

Each file is written to a temporary name, fsync'ed and renamed over the target (``os.replace``),
and the JSON — written last — is the commit record: a checkpoint counts only if its JSON exists
and its ``integrity`` hash matches: SHA-256 over the tensor file's hash and the canonical JSON of
the sidecar itself (every field but ``integrity``), so an edit of either file is detected. The
sidecar's config is then validated like a recipe (:func:`spquant.train.config.config_from_dict`). A run killed at any point (SIGKILL mid-write included)
therefore leaves either the previous checkpoint or the new one, never a torn one. Loading never
executes code (safetensors + json only).
"""

from __future__ import annotations

import hashlib
import json
import platform
import re
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from spquant.errors import CheckpointError
from spquant.fileio import _test_hook, atomic_write

__all__ = [
    "CheckpointError",
    "atomic_write",
    "save_checkpoint",
    "load_checkpoint",
    "latest_checkpoint",
    "restore_model",
    "restore_optimizer",
    "save_model",
    "load_model_file",
    "versions",
]

FORMAT = "spquant-checkpoint/2"
MAX_SIDECAR_BYTES = 64 << 20
_TENSOR_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,200}\.safetensors$")
_STEP = re.compile(r"step-(\d+)\.json$")


def versions() -> dict:
    import numpy
    import safetensors

    from spquant import __version__

    return {
        "spquant": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "safetensors": safetensors.__version__,
        "python": platform.python_version(),
    }


def _json_bytes(obj) -> bytes:
    return (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode()


# -- tensors <-> flat dicts ----------------------------------------------------------------------
def _model_tensors(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {f"model.{k}": v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}


def _optimizer_tensors(optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for key, val in st.items():
            if torch.is_tensor(val):
                tensors[f"optim.{pid}.{key}"] = val.detach().cpu().contiguous().clone()
            else:
                scalars[f"{pid}.{key}"] = val
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def save_checkpoint(
    run_dir,
    step: int,
    model,
    optimizer,
    state: dict,
    config: dict,
    metrics: dict | None = None,
    keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` atomically; keep the newest ``keep`` ones. Returns the JSON path."""
    ck_dir = Path(run_dir) / "checkpoints"
    ck_dir.mkdir(parents=True, exist_ok=True)
    tensors = _model_tensors(model)
    opt_tensors, opt_meta = _optimizer_tensors(optimizer)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors["rng.cuda"] = torch.cuda.get_rng_state()
    blob = st_save(tensors, metadata={"format": FORMAT, "step": str(step)})
    name = f"step-{step:08d}"
    atomic_write(ck_dir / f"{name}.safetensors", blob)
    _test_hook("between-files")
    meta = {
        "format": FORMAT,
        "tensors": f"{name}.safetensors",
        "sha256": hashlib.sha256(blob).hexdigest(),
        "step": step,
        "state": state,
        "optimizer": opt_meta,
        "config": config,
        "versions": versions(),
        "metrics": metrics or {},
    }
    json_path = ck_dir / f"{name}.json"
    atomic_write(json_path, _sealed_json(meta))
    # prune old checkpoints (JSON first so a half-deleted one is never taken as valid)
    for old in _checkpoint_jsons(ck_dir)[keep:]:
        old.unlink(missing_ok=True)
        (ck_dir / (old.name[:-5] + ".safetensors")).unlink(missing_ok=True)
    for tmp in ck_dir.glob(".*.tmp"):  # leftovers of a killed writer
        tmp.unlink(missing_ok=True)
    return json_path


def _checkpoint_jsons(ck_dir: Path) -> list[Path]:
    found = [(int(m.group(1)), p) for p in ck_dir.glob("step-*.json") if (m := _STEP.search(p.name))]
    return [p for _, p in sorted(found, reverse=True)]


def _canonical(meta: dict) -> bytes:
    body = {k: v for k, v in meta.items() if k != "integrity"}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _integrity(meta: dict) -> str:
    """SHA-256 binding the sidecar (all fields but ``integrity``) to its tensor file's hash."""
    h = hashlib.sha256(FORMAT.encode() + b"\0")
    h.update(str(meta.get("sha256")).encode() + b"\0")
    h.update(_canonical(meta))
    return h.hexdigest()


def _sealed_json(meta: dict) -> bytes:
    """The sidecar's bytes with its ``integrity`` field (computed over what a reader will parse)."""
    meta = json.loads(_json_bytes(meta))
    meta["integrity"] = _integrity(meta)
    return _json_bytes(meta)


def _read_sidecar(json_path: Path) -> dict:
    try:
        size = json_path.stat().st_size
        if size > MAX_SIDECAR_BYTES:
            raise CheckpointError(
                f"checkpoint sidecar {json_path} is {size} bytes, over the {MAX_SIDECAR_BYTES}-byte limit"
            )
        raw = json_path.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint sidecar {json_path}: {e.strerror}") from None
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (ValueError, RecursionError) as e:  # JSONDecodeError, UnicodeDecodeError, over-long integers
        raise CheckpointError(f"checkpoint sidecar {json_path} is not valid JSON: {str(e)[:200]}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint sidecar {json_path} is not a JSON object")
    if meta.get("format") != FORMAT:
        fmt = str(meta.get("format"))[:60]
        raise CheckpointError(
            f"{json_path}: unknown checkpoint format {fmt!r} (expected {FORMAT}; "
            "checkpoints of spquant-checkpoint/1 carry no sidecar integrity hash: re-train)"
        )
    for key in ("tensors", "sha256", "integrity"):
        if not isinstance(meta.get(key), str):
            raise CheckpointError(f"{json_path}: sidecar field {key!r} missing or not a string")
    if not _TENSOR_NAME.match(meta["tensors"]):
        raise CheckpointError(
            f"{json_path}: sidecar names the tensor file {meta['tensors'][:80]!r}; expected a "
            "plain '<name>.safetensors' in the same folder"
        )
    if _integrity(meta) != meta["integrity"]:
        raise CheckpointError(
            f"{json_path}: sidecar integrity hash mismatch (the JSON was edited or corrupted)"
        )
    return meta


def _check_sidecar_fields(json_path: Path, meta: dict) -> None:
    """Types of the fields the trainer reads back (an edit that kept the hash valid is still refused
    when it does not fit)."""
    want = {"step": int, "state": dict, "optimizer": dict, "config": dict, "metrics": dict}
    for key, tp in want.items():
        if key in meta and (not isinstance(meta[key], tp) or isinstance(meta[key], bool)):
            raise CheckpointError(
                f"{json_path}: sidecar field {key!r} must be {tp.__name__}, got {type(meta[key]).__name__}"
            )
    if isinstance(meta.get("step"), int) and not 0 <= meta["step"] < 2**62:
        raise CheckpointError(f"{json_path}: sidecar step {meta['step']} out of range")
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{json_path}: the sidecar holds no config table")
    if "state" in meta:
        for key in ("epoch", "step_in_epoch", "global_step"):
            if key not in meta["state"]:
                continue
            v = meta["state"][key]
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < 2**62:
                raise CheckpointError(
                    f"{json_path}: sidecar state.{key} must be an integer >= 0, got {v!r:.40}"
                )


def load_checkpoint(json_path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, sidecar) of a checkpoint; CheckpointError if missing, torn, modified or corrupted."""
    json_path = Path(json_path)
    if not json_path.is_file():
        raise CheckpointError(f"checkpoint not found: {json_path}")
    meta = _read_sidecar(json_path)
    _check_sidecar_fields(json_path, meta)
    tpath = json_path.parent / meta["tensors"]
    if not tpath.is_file():
        raise CheckpointError(f"checkpoint tensors missing: {tpath}")
    try:
        blob = tpath.read_bytes()
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint tensors {tpath}: {e.strerror}") from None
    if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
        raise CheckpointError(
            f"checkpoint tensors {tpath} do not match their sidecar (torn or modified file)"
        )
    try:
        tensors = st_load(blob)
    except Exception as e:  # safetensors reports a malformed header as SafetensorError
        raise CheckpointError(
            f"checkpoint tensors {tpath} are not a valid safetensors file ({str(e)[:200]})"
        ) from None
    return tensors, meta


def latest_checkpoint(run_dir) -> Path | None:
    """The newest valid checkpoint's JSON in ``RUN/checkpoints`` (torn or modified ones are skipped),
    or None."""
    ck_dir = Path(run_dir) / "checkpoints"
    if not ck_dir.is_dir():
        return None
    for p in _checkpoint_jsons(ck_dir):
        try:
            load_checkpoint(p)
        except CheckpointError:
            continue
        return p
    return None


def restore_model(
    model: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str = "checkpoint"
) -> None:
    """Load ``model.*`` tensors into ``model``; clear errors for missing/unexpected keys and shapes."""
    sd = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    bad = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in sd and sd[k].shape != own[k].shape
    ]
    if missing or unexpected or bad:
        parts = []
        if missing:
            parts.append(f"missing {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        if bad:
            parts.append("shape mismatch " + "; ".join(bad[:5]))
        raise CheckpointError(f"{where} does not fit the model built from the config: " + ", ".join(parts))
    model.load_state_dict(sd)


def restore_optimizer(optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    try:
        om = meta["optimizer"]
        state: dict = {}
        for key, val in tensors.items():
            if key.startswith("optim."):
                _, pid, name = key.split(".", 2)
                state.setdefault(int(pid), {})[name] = val
        for key, val in om.get("scalars", {}).items():
            pid, name = key.split(".", 1)
            state.setdefault(int(pid), {})[name] = val
        optimizer.load_state_dict({"state": state, "param_groups": om["param_groups"]})
    except (ValueError, KeyError, TypeError, AttributeError, IndexError) as e:
        raise CheckpointError(f"optimizer state does not fit: {str(e)[:200]}") from None


def restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    try:
        if "rng.torch" in tensors:
            torch.set_rng_state(tensors["rng.torch"])
        if "rng.cuda" in tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(tensors["rng.cuda"])
    except (RuntimeError, TypeError) as e:
        raise CheckpointError(f"checkpoint RNG state does not fit: {str(e)[:200]}") from None


def save_model(path, model: torch.nn.Module, sidecar: dict) -> None:
    """Final weights: ``path`` (.safetensors, model.* tensors) + ``path`` with .json (sidecar)."""
    path = Path(path)
    blob = st_save(_model_tensors(model), metadata={"format": FORMAT})
    atomic_write(path, blob)
    meta = {
        **sidecar,
        "format": FORMAT,
        "tensors": path.name,
        "sha256": hashlib.sha256(blob).hexdigest(),
        "versions": versions(),
    }
    atomic_write(path.with_suffix(".json"), _sealed_json(meta))


def load_model_file(path) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, sidecar) of a file written by :func:`save_model`."""
    path = Path(path)
    return load_checkpoint(path.with_suffix(".json"))
