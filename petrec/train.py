"""The one Accelerate training loop: every task, every method, CPU / one GPU / many.

The shape is Accelerate's own (``prepare`` → ``accumulate`` → ``backward`` →
``clip_grad_norm_`` → ``gather_for_metrics`` → ``end_training``); nothing here re-implements
gradient accumulation, device placement or distributed gathering.

What this module adds on top: AdamW with separate head / adapter learning rates and no
decay on biases and norms, warm-up + linear/cosine decay, periodic evaluation with early
stopping, the best weights kept (in memory and as an adapter-only save), resumable
``save_state`` checkpoints (a run interrupted mid-epoch and resumed ends with the same
metrics), JSONL + tracker logging, and measured throughput and peak memory.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm
from transformers import get_scheduler

from petrec.debias import weighted_loss
from petrec.evaluation import EvalFn, higher_is_better
from petrec.files import atomic_path, write_json_atomic

CHECKPOINT_DIR = "checkpoint"
BEST_DIR = "best"
STATE_FILE = "trainer_state.json"
BEST_STATE_FILE = "best_trainable.safetensors"


@dataclass
class TrainConfig:
    """Optimisation, evaluation and checkpointing settings of one training run."""

    output_dir: str = "outputs/run"
    """Folder for the log, checkpoints, best adapter and metrics."""
    epochs: int = 3
    """Passes over the training split (an upper bound when ``max_steps`` is set); 0 = no training:
    the model is evaluated as built (the zero-shot row of an answer-scoring decoder)."""
    max_steps: int = -1
    """Stop after this many optimizer steps; -1 = run all epochs."""
    batch_size: int = 16
    """Examples per device per micro-batch."""
    eval_batch_size: int = 64
    """Examples per device per evaluation batch."""
    eval_sort_by_length: bool = True
    """Score validation and test examples longest first (:func:`petrec.collate.longest_first`):
    each evaluation batch then pads to its own examples' lengths instead of its longest one's, and
    the largest batch runs first, so an out-of-memory error shows at once. Metrics do not depend
    on the order (predictions and labels travel together); False = the split's own order."""
    grad_accum_steps: int = 1
    """Micro-batches accumulated per optimizer step."""
    lr: float = 5e-4
    """Peak learning rate of the adapter (or of the whole model for ``full``)."""
    head_lr: float | None = None
    """Peak learning rate of the task head; None = ``lr``."""
    weight_decay: float = 0.01
    """AdamW weight decay (never applied to biases and normalisation weights)."""
    warmup_ratio: float = 0.06
    """Share of the optimizer steps spent in linear warm-up."""
    scheduler: Literal["linear", "cosine", "constant"] = "linear"
    """Decay after warm-up."""
    max_grad_norm: float = 1.0
    """Gradient clipping norm; 0 disables clipping."""
    mixed_precision: Literal["no", "bf16", "fp16", "auto"] = "auto"
    """Autocast dtype; ``auto`` = bf16 on a CUDA device that supports it, else fp32."""
    eval_every_steps: int = 0
    """Evaluate every N optimizer steps; 0 = at the end of each epoch."""
    early_stopping_patience: int = 0
    """Stop after this many evaluations without improvement; 0 = never stop early."""
    eval_at_start: bool = False
    """Validate once before the first step too, and let those weights win if nothing later beats
    them (a model that starts from a fitted count model, ``model.behaviour_prior``, keeps it
    when the adapter only overfits)."""
    max_train_minutes: float = 0.0
    """Wall-time budget of this call (evaluations included), checked at each evaluation and
    epoch end: once spent, training stops and the best weights so far are kept; 0 = no budget."""
    metric_for_best: str | None = None
    """Validation metric that selects the best weights; None = the task default (auc / rmse / ndcg@10)."""
    checkpoint_every_steps: int = 0
    """Write a resumable ``save_state`` checkpoint every N optimizer steps; 0 = only at epoch ends."""
    resume: bool = False
    """Continue from ``output_dir/checkpoint`` when it exists."""
    log_every_steps: int = 10
    """Log training loss / learning rate every N optimizer steps."""
    seed: int = 42
    """Seed for weights, shuffling and dropout."""
    num_workers: int = 0
    """DataLoader worker processes."""
    progress: bool = True
    """Show tqdm progress bars (main process only)."""
    trackers: list[str] = field(default_factory=lambda: ["tensorboard"])
    """Accelerate trackers to log to when installed (the JSONL log is always written)."""
    ips_weighting: bool = False
    """Weight each training example's loss by its clipped inverse-propensity weight (the batches'
    ``ips_weight``, see :mod:`petrec.debias`), self-normalised per batch; ctr and rating models."""

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
            raise ValueError(f"train.epochs must be an integer ≥ 0 (0 = evaluate without training), got {self.epochs!r}")
        positive = ("batch_size", "eval_batch_size", "grad_accum_steps", "log_every_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be ≥ 1, got {getattr(self, name)}")
        if self.lr <= 0 or (self.head_lr is not None and self.head_lr <= 0):
            raise ValueError("train.lr and train.head_lr must be > 0")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"train.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        for name in ("eval_every_steps", "early_stopping_patience", "checkpoint_every_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be ≥ 0")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ValueError("train.max_steps must be -1 (all epochs) or ≥ 1")
        if self.max_train_minutes < 0:
            raise ValueError(f"train.max_train_minutes must be ≥ 0, got {self.max_train_minutes}")


@dataclass
class TrainResult:
    """What a run measured."""

    best_metric: float | None
    best_step: int
    global_step: int
    stopped_early: bool
    valid_history: list[dict[str, float]]
    train_samples: int
    train_seconds: float
    wall_seconds: float
    peak_memory: dict[str, float]
    time_budget_hit: bool = False
    """Training stopped because ``max_train_minutes`` was spent (not converged, not early-stopped)."""

    @property
    def train_samples_per_s(self) -> float:
        """Training throughput (examples through forward+backward per second, all processes)."""
        return self.train_samples / self.train_seconds if self.train_seconds > 0 else 0.0


def resolve_mixed_precision(choice: str) -> str:
    """Map ``auto`` to bf16 on CUDA devices that support it and to ``no`` elsewhere."""
    if choice != "auto":
        return choice
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16"
    return "no"


def make_accelerator(cfg: TrainConfig, *, cpu: bool = False) -> Accelerator:
    """An Accelerator for ``cfg``: seedable sampler (resume-exact), trackers when installed.

    Args:
        cfg: The run's settings.
        cpu: Stay on the CPU (small in-process models, e.g. the ID baselines), unless this
            process already runs Accelerate on an accelerator device, which Accelerate's shared
            state does not let a second Accelerator leave.
            With ``cpu`` and an Accelerator already in this process, the new one takes that one's
            mixed precision (Accelerate's shared state allows no other).
    """
    trackers = [t for t in cfg.trackers if _tracker_available(t)]
    kwargs: dict[str, Any] = {
        "gradient_accumulation_steps": cfg.grad_accum_steps,
        "mixed_precision": resolve_mixed_precision(cfg.mixed_precision),
        "log_with": trackers or None,
        "project_config": ProjectConfiguration(project_dir=cfg.output_dir, logging_dir=cfg.output_dir),
        "dataloader_config": DataLoaderConfiguration(use_seedable_sampler=True),
    }
    if cpu:
        if AcceleratorState._shared_state:
            # Accelerate keeps one state per process: an in-process helper model (the ID model of
            # collaborative tokens, fitted inside the recipe) must take the recipe's precision or it
            # refuses to start. A recipe's own Accelerator keeps its configured precision.
            kwargs["mixed_precision"] = AcceleratorState().mixed_precision
        try:
            return Accelerator(cpu=True, **kwargs)
        except ValueError:  # this process already runs Accelerate on an accelerator device
            pass
    return Accelerator(**kwargs)


def _tracker_available(name: str) -> bool:
    if name == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            try:
                import tensorboardX  # noqa: F401
            except ImportError:
                return False
        return True
    return True


def is_head_param(name: str) -> bool:
    """Whether a parameter belongs to a task head (a module path segment ``head`` or ``prior``)."""
    return not {"head", "prior"}.isdisjoint(name.split(".")[:-1])


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW over the trainable parameters: head / body groups, no decay on biases and norms."""
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        no_decay = param.ndim < 2 or "norm" in name.lower()
        groups.setdefault((is_head_param(name), no_decay), []).append(param)
    if not groups:
        raise ValueError("the model has no trainable parameters: check the PEFT method and head")
    head_lr = cfg.head_lr if cfg.head_lr is not None else cfg.lr
    param_groups = [
        {
            "params": params,
            "lr": head_lr if is_head else cfg.lr,
            "weight_decay": 0.0 if no_decay else cfg.weight_decay,
        }
        for (is_head, no_decay), params in sorted(groups.items())
    ]
    return torch.optim.AdamW(param_groups, lr=cfg.lr)


def _peak_memory(accelerator: Accelerator) -> dict[str, float]:
    # ru_maxrss is KiB on Linux: the peak resident set of this process since it started.
    out = {"cpu_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    if accelerator.device.type == "cuda":
        out["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(accelerator.device) / 2**20
        out["cuda_max_reserved_mb"] = torch.cuda.max_memory_reserved(accelerator.device) / 2**20
    return out


def _trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {
        n: p.detach().to("cpu", copy=True).contiguous() for n, p in model.named_parameters() if p.requires_grad
    }


class _Logger:
    """Per-step metrics to ``train_log.jsonl`` (main process) and to Accelerate trackers."""

    def __init__(self, accelerator: Accelerator, path: Path, append: bool) -> None:
        self.accelerator = accelerator
        self.path = path
        if accelerator.is_main_process and not append and path.exists():
            path.unlink()

    def log(self, step: int, values: dict[str, float]) -> None:
        if self.accelerator.is_main_process:
            with self.path.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps({"step": step, **values}, default=float) + "\n")
        self.accelerator.log(values, step=step)


def train(
    model: nn.Module,
    train_loader: torch.utils.data.DataLoader,
    valid_loader: torch.utils.data.DataLoader | None,
    cfg: TrainConfig,
    *,
    evaluate_fn: EvalFn,
    accelerator: Accelerator,
    save_best: Callable[[nn.Module, Path], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    tracker_config: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` and leave it holding the best validation weights.

    Args:
        model: A module whose ``forward(**batch)`` returns an object with ``.loss``.
        train_loader: Batches of the training split (not yet prepared).
        valid_loader: Batches of the validation split, or None to skip validation.
        cfg: Optimisation settings.
        evaluate_fn: ``(model, prepared_loader, accelerator) -> metrics`` for the task.
        accelerator: From :func:`make_accelerator` (its settings must match ``cfg``).
        save_best: Called on the main process with the unwrapped model and
            ``output_dir/best`` whenever validation improves (e.g. ``petrec.save_adapter``).
        on_step: Called after every optimizer step with the global step (tests use it to
            interrupt a run the way a kill would).
        tracker_config: Hyper-parameters recorded by the trackers.

    Returns:
        The measurements; the model holds the best weights (or the last, without validation).
    """
    start_wall = time.perf_counter()
    out_dir = Path(cfg.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    set_seed(cfg.seed)

    optimizer = build_optimizer(model, cfg)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    if valid_loader is not None:
        valid_loader = accelerator.prepare(valid_loader)
    # Counted on the prepared (per-process) loader, so the schedule is right under DDP.
    steps_per_epoch = math.ceil(len(train_loader) / cfg.grad_accum_steps)
    total_steps = 0 if cfg.epochs == 0 else cfg.max_steps if cfg.max_steps > 0 else steps_per_epoch * cfg.epochs
    # A prepared scheduler steps once per process per optimizer step, hence the factor.
    scheduler = accelerator.prepare(
        get_scheduler(
            cfg.scheduler,
            optimizer,
            num_warmup_steps=int(cfg.warmup_ratio * total_steps) * accelerator.num_processes,
            num_training_steps=total_steps * accelerator.num_processes,
        )
    )

    state = {"global_step": 0, "epoch": 0, "batches_done": 0, "best_metric": None, "best_step": 0,
             "bad_evals": 0, "valid_history": [], "train_samples": 0, "train_seconds": 0.0}
    ckpt_dir = out_dir / CHECKPOINT_DIR
    resumed = cfg.resume and (ckpt_dir / STATE_FILE).exists()
    if resumed:
        accelerator.load_state(str(ckpt_dir))
        state.update(json.loads((ckpt_dir / STATE_FILE).read_text(encoding="utf-8")))
        accelerator.print(f"resumed from {ckpt_dir} at step {state['global_step']}")
    logger = _Logger(accelerator, out_dir / "train_log.jsonl", append=resumed)
    accelerator.init_trackers("petrec", config=_flat_scalars(tracker_config or {}))

    best_file = out_dir / BEST_STATE_FILE
    best_state = None
    if valid_loader is not None:
        if resumed and best_file.exists():
            best_state = load_file(str(best_file))
        else:
            best_state = _trainable_state(accelerator.unwrap_model(model))
    metric_name = cfg.metric_for_best
    task = _weighted_task(accelerator.unwrap_model(model)) if cfg.ips_weighting else ""
    stopped_early = False
    budget_hit = False

    def budget_spent() -> bool:
        """Whether the time budget is used up; every process takes the same decision."""
        nonlocal budget_hit
        if cfg.max_train_minutes <= 0:
            return False
        spent = time.perf_counter() - start_wall >= 60.0 * cfg.max_train_minutes
        if accelerator.num_processes > 1:
            flag = torch.tensor([float(spent)], device=accelerator.device)
            spent = bool(accelerator.reduce(flag, reduction="sum").item() > 0)
        budget_hit = budget_hit or spent
        return spent

    def checkpoint() -> None:
        # save_state writes model, optimizer, scheduler, sampler and RNG states; our own
        # counters go to JSON beside them. Written to a temporary folder, then renamed.
        tmp = out_dir / (CHECKPOINT_DIR + ".tmp")
        if accelerator.is_main_process and tmp.exists():
            shutil.rmtree(tmp)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        _save_rng(tmp, accelerator.process_index)
        if accelerator.is_main_process:
            write_json_atomic(tmp / STATE_FILE, state)
            if ckpt_dir.exists():
                shutil.rmtree(ckpt_dir)
            os.replace(tmp, ckpt_dir)
        accelerator.wait_for_everyone()

    def validate() -> bool:
        """Evaluate, keep the best weights; returns True when training should stop."""
        nonlocal metric_name, best_state
        metrics = evaluate_fn(model, valid_loader, accelerator)
        metric_name = metric_name or next(iter(metrics))
        if metric_name not in metrics:
            raise KeyError(f"train.metric_for_best={metric_name!r} is not among {sorted(metrics)}")
        value = float(metrics[metric_name])
        state["valid_history"].append({"step": state["global_step"], **metrics})
        logger.log(state["global_step"], {f"valid/{k}": v for k, v in metrics.items()})
        best = state["best_metric"]
        sign = 1.0 if higher_is_better(metric_name) else -1.0
        # nan (e.g. AUC of a single-class split) never counts as an improvement.
        improved = not math.isnan(value) and (best is None or math.isnan(best) or sign * (value - best) > 0)
        if best is None or improved:
            state.update(best_metric=value, best_step=state["global_step"], bad_evals=0)
            best_state = _trainable_state(accelerator.unwrap_model(model))
            if accelerator.is_main_process:
                # Kept on disk too, so a resumed run ends on the same best weights.
                with atomic_path(best_file) as tmp:
                    save_file(best_state, str(tmp))
            if save_best is not None and accelerator.is_main_process:
                save_best(accelerator.unwrap_model(model), out_dir / BEST_DIR)
            return False
        state["bad_evals"] += 1
        return 0 < cfg.early_stopping_patience <= state["bad_evals"]

    if cfg.eval_at_start and valid_loader is not None and not state["valid_history"]:
        validate()
    progress = tqdm(total=total_steps, initial=state["global_step"], desc="train", unit="step",
                    disable=not (cfg.progress and accelerator.is_local_main_process))
    done = state["global_step"] >= total_steps
    resumed_mid_epoch = resumed and state["batches_done"] > 0
    while not done and state["epoch"] < cfg.epochs:
        model.train()
        train_loader.set_epoch(state["epoch"])
        loader: Iterable[Any] = train_loader
        if state["batches_done"]:
            loader = accelerator.skip_first_batches(train_loader, state["batches_done"])
        tick = time.perf_counter()
        for batch in loader:
            if resumed_mid_epoch:
                # Starting the data iterator drew from the global RNG; rewind it to the
                # checkpoint so dropout continues exactly as in an uninterrupted run.
                _restore_rng(ckpt_dir, accelerator.process_index)
                resumed_mid_epoch = False
            with accelerator.accumulate(model):
                weights = _pop_ips_weights(batch) if cfg.ips_weighting else None
                out = model(**batch)
                loss_t = out.loss if weights is None else weighted_loss(out.logits, batch["labels"], weights, task)
                accelerator.backward(loss_t)
                if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            state["batches_done"] += 1
            state["train_samples"] += _batch_size(batch) * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            state["global_step"] += 1
            step = state["global_step"]
            progress.update(1)
            if step % cfg.log_every_steps == 0:
                loss = accelerator.reduce(loss_t.detach(), reduction="mean").item()
                logger.log(step, {"train/loss": loss, "train/lr": scheduler.get_last_lr()[0]})
                progress.set_postfix(loss=f"{loss:.4f}")
            if valid_loader is not None and cfg.eval_every_steps and step % cfg.eval_every_steps == 0:
                state["train_seconds"] += time.perf_counter() - tick
                stopped_early = validate()
                model.train()
                done = budget_spent()
                tick = time.perf_counter()
            if cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0:
                state["train_seconds"] += time.perf_counter() - tick
                checkpoint()
                tick = time.perf_counter()
            if on_step is not None:
                on_step(step)
            if done or stopped_early or step >= total_steps:
                done = True
                break
        state["train_seconds"] += time.perf_counter() - tick
        if not done:
            state["epoch"] += 1
            state["batches_done"] = 0
            if valid_loader is not None and not cfg.eval_every_steps:
                stopped_early = validate()
                done = stopped_early
            done = done or budget_spent()
            checkpoint()
    progress.close()
    if valid_loader is not None and (not state["valid_history"] or state["valid_history"][-1]["step"] != state["global_step"]):
        validate()

    if best_state is not None:
        unwrapped = accelerator.unwrap_model(model)
        params = dict(unwrapped.named_parameters())
        with torch.no_grad():
            for name, value in best_state.items():
                params[name].copy_(value.to(params[name].device))
    accelerator.wait_for_everyone()
    return TrainResult(
        best_metric=state["best_metric"],
        best_step=state["best_step"],
        global_step=state["global_step"],
        stopped_early=stopped_early,
        time_budget_hit=budget_hit,
        valid_history=state["valid_history"],
        train_samples=state["train_samples"],
        train_seconds=state["train_seconds"],
        wall_seconds=time.perf_counter() - start_wall,
        peak_memory=_peak_memory(accelerator),
    )


def _weighted_task(model: nn.Module) -> str:
    """The task whose loss ``train.ips_weighting`` reweights (a petrec behaviour model's ``cfg.task``)."""
    task = getattr(getattr(model, "cfg", None), "task", None)
    if task not in ("ctr", "rating"):
        raise ValueError(f"train.ips_weighting needs a ctr or rating behaviour model, got "
                         f"{type(model).__name__} with task {task!r}")
    return task


def _pop_ips_weights(batch: dict[str, Any]) -> torch.Tensor:
    try:
        return batch.pop("ips_weight")
    except KeyError:
        raise KeyError("train.ips_weighting: the training batches carry no 'ips_weight' (the recipe adds it "
                       "with petrec.data.exposure.annotate_splits(..., train_weights=True))") from None


def _save_rng(folder: Path, rank: int) -> None:
    # Accelerate's save_state stores RNG states too, but a resumed run creates its data
    # iterator *after* load_state and that draws from the global generator; we restore
    # this copy once the iterator exists, so dropout masks continue exactly.
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        states.update({f"cuda{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(states, str(folder / f"rng_{rank}.safetensors"))


def _restore_rng(folder: Path, rank: int) -> None:
    states = load_file(str(folder / f"rng_{rank}.safetensors"))
    torch.set_rng_state(states.pop("cpu"))
    if states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([states[f"cuda{i}"] for i in range(len(states))])


def _batch_size(batch: Any) -> int:
    if isinstance(batch, dict):
        for value in batch.values():
            if isinstance(value, torch.Tensor):
                return int(value.shape[0])
    raise TypeError("a batch must be a dict holding at least one tensor")


def _flat_scalars(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            out.update(_flat_scalars(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float, str, bool)):
            out[f"{prefix}{key}"] = value
        elif value is not None:
            out[f"{prefix}{key}"] = str(value)
    return out
