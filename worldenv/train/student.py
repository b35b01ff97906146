"""Stage 3: the few-step causal student the environment runs, distilled from the teacher.

Two phases in one resumable run (``regress_steps`` then DMD up to ``run.steps``):

1. **Regression on teacher ODE trajectories.** The student starts from the
   teacher's weights. For a clip with ground-truth context, the teacher
   integrates the flow ODE (``ode_steps`` Euler steps, per-token levels)
   from the student's own starting point (warp latent noised to the warped
   tokens' start level, pure noise in holes) down to a clean ``x0``. The
   student is regressed onto that ``x0`` from its first-step input and from
   its second-step input (``x0`` re-noised to the second level, as the
   ``renoise`` sampler does).
2. **Distribution Matching Distillation with self-forcing.** Each step rolls
   the student out autoregressively through its KV cache, exactly as the
   environment does: the memory is seeded with the reference view and fused
   with the student's *own* generated frames, so the warp conditions are
   those of inference. The rollout itself runs without gradients and every
   context frame is detached (Endless World). The generator gradient is then
   taken on the recorded denoising input of one randomly chosen sampler step
   per rollout, over the clip forward with the generated frames as clean
   context; the rollout is processed in chunks of ``chunk`` frames and each
   chunk is backpropagated before the next is built, so peak memory is one
   chunk (InSpatio-World §3.2.1). The DMD gradient is ``x0_fake - x0_real``
   at a random noise level, where ``x0_real`` comes from the frozen teacher
   (with classifier-free guidance ``guidance``) and ``x0_fake`` from a critic
   that starts as the teacher and is trained online, by flow matching, on the
   student's samples.

The student's EMA weights are the shipped model.

Run: ``worldenv train student --teacher runs/teacher/model.safetensors --out runs/student``.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from worldenv.memory import SpatialMemory
from worldenv.model import ClipLayout, ModelConfig, WorldModel, token_start_times
from worldenv.train.codec import _asdict
from worldenv.train.run import Run, RunConfig, clip_grad
from worldenv.train.state import EMA
from worldenv.train.teacher import ClipInputs, cells, clip_forward, encode_clip

__all__ = ["StudentTrainConfig", "train_student", "rollout"]


@dataclass
class StudentTrainConfig:
    """Student stage.

    Attributes:
        run: Shared run options (``steps`` counts both phases).
        model: Kept for the CLI; the teacher checkpoint fixes the shape.
        teacher: The teacher's WorldModel checkpoint.
        regress_steps: Steps of phase 1 (regression); the rest are DMD.
        ode_steps: Euler steps of the teacher's ODE in phase 1.
        rollout: Frames per self-forcing rollout in phase 2 (<= the clips' T).
        chunk: Frames per backpropagated chunk.
        guidance: Classifier-free guidance scale of the real score (1 = none, one forward fewer).
        fake_lr: Learning rate of the fake-score critic.
        fake_steps: Critic updates per generator update.
        dmd_t_min: Lowest noise level of the DMD loss.
        dmd_t_max: Highest noise level of the DMD loss.
    """

    run: RunConfig = dataclasses.field(default_factory=lambda: RunConfig(out="runs/student", lr=5e-5, steps=400))
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    teacher: str = "runs/teacher/model.safetensors"
    regress_steps: int = 200
    ode_steps: int = 6
    rollout: int = 4
    chunk: int = 2
    guidance: float = 1.0
    fake_lr: float = 1e-4
    fake_steps: int = 1
    dmd_t_min: float = 0.02
    dmd_t_max: float = 0.98

    def __post_init__(self) -> None:
        for name in ("ode_steps", "rollout", "chunk", "fake_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"Expect `{name}` >= 1, actually: {getattr(self, name)}")
        if self.regress_steps < 0:
            raise ValueError(f"Expect `regress_steps` >= 0, actually: {self.regress_steps}")
        if self.guidance < 1.0:
            raise ValueError(f"Expect `guidance` >= 1, actually: {self.guidance}")
        if not 0.0 < self.dmd_t_min < self.dmd_t_max <= 1.0:
            raise ValueError(f"Expect 0 < `dmd_t_min` < `dmd_t_max` <= 1, actually: {self.dmd_t_min}, {self.dmd_t_max}")


def _x0(x: Tensor, t: Tensor, v: Tensor, model: WorldModel) -> Tensor:
    return x - cells(t, model) * v


@torch.no_grad()
def teacher_ode(teacher: WorldModel, ci: ClipInputs, x: Tensor, start: Tensor, steps: int) -> Tensor:
    """Integrate the teacher's flow ODE from per-token levels ``start`` to 0 (Euler), GT context.

    Args:
        teacher: The teacher model.
        ci: Encoded clip.
        x: ``(B, T, C, h, w)`` start latents.
        start: ``(B, T, N)`` start levels.
        steps: Euler steps.

    Returns:
        ``(B, T, C, h, w)`` clean latents.
    """
    for k in range(steps):
        t = start * (1 - k / steps)
        t_next = start * (1 - (k + 1) / steps)
        v = clip_forward(teacher.dit, teacher, ci, ci.z, x, t, ci.cond)
        x = x + (cells(t_next, teacher) - cells(t, teacher)) * v
    return x


@dataclass
class Rollout:
    """A no-grad self-forcing rollout of the student.

    Attributes:
        ci: Clip inputs whose ``cond`` / ``coverage`` are the rollout's own (memory of generated frames).
        x0: ``(B, L, C, h, w)`` generated clean latents (detached context).
        x_in: ``(B, L, C, h, w)`` recorded input of the chosen sampler step.
        t_in: ``(B, L, N)`` its per-token levels.
    """

    ci: ClipInputs
    x0: Tensor
    x_in: Tensor
    t_in: Tensor


@torch.no_grad()
def rollout(student: WorldModel, batch: dict[str, Tensor], frames: int, exit_step: int, gen: torch.Generator) -> Rollout:
    """Roll the student out through its KV cache with the environment's memory loop.

    The memory is seeded with the reference view; every generated frame is
    fused (where its warp had holes) before the next warp is rendered, as ``WorldEnv`` does.
    """
    cfg = student.config
    B = batch["rgb"].shape[0]
    L = min(frames, batch["rgb"].shape[1])
    H, W = cfg.height, cfg.width
    K = batch["K"]
    mem = SpatialMemory(B, capacity=2**18)
    mem.fuse(batch["ref_rgb"], batch["ref_depth"].float(), batch["ref_c2w"], K)
    mem.set_anchor(batch["ref_depth"].float(), batch["ref_c2w"], K)
    student.reset(batch["ref_rgb"], batch["ref_depth"].float(), batch["ref_c2w"], K)
    warps = {"warp_rgb": [], "warp_depth": [], "warp_mask": []}
    x0s, xs, ts = [], [], []
    for f in range(L):
        c2w = batch["c2w"][:, f]
        wr, wd, wm = mem.render(c2w, K, (H, W))
        rec: dict = {}
        rgb, depth = student.step(wr, wd, wm, c2w, generator=gen, record=rec)
        mem.fuse_generated(rgb, depth, c2w, K, wm)
        warps["warp_rgb"].append((wr.clamp(0, 1) * 255 + 0.5).to(torch.uint8))
        warps["warp_depth"].append(wd)
        warps["warp_mask"].append(wm)
        x0s.append(rec["x0"])
        xs.append(rec["x"][exit_step])
        ts.append(rec["t"][exit_step])
    own = dict(batch)
    for k, v in warps.items():
        own[k] = torch.stack(v, 1)
    for k in ("rgb", "depth", "c2w"):
        own[k] = batch[k][:, :L]
    ci = encode_clip(student, own, L)  # targets unused in DMD; cond/coverage/cameras are the rollout's
    return Rollout(ci, torch.stack(x0s, 1), torch.stack(xs, 1), torch.stack(ts, 1))


def _sub_clip(ci: ClipInputs, lo: int, hi: int, window: int) -> ClipInputs:
    """Frames ``lo .. hi-1`` of a clip (context and noisy), with the layout of ``hi - lo`` frames."""
    T = ci.z.shape[1]
    pl = torch.cat([ci.plucker[:, :1], ci.plucker[:, 1 + lo : 1 + hi], ci.plucker[:, 1 + T + lo : 1 + T + hi]], 1)
    pr = torch.cat([ci.proj[:, :1], ci.proj[:, 1 + lo : 1 + hi], ci.proj[:, 1 + T + lo : 1 + T + hi]], 1)
    return ClipInputs(
        ci.z_ref, ci.z[:, lo:hi], ci.cond[:, lo:hi], ci.coverage[:, lo:hi], pl, pr,
        ClipLayout.build(1, hi - lo, window, noisy=True),
    )  # fmt: skip


def _guided(dit, model: WorldModel, ci: ClipInputs, ctx: Tensor, x: Tensor, t: Tensor, cond: Tensor, g: float) -> Tensor:  # type: ignore[no-untyped-def]
    v = clip_forward(dit, model, ci, ctx, x, t, cond)
    if g == 1.0:
        return v
    v_u = clip_forward(dit, model, ci, ctx, x, t, torch.zeros_like(cond))
    return v_u + g * (v - v_u)


def train_student(cfg: StudentTrainConfig) -> WorldModel:
    """Distill the student; write ``<out>/model.safetensors`` (the shippable WorldModel, EMA weights)."""
    rc = cfg.run
    run = Run(rc, {"stage": "student", **_asdict(cfg)})
    dev = run.dist.device
    teacher = WorldModel.from_pretrained(cfg.teacher, device=dev).eval()
    teacher.requires_grad_(False)
    student = WorldModel.from_pretrained(cfg.teacher, device=dev)
    student.codec.requires_grad_(False)
    if student.blend is not None:
        student.blend.requires_grad_(False)
    fake = copy.deepcopy(teacher.dit).requires_grad_(True)
    mcfg = student.config
    W = mcfg.window
    params = list(student.dit.parameters())
    opt = torch.optim.AdamW(params, lr=rc.lr, weight_decay=rc.weight_decay)
    opt_fake = torch.optim.AdamW(fake.parameters(), lr=cfg.fake_lr)
    ema = EMA(student.dit, rc.ema_decay)
    start = run.resume({"dit": student.dit, "fake": fake}, {"opt": opt, "fake": opt_fake}, {"dit": ema})
    g_net = run.wrap(student.dit)
    f_net = run.wrap(fake)
    run.start_logging(start)
    sc = student.sampler.config
    for step in range(start, rc.steps):
        batch = run.batch()
        logs: dict[str, float] = {"lr": run.set_lr(step, opt)}
        if step < cfg.regress_steps:
            # ---- phase 1: regression onto teacher ODE endpoints from the student's own inputs
            ci = encode_clip(student, batch, rc.clip.frames)
            start_t = token_start_times(ci.coverage.flatten(0, 1), sc.warp_noise).view_as(ci.coverage)  # (B, T, N)
            z_warp = ci.cond[:, :, :-1]
            eps = torch.randn(ci.z.shape, generator=run.gen, device=dev)
            x1 = torch.lerp(z_warp, eps, cells(start_t, student))
            target = teacher_ode(teacher, ci, x1, start_t, cfg.ode_steps)
            t2 = start_t.clamp(max=sc.timesteps[1]) if sc.steps > 1 else start_t
            eps2 = torch.randn(ci.z.shape, generator=run.gen, device=dev)
            x2 = torch.lerp(target, eps2, cells(t2, student))
            x_in = torch.cat([x1, x2])
            t_in = torch.cat([start_t, t2])
            ci2 = dataclasses.replace(
                ci, z_ref=ci.z_ref.repeat(2, 1, 1, 1, 1), z=ci.z.repeat(2, 1, 1, 1, 1),
                cond=ci.cond.repeat(2, 1, 1, 1, 1), plucker=ci.plucker.repeat(2, 1, 1, 1), proj=ci.proj.repeat(2, 1, 1, 1),
            )  # fmt: skip
            v = clip_forward(g_net, student, ci2, ci2.z, x_in, t_in, ci2.cond)
            loss = F.mse_loss(_x0(x_in, t_in, v, student), torch.cat([target, target]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            logs.update(regress_loss=loss.item(), grad_norm=clip_grad(params, rc.grad_clip))
            opt.step()
        else:
            # ---- phase 2: DMD on self-forcing rollouts, chunk-wise backprop
            exit_step = int(torch.randint(sc.steps, (1,), generator=run.gen))
            student.eval()
            ro = rollout(student, batch, cfg.rollout, exit_step, run.gen)
            student.train()
            L = ro.x0.shape[1]
            # ---- fake-score critic first (flow matching on the student's detached samples), so even
            # the first DMD step sees a critic that differs from the teacher
            for _ in range(cfg.fake_steps):
                lo, b = max(0, L - W - 1), L
                sub = _sub_clip(ro.ci, lo, b, W)
                x0d = ro.x0[:, lo:b]
                n = b - lo
                t = torch.rand(x0d.shape[0], n, 1, generator=run.gen, device=dev).expand(-1, -1, ro.t_in.shape[-1])
                eps = torch.randn(x0d.shape, generator=run.gen, device=dev)
                x_t = torch.lerp(x0d, eps, cells(t, teacher))
                v = clip_forward(f_net, teacher, sub, x0d, x_t, t, sub.cond)
                f_loss = F.mse_loss(v, eps - x0d)
                opt_fake.zero_grad(set_to_none=True)
                f_loss.backward()
                torch.nn.utils.clip_grad_norm_(fake.parameters(), rc.grad_clip)
                opt_fake.step()
            logs["fake_loss"] = f_loss.item()
            opt.zero_grad(set_to_none=True)
            chunks = [(a, min(L, a + cfg.chunk)) for a in range(0, L, cfg.chunk)]
            dmd_sum = 0.0
            for i, (a, b) in enumerate(chunks):
                lo = max(0, a - W)  # the chunk's frames attend to at most W earlier frames
                sub = _sub_clip(ro.ci, lo, b, W)
                ctx = ro.x0[:, lo:b]  # detached generated context
                sync = contextlib.nullcontext() if (i + 1 == len(chunks) or not run.dist.distributed) else g_net.no_sync()
                with sync:
                    v = clip_forward(g_net, student, sub, ctx, ro.x_in[:, lo:b], ro.t_in[:, lo:b], sub.cond)
                    x0 = _x0(ro.x_in[:, lo:b], ro.t_in[:, lo:b], v, student)[:, a - lo :]  # (B, c, C, h, w) with grad
                    Bc, c = x0.shape[:2]
                    t = cfg.dmd_t_min + (cfg.dmd_t_max - cfg.dmd_t_min) * torch.rand(
                        Bc, c, 1, generator=run.gen, device=dev
                    )
                    t_tok = t.expand(Bc, c, ro.t_in.shape[-1])
                    eps = torch.randn(x0.shape, generator=run.gen, device=dev)
                    x_t = torch.lerp(x0.detach(), eps, t[..., None, None])
                    pad = a - lo  # the discarded leading noisy frames get the chunk's own values
                    xt_full = torch.cat([ctx[:, :pad], x_t], 1)
                    tt_full = torch.cat([torch.zeros_like(ro.t_in[:, lo:a]), t_tok], 1)
                    with torch.no_grad():
                        v_real = _guided(teacher.dit, teacher, sub, ctx, xt_full, tt_full, sub.cond, cfg.guidance)
                        v_fake = clip_forward(fake, teacher, sub, ctx, xt_full, tt_full, sub.cond)
                        x0_real = _x0(xt_full, tt_full, v_real, teacher)[:, pad:]
                        x0_fake = _x0(xt_full, tt_full, v_fake, teacher)[:, pad:]
                        norm = (x0.detach() - x0_real).abs().mean(dim=(2, 3, 4), keepdim=True).clamp_min(1e-4)
                        grad = (x0_fake - x0_real) / norm
                    loss = 0.5 * F.mse_loss(x0, (x0 - grad).detach()) * (b - a) / L
                    loss.backward()
                dmd_sum += loss.item()
            logs.update(dmd_loss=dmd_sum, grad_norm=clip_grad(params, rc.grad_clip))
            opt.step()
        ema.update(student.dit)
        run.log(step, logs)
        run.checkpoint(step + 1, force=step + 1 == rc.steps)
    ema.copy_to(student.dit)
    student.eval()
    if run.dist.main:
        student.save_pretrained(run.out / "model.safetensors")
    run.dist.barrier()
    run.finish()
    return student
