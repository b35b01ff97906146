"""What every training stage shares: the run directory, resume, TensorBoard, progress bar, clip source.

A stage (codec, teacher, student) is a loop over ``step in range(start, steps)``
written top to bottom in its own module; :class:`Run` gives it the process
group, the clip source, the resumable state and the logging. Layout of a run
directory::

    <out>/resume.safetensors   training state, rewritten atomically every ``ckpt_every`` steps
    <out>/rng-<rank>-<step>.json  each rank's data and noise generators at that checkpoint
    <out>/model.safetensors    the stage's result as a loadable WorldModel checkpoint (EMA weights)
    <out>/tb/                  TensorBoard events (rank 0)
    <out>/config.json          the stage's config
"""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from worldenv._io import atomic_write_text
from worldenv.train import ddp
from worldenv.train.data import (
    ClipCache,
    ClipConfig,
    ClipMaker,
    clip_batch,
    sample_batch,
)
from worldenv.train.state import EMA, RESUME_NAME, load_state, save_state

__all__ = ["RunConfig", "Run", "lr_at"]


@dataclass
class RunConfig:
    """Options every stage has.

    Attributes:
        out: Run directory.
        steps: Optimizer steps in total (a resumed run continues up to this).
        batch: Clips per step per process.
        lr: Peak learning rate (AdamW).
        warmup: Linear warm-up steps.
        weight_decay: AdamW weight decay.
        grad_clip: Gradient norm clip.
        ema_decay: EMA decay of the shipped weights.
        ckpt_every: Steps between resume checkpoints.
        log_every: Steps between TensorBoard scalars.
        seed: Seed of all randomness (data, noise); ranks derive their own.
        data: Glob of clip cache files (``worldenv train data``); empty = render clips on the fly.
        clip: The clips rendered on the fly (and their size / T).
        device: ``auto``, ``cpu`` or ``cuda``.
        threads: torch intra-op threads per process (0 = leave torch's default).
        progress: Show a progress bar on rank 0.
    """

    out: str = "runs/stage"
    steps: int = 1000
    batch: int = 4
    lr: float = 3e-4
    warmup: int = 50
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.99
    ckpt_every: int = 100
    log_every: int = 10
    seed: int = 0
    data: str = ""
    clip: ClipConfig = dataclasses.field(default_factory=ClipConfig)
    device: str = "auto"
    threads: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        for name in ("steps", "batch", "ckpt_every", "log_every"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"Expect `{name}` to be a positive int, actually: {v!r}")
        if self.lr <= 0:
            raise ValueError(f"Expect `lr` > 0, actually: {self.lr}")
        if self.warmup < 0:
            raise ValueError(f"Expect `warmup` >= 0, actually: {self.warmup}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"Expect `ema_decay` in [0, 1), actually: {self.ema_decay}")
        if self.data and not glob.glob(self.data):
            raise ValueError(f"Expect `data` to match clip cache files, actually: nothing matches {self.data!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def lr_at(step: int, cfg: RunConfig) -> float:
    """Linear warm-up, then cosine decay to 10% of the peak."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    p = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, p))))


class Run:
    """One process's side of a training stage.

    Args:
        cfg: The stage's run options.
        stage_config: The full stage config (written to ``config.json``).
    """

    def __init__(self, cfg: RunConfig, stage_config: dict[str, Any]) -> None:
        self.cfg = cfg
        if cfg.threads > 0:
            torch.set_num_threads(cfg.threads)
        self.dist = ddp.setup(cfg.device)
        d = self.dist
        self.out = Path(cfg.out)
        if d.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(stage_config, indent=2, sort_keys=True) + "\n")
        # Every rank has its own stream of data and noise, all fixed by the seed.
        self.rng = np.random.default_rng([cfg.seed, d.rank])
        self.gen = torch.Generator(device=d.device).manual_seed(cfg.seed * 1000 + d.rank)
        if cfg.data:
            self.source: ClipMaker | ClipCache = ClipCache(sorted(glob.glob(cfg.data)))
        else:
            self.source = ClipMaker(cfg.clip, seed=cfg.seed, rank=d.rank, world_size=d.world_size)
        self.writer = None
        self._t0 = time.time()
        self._bar = None

    # ------------------------------------------------------------------ data

    def batch(self, size: int | None = None) -> dict[str, torch.Tensor]:
        """Next clip batch on this process's device (see :func:`~worldenv.train.data.clip_batch`)."""
        clips = sample_batch(self.source, size or self.cfg.batch, self.rng)
        return clip_batch(clips, self.dist.device)

    # ------------------------------------------------------------------ state

    def resume(
        self,
        modules: dict[str, nn.Module],
        optimizers: dict[str, torch.optim.Optimizer],
        emas: dict[str, EMA],
    ) -> int:
        """Restore the last checkpoint of this run directory if there is one; return the step to start from."""
        self._state = (modules, optimizers, emas)
        path = self.out / RESUME_NAME
        if not path.exists():
            return 0
        step, _ = load_state(path, modules=modules, optimizers=optimizers, emas=emas, rngs={}, torch_generators={})
        rng_path = self._rng_path(step)
        if rng_path.exists():
            saved = json.loads(rng_path.read_text())
            for name, r in self._rngs().items():
                r.bit_generator.state = saved["numpy"][name]
            for name, g in self._gens().items():
                g.set_state(torch.tensor(saved["torch"][name], dtype=torch.uint8))
        else:
            print(f"warning: no {rng_path.name}; rank {self.dist.rank}'s data and noise streams restart from the seed", flush=True)
        if self.dist.main:
            print(f"resumed {path} at step {step}", flush=True)
        return step

    def _rngs(self) -> dict[str, np.random.Generator]:
        rngs = {"run": self.rng}
        if isinstance(self.source, ClipMaker):
            rngs["clips"] = self.source.rng
        return rngs

    def _gens(self) -> dict[str, torch.Generator]:
        return {"noise": self.gen}

    def _rng_path(self, step: int) -> Path:
        return self.out / f"rng-{self.dist.rank}-{step}.json"

    def checkpoint(self, step: int, force: bool = False) -> None:
        """Write the resume state every ``ckpt_every`` steps (and when ``force``).

        Every rank holds the same weights under DDP, but each has its own data and
        noise generators; rank r writes its generators to ``rng-<r>-<step>.json`` so a
        resumed run continues every rank's stream, and rank 0 writes the rest. A
        rank's generator file of the previous checkpoint is removed only after
        the new state is on disk, so a kill between the two writes still finds
        the generators of the state it resumes.
        """
        if not force and step % self.cfg.ckpt_every:
            return
        modules, optimizers, emas = self._state
        d = self.dist
        rng_state = {
            "step": step,
            "numpy": {name: r.bit_generator.state for name, r in self._rngs().items()},
            "torch": {name: g.get_state().tolist() for name, g in self._gens().items()},
        }
        atomic_write_text(self._rng_path(step), json.dumps(rng_state))
        if d.main:
            save_state(
                self.out / RESUME_NAME,
                step=step,
                modules=modules,
                optimizers=optimizers,
                emas=emas,
                rngs={},
                torch_generators={},
                extra={"config": self.cfg.to_dict(), "wall_s": time.time() - self._t0},
            )
        d.barrier()
        keep = self._rng_path(step)
        for old in self.out.glob(f"rng-{d.rank}-*.json"):
            if old != keep:
                old.unlink(missing_ok=True)

    # ------------------------------------------------------------------ training helpers

    def wrap(self, module: nn.Module) -> nn.Module:
        """``module`` under DistributedDataParallel when the run has several processes, else itself."""
        if not self.dist.distributed:
            return module
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(module)

    def set_lr(self, step: int, optimizer: torch.optim.Optimizer) -> float:
        """Set ``optimizer``'s learning rate to the schedule's value at ``step`` (:func:`lr_at`) and return it."""
        lr = lr_at(step, self.cfg)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    # ------------------------------------------------------------------ logging

    def start_logging(self, start: int) -> None:
        if not self.dist.main:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tb"), purge_step=start)
        except ImportError:  # logging must not stop a run; say once how to get it
            print("TensorBoard logging off: pip install tensorboard", flush=True)
        if self.cfg.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=self.cfg.steps, initial=start, dynamic_ncols=True, mininterval=2.0)

    def log(self, step: int, scalars: dict[str, float]) -> None:
        """Progress every step; TensorBoard and stdout every ``log_every`` steps (averaged over ranks)."""
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix({k: f"{v:.4g}" for k, v in list(scalars.items())[:3]})
        if (step + 1) % self.cfg.log_every:
            return
        scalars = ddp.all_mean(self.dist, scalars)
        if self.dist.main:
            if self.writer is not None:
                for k, v in scalars.items():
                    self.writer.add_scalar(k, v, step + 1)
            line = " ".join(f"{k}={v:.5g}" for k, v in scalars.items())
            print(f"step {step + 1} {line} wall={time.time() - self._t0:.0f}s", flush=True)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self.writer is not None:
            self.writer.close()
        # The process group stays up: several stages may run in one process (re-creating a gloo
        # group in-process is fragile). The command line tears it down on exit.


def clip_grad(params: list[torch.nn.Parameter], max_norm: float) -> float:
    """Clip and return the gradient norm (a float for logging)."""
    return float(torch.nn.utils.clip_grad_norm_(params, max_norm))
