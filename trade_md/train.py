"""The training loop: one conditional density, a target, boundary data, a :class:`TrainConfig`.

:func:`train` orchestrates; the pieces it runs each have a module:

=====================================  ======================================================================
:mod:`trade_md.methods.boundary`       the boundary term at ``c0`` and the validation loss
:mod:`trade_md.methods`                the transfer term of ``transfer.method``, its logged columns and state
:mod:`trade_md.curriculum`             warm-up, weight ramp, widening range (pure functions)
:mod:`trade_md.guard`                  skipped steps, reload of the last good state, back-off
:mod:`trade_md.checkpoints`            atomic checkpoint files with checksums
=====================================  ======================================================================

Per step: the boundary term plus, after the warm-up, the method's transfer
term with the curriculum's weight (times the guard's back-off) over the
curriculum's range; Adam with a one-cycle learning rate and gradient-norm
clipping. The loop itself keeps the RNG state in checkpoints (exact
resume), validates every ``run.validate_every`` steps, keeps the best
checkpoint by validation loss at ``c0`` once the curriculum is done, and
writes a CSV log of every loss term, the method's columns and the learning
rate.

Launched by ``torchrun``, the run is data-parallel (:mod:`trade_md.distributed`):
each rank draws its share of the global batch with its own random stream,
gradients are averaged by an explicit all-reduce, the scalars that decide are
made equal on every rank, and rank 0 alone writes checkpoints and logs.
"""

from __future__ import annotations

import csv
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import torch
from torch import Tensor
from tqdm.auto import tqdm

from ._io import atomic_path, atomic_write_text
from .checkpoints import load_checkpoint, previous_checkpoint, save_checkpoint
from .config import ConfigError, save_yaml, to_dict
from .curriculum import check_curriculum, condition_range, curriculum_done, transfer_weight
from .density import ConditionalDensity, model_like
from .distributed import World, rank_seed
from .guard import DivergenceGuard
from .methods import BOUNDARIES, MethodSetup, method_class
from .targets import Target
from .train_config import OptimConfig, RunConfig, TrainConfig, TransferConfig
from .training_data import TrainingData

__all__ = [
    "TransferConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "TrainResult",
    "train",
]

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class TrainResult:
    """What a training run produced.

    Attributes
    ----------
    step : int
        Last completed step.
    best_step : int or None
        Step of the best checkpoint (``best.pt``), None if none was kept.
    best_validation : float
        Its validation loss (NLL at ``c0``, nats); ``inf`` if none.
    out_dir : Path
    skipped_steps, reloads : int
        Steps skipped, and reloads of the last good state (divergence handling).
    lowest_validation : float
        Lowest healthy validation loss of the whole run, curriculum included
        (nats); ``inf`` if no validation was healthy.
    """

    step: int
    best_step: Optional[int]
    best_validation: float
    out_dir: Path
    skipped_steps: int
    reloads: int
    lowest_validation: float = math.inf

    def summary(self) -> str:
        """One line for the end of a run: steps, best checkpoint and validation loss, skips, reloads."""
        text = f"trained {self.step} steps; "
        if self.best_step is not None:
            text += f"best step {self.best_step}, validation loss {self.best_validation:.4g}"
        elif math.isfinite(self.lowest_validation):
            text += (f"no best checkpoint: every validation after the curriculum diverged (lowest validation "
                     f"loss {self.lowest_validation:.4g} during the curriculum); the model holds the last step")
        else:
            text += "no best checkpoint: no validation was healthy; the model holds the last step"
        return text + f"; {self.skipped_steps} skipped steps, {self.reloads} reloads"


#: CSV columns written for every method (then method-specific ESS / loss columns).
BASE_COLUMNS = (
    "step", "lr", "loss", "boundary", "transfer", "transfer_weight", "range_low", "range_high",
    "grad_norm", "skipped", "validation", "event",
)  # fmt: skip


class _Trainer:
    """Loop state of :func:`train` (everything a checkpoint holds)."""

    def __init__(
        self, model: ConditionalDensity, target: Optional[Target], data: Optional[TrainingData],
        config: TrainConfig, out_dir: Path,
    ) -> None:
        self.model, self.config, self.out_dir = model, config, out_dir
        self.like = model_like(model)
        self.world = World.from_env()
        tc, oc = config.transfer, config.optim
        if oc.batch_size % self.world.size:
            raise ValueError(f"optim.batch_size {oc.batch_size} must be divisible by the {self.world.size} "
                             "processes of the distributed run (each draws an equal share)")
        data = None if data is None else data.to(self.like)
        self.reference = _reference(tc, data)
        setup = MethodSetup(model, target, data, self.reference, tc, oc.batch_size // self.world.size,
                            config.run.seed)
        self.boundary = BOUNDARIES[tc.boundary](setup)
        self.method = method_class(tc.method)(setup)
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.Adam(self.params, lr=oc.lr, weight_decay=oc.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, max_lr=oc.lr, total_steps=oc.steps, pct_start=oc.pct_start
        )
        self.guard = DivergenceGuard(config.run)
        self.step = 0
        self.best_validation = math.inf
        self.best_step: Optional[int] = None

    def columns(self) -> list[str]:
        """The CSV columns: the loop's own, then the method's."""
        return list(BASE_COLUMNS) + self.method.columns()

    def train_step(self) -> dict:
        """One optimizer step (or a skipped one); returns the CSV row."""
        step, tc = self.step, self.config.transfer
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        weight = transfer_weight(tc, step) * self.guard.weight_scale
        low, high = condition_range(tc, self.reference, step)
        boundary = self.boundary.loss()
        total = tc.boundary_weight * boundary
        term = None if weight == 0 else self.method.loss(step, low, high)
        if term is not None:
            total = total + weight * term.loss
        row = {
            "step": step + 1, "lr": self.scheduler.get_last_lr()[0], "loss": float(total.detach()),
            "boundary": float(boundary.detach()),
            "transfer": math.nan if term is None else float(term.loss.detach()),
            "transfer_weight": weight, "range_low": low, "range_high": high,
            "grad_norm": math.nan, "skipped": 0, "validation": math.nan, **({} if term is None else term.logs),
        }  # fmt: skip
        if self.world.distributed:  # the guard decides on the global batch's losses, the same on every rank
            row["loss"], row["boundary"], row["transfer"] = self.world.mean(
                [row["loss"], row["boundary"], row["transfer"]])
        terms = {"boundary": row["boundary"]} if term is None else {"boundary": row["boundary"],
                                                                     "transfer": row["transfer"]}
        row["event"] = self.guard.screen(terms)
        if not row["event"]:
            total.backward()
            self.world.average_gradients(self.params)
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, self.config.optim.grad_clip))
            row["grad_norm"] = grad_norm
            if math.isfinite(grad_norm):
                self.optimizer.step()
            else:
                row["event"] = "non-finite gradient"
        row["skipped"] = int(bool(row["event"]))
        reload = self.guard.record(terms, skipped=bool(row["skipped"]))
        self.scheduler.step()
        self.step += 1
        self.world.broadcast_state(self.method)
        if reload:
            row["event"] += "; reload"
            self.guard.reload(self.model, self.optimizer)
        return row

    def validate(self, row: dict) -> None:
        """Validation loss into ``row``; a reload if it diverged, else the last good state and the best model."""
        self.model.eval()
        value = self.world.broadcast(self.boundary.validation_loss())
        row["validation"] = value
        if self.guard.diverged(value):
            row["event"] = (row["event"] + "; " if row["event"] else "") + "validation diverged; reload"
            self.guard.reload(self.model, self.optimizer)
            return
        self.guard.healthy(value, self.model, self.optimizer)
        if curriculum_done(self.config.transfer, self.step - 1) and value < self.best_validation:
            self.best_validation, self.best_step = value, self.step
            if not self.world.is_main:
                return
            with atomic_path(self.out_dir / "best.pt") as tmp:
                torch.save({"step": self.step, "validation": value, "model": self.model.state_dict()}, tmp)

    def state_dict(self) -> dict:
        """Everything needed to continue exactly: model, optimizer, schedule, RNG, method, guard, best step.

        A distributed run adds ``ranks``: every rank's RNG states (a collective: all ranks call this).
        """
        state = {
            "step": self.step,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "method": self.method.state_dict(),
            "guard": self.guard.state_dict(),
            "best": {"validation": self.best_validation, "step": self.best_step},
            "config": to_dict(self.config),
        }
        if self.world.distributed:
            state["ranks"] = self.world.gather({"rng": state["rng"], "cuda_rng": state["cuda_rng"]})
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` output of a run with the same configuration."""
        _check_same_config(state["config"], to_dict(self.config))
        saved_size = len(state.get("ranks", [None]))
        if saved_size != self.world.size:
            raise ConfigError(f"the checkpoint was written by a run of {saved_size} process(es); "
                              f"resume it with {saved_size}, not {self.world.size}")
        if self.world.distributed:
            state = {**state, **state["ranks"][self.world.rank]}
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(state["rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.method.load_state_dict(state["method"])
        self.guard.load_state_dict(state["guard"])
        self.best_validation, self.best_step = state["best"]["validation"], state["best"]["step"]
        self.step = state["step"]

    def checkpoint(self) -> None:
        """Write ``last.pt`` (keeping the one before as ``last.prev.pt``), unless the parameters are not finite.

        Every rank calls this; rank 0 writes.
        """
        if all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            state = self.state_dict()
            if self.world.is_main:
                save_checkpoint(state, self.out_dir / "last.pt")


def _reference(transfer: TransferConfig, data: Optional[TrainingData]) -> float:
    """``c0``: ``transfer.reference``, else the single condition of the training data."""
    if transfer.reference is not None:
        return float(transfer.reference)
    if data is None:
        raise ValueError("transfer.reference is required without training data")
    values = torch.unique(data.train.condition)
    if values.numel() != 1:
        raise ValueError(f"the data has several conditions {values.tolist()}; set transfer.reference")
    reference = float(values[0])
    low, high = transfer.condition_range
    if not low <= reference <= high:
        raise ValueError(f"the data's condition {reference} is outside condition_range {transfer.condition_range}")
    return reference


_RESUME_FREE_KEYS = {("run", "progress"), ("run", "threads"), ("run", "out_dir")}


def _check_same_config(saved: dict, current: dict) -> None:
    """Raise ConfigError if a resumed run's configuration differs (except progress, threads, out_dir)."""
    differences = []
    for section in sorted(set(saved) | set(current)):
        a, b = saved.get(section, {}), current.get(section, {})
        for key in sorted(set(a) | set(b)):
            if (section, key) not in _RESUME_FREE_KEYS and a.get(key) != b.get(key):
                differences.append(f"{section}.{key}: checkpoint {a.get(key)!r}, now {b.get(key)!r}")
    if differences:
        raise ConfigError("cannot resume with a different configuration: " + "; ".join(differences))


def _configure_threads(threads: Optional[int], like: Tensor) -> None:
    if threads is not None:
        torch.set_num_threads(threads)
    elif like.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(1)


class _CsvLog:
    """Append-only CSV log; on resume, rows after the checkpoint's step are dropped."""

    def __init__(self, path: Path, columns: list[str], resume_step: Optional[int]) -> None:
        self.path, self.columns = path, columns
        if resume_step is None or not path.exists():
            atomic_write_text(path, ",".join(columns) + "\n")
        else:
            with open(path, newline="") as fh:
                rows = list(csv.reader(fh))
            if not rows or rows[0] != columns:
                raise ConfigError(f"{path} has other columns than this run; cannot resume its log")
            kept = [r for r in rows[1:] if len(r) == len(columns) and r[0].isdigit() and int(r[0]) <= resume_step]
            with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
                csv.writer(fh).writerows([columns] + kept)
        self.handle = open(path, "a", newline="")
        self.writer = csv.writer(self.handle)

    def write(self, row: dict) -> None:
        self.writer.writerow([_format(row.get(c, "")) for c in self.columns])

    def flush(self) -> None:
        self.handle.flush()

    def close(self) -> None:
        self.handle.close()


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.8g}"
    return str(value)


def train(
    model: ConditionalDensity,
    target: Optional[Target],
    data: Optional[TrainingData],
    config: TrainConfig,
    out_dir: PathLike,
    resume: bool = False,
) -> TrainResult:
    """Train a conditional model with TRADE or a baseline.

    Parameters
    ----------
    model : ConditionalDensity
        A :class:`~trade_md.flows.ConditionedFlow`, a Boltzmann generator's
        ``density``, ... Its parameters set the dtype and device of training.
    target : Target or None
        ``q(x|c)``; may be None only for NLL-only or energy-free TRADE
        (with boundary ``nll``).
    data : TrainingData or None
        Boundary samples (and held-out validation samples) at ``c0``; None
        only with ``transfer.boundary = "reverse_kl"``.
    config : TrainConfig
        Written to ``out_dir/config.yaml`` (a subclass with more sections,
        such as a toy run's, is written whole).
    out_dir : path
        Receives ``config.yaml``, ``log.csv``, ``last.pt`` and ``best.pt``.
    resume : bool
        Continue from ``out_dir/last.pt`` (same configuration required). A
        fresh run refuses a folder that already holds a checkpoint.

    Returns
    -------
    TrainResult
        With ``run.restore_best``, the model holds the best checkpoint's
        parameters on return (if one was kept), else the last step's.
    """
    out_dir = Path(out_dir)
    check_curriculum(config.transfer, config.optim)  # a config may have been edited after construction
    out_dir.mkdir(parents=True, exist_ok=True)
    trainer = _Trainer(model, target, data, config, out_dir)
    world = trainer.world
    world.start(trainer.like)
    _configure_threads(config.run.threads, trainer.like)
    checkpoint_path = out_dir / "last.pt"
    has_checkpoint = checkpoint_path.exists() or previous_checkpoint(checkpoint_path).exists()
    world.barrier()  # every rank has looked before rank 0 writes a first checkpoint
    if has_checkpoint and not resume:
        raise FileExistsError(f"{out_dir} already holds a training run; pass resume=True or use another folder")
    if resume and has_checkpoint:
        # read onto the host, whatever device wrote it: the RNG states must be CPU tensors and the grid
        # table lives there; load_state_dict copies the model and optimizer onto the parameters' device;
        # every rank of a distributed run reads rank 0's checkpoint
        trainer.load_state_dict(load_checkpoint(checkpoint_path, "cpu"))
        log = _CsvLog(out_dir / "log.csv", trainer.columns(), trainer.step) if world.is_main else None
    else:
        world.broadcast_module(model)
        torch.manual_seed(rank_seed(config.run.seed, world.rank))
        if world.is_main:
            save_yaml(config, out_dir / "config.yaml")
        log = _CsvLog(out_dir / "log.csv", trainer.columns(), None) if world.is_main else None
        trainer.guard.remember(model, trainer.optimizer)
        trainer.checkpoint()
    rc, steps = config.run, config.optim.steps
    try:
        with tqdm(total=steps, initial=trainer.step, disable=not (rc.progress and world.is_main),
                  dynamic_ncols=True) as bar:
            while trainer.step < steps:
                row = trainer.train_step()
                if trainer.step % rc.validate_every == 0 or trainer.step == steps:
                    trainer.validate(row)
                if log is not None:
                    log.write(row)
                if trainer.step % rc.checkpoint_every == 0 or trainer.step == steps:
                    if log is not None:
                        log.flush()
                    trainer.checkpoint()
                bar.update(1)
                if trainer.step % 10 == 0:
                    bar.set_postfix(loss=f"{row['loss']:.4g}", weight=f"{row['transfer_weight']:.3g}")
    finally:
        if log is not None:
            log.close()
    world.barrier()  # rank 0 has written best.pt
    best = out_dir / "best.pt"
    if rc.restore_best and trainer.best_step is not None and best.exists():
        try:
            best_state = torch.load(best, map_location=trainer.like.device, weights_only=False)["model"]
        except Exception as err:  # noqa: BLE001 - a damaged file: keep the last step's parameters
            warnings.warn(f"{best} is damaged or truncated ({type(err).__name__}); "
                          "the model keeps the last step's parameters", stacklevel=2)
        else:
            model.load_state_dict(best_state)
    return TrainResult(
        step=trainer.step,
        best_step=trainer.best_step,
        best_validation=trainer.best_validation,
        out_dir=out_dir,
        skipped_steps=trainer.guard.skipped_steps,
        reloads=trainer.guard.reloads,
        lowest_validation=trainer.guard.lowest_validation,
    )
