"""``worldenv train data|codec|teacher|student``: flags map onto the stage config dataclasses.

Examples::

    worldenv train data --out data/clips --clips 1200 --frames 6
    worldenv train codec --data 'data/clips/*.npz' --out runs/codec --steps 1500
    torchrun --nproc_per_node 2 -m worldenv train teacher --init runs/codec/model.safetensors --out runs/teacher
    worldenv train student --teacher runs/teacher/model.safetensors --out runs/student

Run options (``--out``, ``--steps``, ``--batch``, ``--lr``, ...) are the fields
of :class:`~worldenv.train.run.RunConfig`; ``--model key=value`` sets a
:class:`~worldenv.model.ModelConfig` field (for small test models); a stage's
own fields are flags of their own. A run directory that holds a resume
checkpoint continues from it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from typing import Any

STAGES = ("data", "codec", "teacher", "student")

_RUN_FLAGS = {
    "out": str, "steps": int, "batch": int, "lr": float, "warmup": int, "weight_decay": float,
    "grad_clip": float, "ema_decay": float, "ckpt_every": int, "log_every": int, "seed": int,
    "data": str, "device": str, "threads": int,
}  # fmt: skip
_CLIP_FLAGS = {"source": str, "frames": int, "max_offset": int, "num_scenes": int, "trajectory": str}
_STAGE_FLAGS: dict[str, dict[str, type]] = {
    "codec": {"frames_per_step": int, "warps_per_step": int, "grad_weight": float, "blend_noise": float},
    "teacher": {"init": str, "cond_dropout": float, "warp_t_max": float, "clip_frames": int},
    "student": {
        "teacher": str, "regress_steps": int, "ode_steps": int, "rollout": int, "chunk": int,
        "guidance": float, "fake_lr": float, "fake_steps": int, "dmd_t_min": float, "dmd_t_max": float,
    },
}  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", choices=STAGES, help="what to train (data: render a clip cache)")
    for name, typ in {**_RUN_FLAGS, **_CLIP_FLAGS}.items():
        parser.add_argument("--" + name.replace("_", "-"), type=typ, default=None)
    parser.add_argument("--clips", type=int, default=None, help="data: clips to render")
    parser.add_argument("--clips-per-file", type=int, default=100, help="data: clips per cache file")
    parser.add_argument("--model", action="append", default=[], metavar="KEY=VALUE", help="ModelConfig field (JSON value)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    seen = set(_RUN_FLAGS) | set(_CLIP_FLAGS)
    for flags in _STAGE_FLAGS.values():
        for name, typ in flags.items():
            if name not in seen:
                seen.add(name)
                parser.add_argument("--" + name.replace("_", "-"), type=typ, default=None)


def _given(args: argparse.Namespace, names: dict[str, type]) -> dict[str, Any]:
    return {k: getattr(args, k) for k in names if getattr(args, k, None) is not None}


def build_config(args: argparse.Namespace) -> Any:
    """The stage's config dataclass from parsed flags (defaults where a flag is absent)."""
    from worldenv.model import ModelConfig
    from worldenv.train.data import ClipConfig
    from worldenv.train.run import RunConfig

    model_kw: dict[str, Any] = {}
    for kv in args.model:
        k, sep, v = kv.partition("=")
        if not sep:
            raise ValueError(f"Expect --model KEY=VALUE, actually: {kv!r}")
        model_kw[k] = json.loads(v)
    model = ModelConfig(**model_kw)
    clip_kw = _given(args, _CLIP_FLAGS)
    clip_kw.setdefault("size", model.height)
    if args.stage == "codec":
        from worldenv.train.codec import CodecTrainConfig as C
    elif args.stage == "teacher":
        from worldenv.train.teacher import TeacherTrainConfig as C  # type: ignore[assignment]
    else:
        from worldenv.train.student import StudentTrainConfig as C  # type: ignore[assignment]
    default_run = C().run
    run_kw = {**{f.name: getattr(default_run, f.name) for f in dataclasses.fields(RunConfig)}, **_given(args, _RUN_FLAGS)}
    run_kw["clip"] = ClipConfig(**{**dataclasses.asdict(default_run.clip), **clip_kw})
    run_kw["progress"] = not args.no_progress
    return C(run=RunConfig(**run_kw), model=model, **_given(args, _STAGE_FLAGS[args.stage]))


def _run_data(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    from tqdm import tqdm

    from worldenv.train.data import ClipConfig, ClipMaker, write_clip_cache

    cfg = ClipConfig(**_given(args, _CLIP_FLAGS))
    n = args.clips or 1000
    out = Path(args.out or "data/clips")
    maker = ClipMaker(cfg, seed=args.seed or 0)
    t0 = time.time()
    per = max(1, args.clips_per_file)
    for k in tqdm(range(0, n, per), disable=args.no_progress):
        path = out / f"train-{k // per:03d}.npz"
        if path.exists():  # resumable: finished files are kept (their clips are fixed by seed and index)
            continue
        maker = ClipMaker(cfg, seed=(args.seed or 0) * 100003 + k // per)
        write_clip_cache(path, [maker.make() for _ in range(min(per, n - k))])
    print(f"wrote {n} clips to {out} in {time.time() - t0:.0f}s")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.stage == "data":
        return _run_data(args)
    cfg = build_config(args)
    try:
        _train(args.stage, cfg)
    finally:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
    return 0


def _train(stage: str, cfg: Any) -> None:
    if stage == "codec":
        from worldenv.train.codec import train_codec

        train_codec(cfg)
    elif stage == "teacher":
        from worldenv.train.teacher import train_teacher

        train_teacher(cfg)
    else:
        from worldenv.train.student import train_student

        train_student(cfg)
