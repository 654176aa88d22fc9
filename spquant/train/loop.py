"""The training loop, one for every task (:mod:`spquant.train.tasks`: classification with the TET
loss, detection with the YOLO loss; + gate loss in spquant mode), Adam/SGD with a cosine schedule,
thresholds in their own parameter group, step-granular atomic checkpoints with exact resume, and
DDP through ``torchrun``.

Determinism: the data order of epoch ``e`` is ``randperm(N)`` from a generator seeded with
``(seed, e)``, augmentation draws from a generator seeded with ``(seed, e, step, rank)`` and the
learning rate is a pure function of the global step. A checkpoint written after any step holds
the model, the optimizer state and the RNG state, so ``--resume`` replays exactly the remaining
steps and ends with bit-identical weights on the same machine and thread count.

Distributed: when ``WORLD_SIZE`` > 1 (set by ``torchrun``) the process group is initialised from
``env://`` (gloo on CPU, nccl on CUDA), every rank takes a disjoint shard ``perm[rank::world]`` of
the epoch's order (``train.batch_size`` is per process) and only rank 0 writes files.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from spquant.prune import gate_modules
from spquant.train import checkpoint as ckpt
from spquant.train.config import Config, ConfigError, config_from_dict
from spquant.train.data import TensorData, load_split
from spquant.train.device import resolve_device
from spquant.train.loss import distill_loss
from spquant.train.run import prepare_run_dir
from spquant.train.tasks import task_for

__all__ = [
    "TrainResult",
    "train",
    "set_threads",
    "evaluate",
    "build_optimizer",
    "lr_factor",
    "resolve_device",
    "epoch_order",
]


@dataclass
class TrainResult:
    run_dir: Path | None
    model: nn.Module
    metrics: dict = field(default_factory=dict)
    config: Config | None = None


# -- pieces -------------------------------------------------------------------------------------
def set_threads(threads: int = 0) -> int:
    """torch CPU threads: ``threads`` > 0 as given; 0 = auto: torch's default on an idle machine,
    1 when the CPUs are already busy (1-minute load average >= CPUs - 0.5), because intra-op
    threads that wait for each other on shared cores were several times slower than one thread in
    measurements on a loaded dual-core CPU (8 vs 44 samples/s)."""
    if threads > 0:
        torch.set_num_threads(threads)
    elif threads == 0:
        try:
            busy = os.getloadavg()[0] >= (os.cpu_count() or 1) - 0.5
        except (OSError, AttributeError):
            busy = False
        if busy:
            torch.set_num_threads(1)
    return torch.get_num_threads()


def _is_threshold(name: str) -> bool:
    return name == "threshold" or name.endswith(".threshold")


def build_optimizer(model: nn.Module, t) -> torch.optim.Optimizer:
    """Adam or SGD; learnable thresholds get their own group (lr ``threshold_lr``, no weight decay),
    learned quantizer steps too (lr ``lr``, no weight decay: decay would shrink the step, not the weights),
    and budget-gate predictors (lr ``lr`` x their ``predictor_lr_scale``, no weight decay)."""
    thr = [p for n, p in model.named_parameters() if p.requires_grad and _is_threshold(n)]
    steps = [p for n, p in model.named_parameters() if p.requires_grad and n.endswith("weight_quant.step")]
    fast_gates = [g for g in gate_modules(model) if g.predictor is not None and g.lr_scale != 1.0]
    gate_ids = {id(p) for g in fast_gates for p in g.predictor.parameters()}
    rest = [
        p
        for n, p in model.named_parameters()
        if p.requires_grad
        and not _is_threshold(n)
        and not n.endswith("weight_quant.step")
        and id(p) not in gate_ids
    ]
    groups = [{"params": rest, "lr": t.lr, "weight_decay": t.weight_decay, "name": "weights"}]
    for scale in sorted({g.lr_scale for g in fast_gates}):
        params = [
            p for g in fast_gates if g.lr_scale == scale for p in g.predictor.parameters() if p.requires_grad
        ]
        groups.append(
            {"params": params, "lr": t.lr * scale, "weight_decay": 0.0, "name": f"gates_x{scale:g}"}
        )
    if steps:
        groups.append({"params": steps, "lr": t.lr, "weight_decay": 0.0, "name": "quantizer_steps"})
    if thr:
        groups.append(
            {
                "params": thr,
                "lr": t.threshold_lr if t.threshold_lr is not None else t.lr,
                "weight_decay": 0.0,
                "name": "thresholds",
            }
        )
    for g in groups:
        g["base_lr"] = g["lr"]
    if t.optimizer == "adam":
        return torch.optim.Adam(groups)
    return torch.optim.SGD(groups, momentum=t.momentum, nesterov=t.momentum > 0)


def lr_factor(step: int, total: int, schedule: str) -> float:
    """Multiplier of the base lr before ``step`` (0-based) of ``total``: cosine to 0, or constant."""
    if schedule == "constant" or total <= 0:
        return 1.0
    return 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))


def epoch_order(n: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """This rank's sample order for ``epoch``: a permutation fixed by (seed, epoch), padded by
    wrapping to a multiple of ``world`` and strided like DistributedSampler."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    perm = torch.randperm(n, generator=g)
    if world > 1:
        per = math.ceil(n / world)
        pad = per * world - n
        if pad:
            perm = torch.cat([perm, perm[:pad]])
        perm = perm[rank::world]
    return perm


def _aug_generator(seed: int, epoch: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed(((seed * 1_000_003 + epoch) * 1_000_033 + step) * 131 + rank)


class _Dist:
    def __init__(self, device_name: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = resolve_device(device_name, self.local_rank)
        self.owned = False
        if self.world > 1:
            import torch.distributed as dist

            if not dist.is_initialized():
                backend = "nccl" if self.device.type == "cuda" else "gloo"
                if self.device.type == "cuda":
                    torch.cuda.set_device(self.device)
                dist.init_process_group(backend=backend, init_method="env://")
                self.owned = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, values: list[float]) -> list[float]:
        if self.world == 1:
            return values
        import torch.distributed as dist

        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self):
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def close(self):
        if self.owned:
            import torch.distributed as dist

            dist.destroy_process_group()


def evaluate(model: nn.Module, data, config: Config, device="cpu", dist: _Dist | None = None) -> dict:
    """Test metrics of ``model`` on ``data`` as ``config.task`` defines them (classification:
    ``accuracy``, ``loss``, ``samples``; detection: ``mAP50``, ``mAP50_95``, ..., ``samples``)."""
    was_training = model.training
    model.eval()
    try:
        return task_for(config).evaluate(model, data, config.train.eval_batch_size, device, dist)
    finally:
        model.train(was_training)


def _calibration_batches(train_data: TensorData, config: Config, device):
    """The first ``train.init_calib_batches`` training batches of a fixed order (seeded), no augmentation."""
    t = config.train
    order = epoch_order(len(train_data), t.seed, -1)
    for i in range(min(t.init_calib_batches, math.ceil(len(train_data) / t.batch_size))):
        x, _ = train_data.batch(order[i * t.batch_size : (i + 1) * t.batch_size], config.model.T)
        yield x.to(device)


def _gate_loss_fn(config: Config):
    """(gate_loss(model), weight) in spquant mode; None otherwise."""
    if not config.quant.pruned:
        return None
    try:
        from spquant.prune import gate_loss
    except ImportError:
        raise RuntimeError(
            "mode 'spquant' needs spquant.prune (gate predictor loss), which is not available in this build"
        ) from None
    weight = config.train.prune_loss_weight
    if weight is None:
        weight = config.quant.prune.get("loss_weight")
    if weight is None:
        try:
            from spquant.prune import prune_loss_weight

            weight = prune_loss_weight(config.quant.prune)
        except ImportError:
            from spquant.prune import PRUNE_DEFAULTS

            weight = PRUNE_DEFAULTS.get("loss_weight", 1.0)
    return gate_loss, float(weight)


class _Logger:
    """metrics.jsonl (+ TensorBoard when installed and enabled); rank 0 only."""

    def __init__(self, run_dir: Path | None, enabled: bool, tensorboard: bool, keep_until_step: int | None):
        self.path = run_dir / "metrics.jsonl" if (run_dir and enabled) else None
        self.tb = None
        if self.path is None:
            return
        if keep_until_step is not None and self.path.exists():  # resume: drop records after the checkpoint
            kept = []
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a kill
                if rec.get("step", 0) <= keep_until_step:
                    kept.append(line)
            ckpt.atomic_write(self.path, ("\n".join(kept) + "\n").encode() if kept else b"")
        elif keep_until_step is None and self.path.exists():
            self.path.unlink()
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(run_dir / "tensorboard"))
            except Exception:  # tensorboard not installed: optional
                self.tb = None

    def log(self, record: dict):
        if self.path is None:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        if self.tb is not None:
            step = record.get("step", 0)
            for k, v in record.items():
                if isinstance(v, (int, float)) and k not in ("step", "epoch"):
                    self.tb.add_scalar(f"{record.get('kind', 'train')}/{k}", v, step)

    def close(self):
        if self.tb is not None:
            self.tb.close()


class _Progress:
    """tqdm bars on a terminal; plain log lines otherwise (CI logs, pipes)."""

    def __init__(self, enabled: bool, log_every: int):
        self.enabled = enabled
        self.tty = enabled and sys.stderr.isatty()
        self.log_every = log_every
        self.bar = None

    def start(self, desc: str, total: int, initial: int = 0):
        self.desc, self.total = desc, total
        if self.tty:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total, initial=initial, desc=desc, unit="step", dynamic_ncols=True, leave=True
            )

    def update(self, step_in_epoch: int, loss: float, acc: float | None, sps: float):
        if self.bar is not None:
            extra = {} if acc is None else {"acc": f"{acc:.3f}"}
            self.bar.set_postfix(loss=f"{loss:.3f}", **extra, sps=f"{sps:.0f}", refresh=False)
            self.bar.update(1)
        elif self.enabled and (step_in_epoch % self.log_every == 0 or step_in_epoch == self.total):
            acc_text = "" if acc is None else f" acc {acc:.3f}"
            print(
                f"{self.desc} step {step_in_epoch}/{self.total} loss {loss:.4f}{acc_text} {sps:.0f} samples/s",
                file=sys.stderr,
                flush=True,
            )

    def close(self, note: str = ""):
        if self.bar is not None:
            if note:
                self.bar.set_postfix_str(self.bar.postfix + " " + note if self.bar.postfix else note)
            self.bar.close()
            self.bar = None
        elif self.enabled and note:
            print(f"{self.desc} {note}", file=sys.stderr, flush=True)


# -- the loop -----------------------------------------------------------------------------------
def train(
    config: Config,
    out_dir: str | os.PathLike | None,
    resume: bool = False,
    data: tuple | None = None,
    progress: bool | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train ``config`` and write the run to ``out_dir`` (see :mod:`spquant.train.run`).

    ``resume=True`` continues from the newest valid checkpoint in ``out_dir`` (the saved config
    must match); an ``out_dir`` that already holds a run is refused unless ``resume`` or
    ``overwrite`` (which deletes that run's files first). Nothing is written until the config,
    the model and the data have loaded. ``data`` = (train, test) replaces the config's data
    (tests). The final metrics include the cost summary of :func:`spquant.cost.model_summary`.
    Returns the trained model and the final metrics."""
    r_cfg = config.run
    run_dir = Path(out_dir) if out_dir is not None else None
    if resume and run_dir is None:
        raise ValueError("resume needs an output folder")
    if run_dir is not None:  # refuse before anything runs; only rank 0 deletes on --overwrite
        prepare_run_dir(run_dir, resume=resume, overwrite=overwrite and int(os.environ.get("RANK", "0")) == 0)
    set_threads(r_cfg.threads)
    dist = _Dist(r_cfg.device)
    show = r_cfg.progress if progress is None else progress
    show = show and dist.main
    try:
        result = _train(config, run_dir, resume, data, show, dist)
        # all ranks finish before any tears the group down: a rank that destroys its gloo pairs
        # while its peer is still sending makes the peer abort (only on success: after an error
        # the peer may be blocked in another collective)
        dist.barrier()
        return result
    finally:
        dist.close()


def _train(config: Config, run_dir: Path | None, resume: bool, data, show: bool, dist: _Dist) -> TrainResult:
    t_cfg, r_cfg, m_cfg = config.train, config.run, config.model
    cfg_dict = config.to_dict()
    device = dist.device
    task = task_for(config)

    # resume: load the newest valid checkpoint; its config must be the one asked for
    start = None
    if resume:
        latest = ckpt.latest_checkpoint(run_dir)
        if latest is not None:
            tensors, meta = ckpt.load_checkpoint(latest)
            saved = config_from_dict(meta["config"], str(latest)).to_dict()
            if saved != cfg_dict:
                diff = sorted(
                    f"{s}.{k}"
                    for s in cfg_dict
                    if isinstance(cfg_dict[s], dict)
                    for k in set(cfg_dict[s]) | set(saved.get(s, {}))
                    if cfg_dict[s].get(k) != saved.get(s, {}).get(k)
                )
                raise ckpt.CheckpointError(
                    f"cannot resume {run_dir}: its checkpoint was made with a different config (differs in {diff or 'top-level keys'})"
                )
            start = (tensors, meta)

    torch.manual_seed(t_cfg.seed)
    model = config.build_model().to(device)
    optimizer = build_optimizer(model, t_cfg)

    if data is None:
        train_data, test_data = load_split(config, "train", show), load_split(config, "test", show)
    else:
        train_data, test_data = data
    n = len(train_data)
    if n == 0:
        raise ValueError(f"the training split of {config.data.dataset!r} is empty")

    # config, model and data have loaded: now the run folder may be written
    if run_dir is not None and dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        ckpt.atomic_write(run_dir / "config.json", ckpt._json_bytes(cfg_dict))

    per_rank = math.ceil(n / dist.world)
    steps_per_epoch = math.ceil(per_rank / t_cfg.batch_size)
    total_steps = steps_per_epoch * t_cfg.epochs
    if t_cfg.max_steps:
        total_steps = min(total_steps, t_cfg.max_steps)

    init_summary = None
    if start is None and t_cfg.init_from:
        from spquant.train.init_from import init_from_run

        init_summary = init_from_run(
            model, config, t_cfg.init_from, _calibration_batches(train_data, config, device)
        )
    teacher = None
    if t_cfg.distill_teacher and t_cfg.distill_weight > 0:
        from spquant.train.init_from import load_teacher

        if config.task != "classify":
            raise ConfigError(
                f"train.distill_teacher: distillation is defined for classification, not task {config.task!r}"
            )

        teacher = load_teacher(t_cfg.distill_teacher, config, device)

    epoch, step_in_epoch, global_step = 0, 0, 0
    best = {}
    if start is not None:
        tensors, meta = start
        ckpt.restore_model(model, tensors, f"checkpoint {run_dir}")
        ckpt.restore_optimizer(optimizer, tensors, meta)
        ckpt.restore_rng(tensors)
        st = meta["state"]
        epoch, step_in_epoch, global_step = st["epoch"], st["step_in_epoch"], st["global_step"]
        best = meta.get("metrics", {})

    logger = _Logger(
        run_dir, dist.main, r_cfg.tensorboard, keep_until_step=global_step if start is not None else None
    )
    if init_summary is not None:
        logger.log(
            {
                "kind": "init_from",
                "step": 0,
                **{k: v for k, v in init_summary.items() if k != "added"},
                "added": len(init_summary["added"]),
            }
        )
    prog = _Progress(show, r_cfg.log_every)
    gate = _gate_loss_fn(config)
    ddp_model = model
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)

    def save(state_epoch, state_step, metrics=None):
        if run_dir is not None and dist.main:
            ckpt.save_checkpoint(
                run_dir,
                global_step,
                model,
                optimizer,
                {"epoch": state_epoch, "step_in_epoch": state_step, "global_step": global_step},
                cfg_dict,
                metrics or best,
                keep=r_cfg.keep_checkpoints,
            )

    kill_after = int(os.environ.get("SPQUANT_TEST_KILL_AFTER_STEP", "0"))  # test hook (exact resume)
    t_start = time.perf_counter()
    last_eval = best.get("test") if isinstance(best, dict) else None
    ddp_model.train()
    while epoch < t_cfg.epochs and global_step < total_steps:
        order = epoch_order(n, t_cfg.seed, epoch, dist.rank, dist.world)
        prog.start(f"[{config.name}] epoch {epoch + 1}/{t_cfg.epochs}", steps_per_epoch, step_in_epoch)
        seen, t0, loss_avg, acc_avg = 0, time.perf_counter(), 0.0, 0.0
        bs = t_cfg.batch_size
        last = min(steps_per_epoch, step_in_epoch + total_steps - global_step)
        prefetch = None
        workers = getattr(config.data, "workers", 0)  # the data config may not offer worker processes
        if workers > 0 and hasattr(train_data, "batches"):  # worker processes read ahead
            prefetch = train_data.batches(
                [order[s * bs : (s + 1) * bs] for s in range(step_in_epoch, last)], workers
            )
        while step_in_epoch < steps_per_epoch and global_step < total_steps:
            idx = order[step_in_epoch * bs : (step_in_epoch + 1) * bs]
            gen = _aug_generator(t_cfg.seed, epoch, step_in_epoch, dist.rank)
            if prefetch is not None:
                x, y = train_data.finish(*next(prefetch), m_cfg.T, config.data.augment, gen)
            else:
                x, y = train_data.batch(idx, m_cfg.T, config.data.augment, gen)
            x, y = x.to(device, non_blocking=True), task.to_device(y, device)
            f = lr_factor(global_step, total_steps, t_cfg.schedule)
            if gate is not None:
                from spquant.prune import set_training_progress

                set_training_progress(model, global_step / max(1, total_steps))
            for g in optimizer.param_groups:
                g["lr"] = g["base_lr"] * f
            out = ddp_model(x)
            loss, parts = task.loss(model, out, y)
            if teacher is not None:
                with torch.no_grad():
                    t_out = teacher(x)
                w = t_cfg.distill_weight
                loss = (1.0 - w) * loss + w * distill_loss(out, t_out, t_cfg.distill_temperature)
            g_loss = None
            if gate is not None:
                g_loss = gate[0](model)
                loss = loss + gate[1] * g_loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            step_in_epoch += 1
            global_step += 1
            acc = task.train_score(out, y)
            lv = float(loss.detach())
            loss_avg = lv if seen == 0 else 0.9 * loss_avg + 0.1 * lv
            if acc is not None:
                acc_avg = acc if seen == 0 else 0.9 * acc_avg + 0.1 * acc
            seen += len(idx)
            sps = seen * dist.world / max(time.perf_counter() - t0, 1e-9)
            prog.update(step_in_epoch, loss_avg, None if acc is None else acc_avg, sps)
            if global_step % r_cfg.log_every == 0 or step_in_epoch == steps_per_epoch:
                rec = {
                    "kind": "train",
                    "step": global_step,
                    "epoch": epoch,
                    "loss": lv,
                    **parts,
                    "lr": optimizer.param_groups[0]["lr"],
                    "samples_per_s": sps,
                }
                if acc is not None:
                    rec["acc"] = acc
                if g_loss is not None:
                    rec["gate_loss"] = float(g_loss.detach())
                logger.log(rec)
            end_of_epoch = step_in_epoch == steps_per_epoch or global_step == total_steps
            if r_cfg.checkpoint_every and global_step % r_cfg.checkpoint_every == 0 and not end_of_epoch:
                save(epoch, step_in_epoch)
            if kill_after and global_step == kill_after:
                import signal

                os.kill(os.getpid(), signal.SIGKILL)
        # end of epoch (or of the step budget): evaluate, checkpoint
        ev = evaluate(model, test_data, config, device, dist=dist)
        last_eval = ev
        prog.close(task.summary(ev))
        logger.log({"kind": "eval", "step": global_step, "epoch": epoch, **task.run_metrics(ev)})
        best = {"test": ev, "epoch": epoch}
        if step_in_epoch == steps_per_epoch:
            epoch, step_in_epoch = epoch + 1, 0
        save(epoch, step_in_epoch, best)
    train_time = time.perf_counter() - t_start
    if last_eval is None:  # resumed a finished run
        last_eval = evaluate(model, test_data, config, device, dist=dist)

    metrics = {
        "task": config.task,
        "mode": config.quant.mode,
        **task.run_metrics(last_eval),
        "steps": global_step,
        "epochs": epoch,
        "train_seconds_this_session": train_time,
        "world_size": dist.world,
    }
    if dist.world > 1:
        metrics["ddp_max_param_diff"] = _param_divergence(model, dist)
    if run_dir is not None and dist.main:
        from spquant.cost import model_summary

        summary = model_summary(model, config, test_data=test_data, device=device)
        metrics.update(summary)
        ckpt.save_model(run_dir / "model.safetensors", model, {"config": cfg_dict, "metrics": metrics})
        ckpt.atomic_write(
            run_dir / "run.json",
            ckpt._json_bytes({"config": cfg_dict, "metrics": metrics, "versions": ckpt.versions()}),
        )
        logger.log(
            {
                "kind": "final",
                "step": global_step,
                **{k: v for k, v in metrics.items() if isinstance(v, (int, float))},
            }
        )
    logger.close()
    dist.barrier()
    return TrainResult(run_dir, model, metrics, config)


def _param_divergence(model: nn.Module, dist: _Dist) -> float:
    """Largest |p - p_rank0| over all parameters and ranks (0.0 when DDP kept them in sync)."""
    import torch.distributed as tdist

    worst = torch.zeros((), dtype=torch.float64, device=dist.device)
    for p in model.parameters():
        ref = p.detach().clone()
        tdist.broadcast(ref, src=0)
        worst = torch.maximum(worst, (p.detach() - ref).abs().max().double())
    tdist.all_reduce(worst, op=tdist.ReduceOp.MAX)
    return float(worst)
