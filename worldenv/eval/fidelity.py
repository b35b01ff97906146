"""Fidelity of a world model against the oracle on held-out procedural scenes.

The same trajectories (exploration walks and loops) are run with three dynamics:

- ``model``: the world model; its memory is fused with its own frames (as ``WorldEnv``),
- ``warp``: the memory reprojection alone, holes left as they are; its memory holds the
  reference view only (``WorldEnv(dynamics="warp")``). Fusing its own renders back would
  add nothing new but would resample the reference's points step after step (on the
  held-out loops that cost reference surfaces 6 dB),
- ``oracle``: the scene's ground-truth renderer.

Every step, model and warp frames are compared with the oracle frame: PSNR and
SSIM on RGB, AbsRel on depth, split into pixels whose surface was **seen**
before and pixels never seen. A pixel's surface was seen when a memory built
from *oracle* frames 0..i-1 has a valid warp there *and* that warp shows the
same surface (its depth within ``seen_depth_tol`` of the oracle's). A valid
warp alone is not enough: where a surface comes into view for the first time
(a doorway's frame, a chair seen from a new side) the memory often shows what
lies behind it, valid but of another surface; on the held-out rooms that is
about one valid pixel in four. Two more splits are reported by PSNR:

- ``seen_valid``: the valid-warp mask alone (the looser definition);
- ``seen_reference``: surfaces seen in the reference view, the only ground
  truth the model is given. The other seen pixels show surfaces the model
  itself generated when they first came into view, so there the oracle tells
  how close its invention was to the scene, not whether it kept it.

The oracle memory's own warp on the seen pixels (``oracle_warp_psnr_seen``) is
the point-splat ceiling: what re-rendering perfect observations gives. Its
drift (``oracle_warp_psnr_drift_db``, the same windows) is what the
trajectories alone cause: early steps show more of the reference view.

Summary numbers:

- ``psnr_seen``: mean over steps and trajectories of the model's seen-pixel PSNR;
- ``psnr_drift_db``: mean seen-PSNR of steps 1-50 minus that of steps 151-200
  (first minus last quarter of the steps when a run is shorter than 200);
- ``psnr_gain_over_warp_holes``: model minus warp-only full-frame PSNR, over
  frames where the warp has at least ``hole_frac`` holes;
- ``loop_closure_psnr``: on loop trajectories, PSNR of the model's frame on
  returning to the start pose against the first frame (each loop's in
  ``loop_closure_psnr_per_loop``; ``warp_loop_closure_psnr`` is warp-only's,
  the reference view's own points re-rendered there, holes left black).

Scenes are held out: seeds ``>= HELDOUT_SEED_START`` (see ``worldenv.train.data``).
All trajectories are streamed as one batch (B = trajectories).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from worldenv.memory import MEMORY_UPDATES, SpatialMemory
from worldenv.train.data import HELDOUT_SEED_START, is_heldout

__all__ = ["FidelityConfig", "evaluate_fidelity", "psnr", "ssim_map", "frame_metrics", "summarize", "plot_curves"]


@dataclass
class FidelityConfig:
    """What ``worldenv eval fidelity`` runs.

    Attributes:
        model: ``"default"`` or a checkpoint path.
        scene: Procedural scene family.
        seeds: Held-out scene seeds (all ``>= HELDOUT_SEED_START``).
        kinds: Trajectory kinds (``explore`` walks and ``loop``\\s).
        steps: Model steps per trajectory (the standard protocol: 200).
        size: Frame side in pixels (the model's).
        hole_frac: A frame counts as "with holes" at this warp hole fraction.
        seen_depth_tol: A valid oracle-memory warp shows the surface seen before when its depth is
            within this fraction of the oracle depth.
        seed: Seed of trajectories and model noise.
        memory_update: How generated frames enter the model's memory, as in ``WorldEnv``:
            ``"holes"`` (only pixels the warp left empty, :meth:`SpatialMemory.fuse_generated`)
            or ``"all"`` (every pixel overwrites its voxel).
        voxel_size: Voxel edge of every memory (metres).
        capacity: Points per memory stream.
        out: Output directory (``fidelity.json``, ``fidelity.png``).
    """

    model: str = "default"
    scene: str = "rooms"
    seeds: tuple[int, ...] = tuple(HELDOUT_SEED_START + i for i in range(4))
    kinds: tuple[str, ...] = ("explore", "loop")
    steps: int = 200
    size: int = 128
    hole_frac: float = 0.1
    seen_depth_tol: float = 0.03
    seed: int = 0
    out: str = "outputs/fidelity"
    memory_update: str = "holes"
    voxel_size: float = 0.02
    capacity: int = 2**19
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.seeds = tuple(int(s) for s in self.seeds)
        self.kinds = tuple(self.kinds)
        bad = [s for s in self.seeds if not is_heldout(s)]
        if bad:
            raise ValueError(f"Expect held-out scene seeds (>= {HELDOUT_SEED_START}), actually: {bad}")
        if not self.seeds or not self.kinds:
            raise ValueError("Expect at least one seed and one trajectory kind, actually: none")
        if self.steps < 4:
            raise ValueError(f"Expect `steps` >= 4, actually: {self.steps}")
        if not 0.0 <= self.hole_frac < 1.0:
            raise ValueError(f"Expect `hole_frac` in [0, 1), actually: {self.hole_frac}")
        if self.memory_update not in MEMORY_UPDATES:
            raise ValueError(f"Expect `memory_update` in {MEMORY_UPDATES}, actually: {self.memory_update!r}")
        if not 0.0 < self.seen_depth_tol < 1.0:
            raise ValueError(f"Expect `seen_depth_tol` in (0, 1), actually: {self.seen_depth_tol}")


# ----------------------------------------------------------------------------- metrics


def psnr(mse: Tensor) -> Tensor:
    """PSNR (dB) of images in [0, 1] from their MSE (inf at 0)."""
    return 10.0 * torch.log10(1.0 / mse)


def _gauss(size: int = 11, sigma: float = 1.5) -> Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim_map(a: Tensor, b: Tensor) -> Tensor:
    """Per-pixel SSIM (Gaussian 11x11, sigma 1.5, channel mean) of RGB in [0, 1].

    Args:
        a: ``(B, H, W, 3)``.
        b: ``(B, H, W, 3)``.

    Returns:
        ``(B, H, W)``.
    """
    x, y = a.permute(0, 3, 1, 2), b.permute(0, 3, 1, 2)  # (B, 3, H, W)
    g = _gauss().to(a)
    C = x.shape[1]
    kx = g.view(1, 1, 1, -1).repeat(C, 1, 1, 1)
    ky = g.view(1, 1, -1, 1).repeat(C, 1, 1, 1)

    def blur(t: Tensor) -> Tensor:
        t = F.pad(t, (5, 5, 5, 5), mode="reflect")
        return F.conv2d(F.conv2d(t, kx, groups=C), ky, groups=C)

    mx, my = blur(x), blur(y)
    sxx, syy, sxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx**2 + my**2 + c1) * (sxx + syy + c2))
    return s.mean(1)


def frame_metrics(
    rgb: Tensor, depth: Tensor, gt_rgb: Tensor, gt_depth: Tensor, seen: Tensor, splits: dict[str, Tensor] | None = None
) -> dict[str, Tensor]:
    """Per-frame metrics against ground truth, overall and split by ``seen``.

    Args:
        rgb: ``(B, H, W, 3)`` float in [0, 1].
        depth: ``(B, H, W)`` metres (0 = unknown; counts as a full relative error).
        gt_rgb: ``(B, H, W, 3)`` float in [0, 1].
        gt_depth: ``(B, H, W)`` metres (0 = no ground truth there).
        seen: ``(B, H, W)`` bool.
        splits: More ``(B, H, W)`` bool masks by name, reported by PSNR (``psnr_<name>``) and fraction.

    Returns:
        ``(B,)`` tensors: ``psnr``, ``psnr_seen``, ``psnr_unseen``, ``ssim``, ``ssim_seen``, ``ssim_unseen``,
        ``absrel``, ``absrel_seen``, ``absrel_unseen``, ``seen_frac`` (NaN where a split is empty), and
        ``psnr_<name>``, ``<name>_frac`` per extra split.
    """
    se = (rgb - gt_rgb).pow(2).mean(-1)  # (B, H, W)
    ss = ssim_map(rgb, gt_rgb)
    valid = gt_depth > 0
    rel = ((depth - gt_depth).abs() / gt_depth.clamp_min(1e-6)).clamp(max=1.0)  # (B, H, W), unknown depth -> 1
    out: dict[str, Tensor] = {}
    for name, m in (("", torch.ones_like(seen)), ("_seen", seen), ("_unseen", ~seen)):
        n = m.flatten(1).sum(1).float()
        nan = torch.full_like(n, float("nan"))
        mse = (se * m).flatten(1).sum(1) / n.clamp_min(1)
        out["psnr" + name] = torch.where(n > 0, psnr(mse.clamp_min(1e-10)), nan)
        out["ssim" + name] = torch.where(n > 0, (ss * m).flatten(1).sum(1) / n.clamp_min(1), nan)
        md = m & valid
        nd = md.flatten(1).sum(1).float()
        out["absrel" + name] = torch.where(nd > 0, (rel * md).flatten(1).sum(1) / nd.clamp_min(1), nan)
    out["seen_frac"] = seen.flatten(1).float().mean(1)
    for name, m in (splits or {}).items():
        out["psnr_" + name] = masked_psnr(se, m)
        out[name + "_frac"] = m.flatten(1).float().mean(1)
    return out


def masked_psnr(se: Tensor, mask: Tensor) -> Tensor:
    """PSNR ``(B,)`` of per-pixel squared errors ``se`` ``(B, H, W)`` over ``mask`` (NaN where it is empty)."""
    n = mask.flatten(1).sum(1).float()
    mse = (se * mask).flatten(1).sum(1) / n.clamp_min(1)
    return torch.where(n > 0, psnr(mse.clamp_min(1e-10)), torch.full_like(n, float("nan")))


# ----------------------------------------------------------------------------- rollouts


def _trajectories(cfg: FidelityConfig) -> list[dict[str, Any]]:
    from worldenv.scenes import load_scene
    from worldenv.scenes.trajectories import make_trajectory

    trajs = []
    for s in cfg.seeds:
        scene = load_scene(cfg.scene, seed=s)
        K = scene.default_intrinsics(cfg.size)
        for kind in cfg.kinds:
            rng = np.random.default_rng([cfg.seed, s, len(trajs)])
            _, c2w = make_trajectory(kind, scene, cfg.steps + 1, rng)  # pose 0 is the reference view
            rgb, depth = scene.render_batch(c2w, np.repeat(K[None], len(c2w), 0), cfg.size)
            trajs.append({"seed": s, "kind": kind, "c2w": c2w, "K": K, "rgb": rgb, "depth": depth})
    return trajs


@torch.no_grad()
def evaluate_fidelity(cfg: FidelityConfig, model: Any = None) -> dict[str, Any]:
    """Run model, warp-only and oracle along the same trajectories and measure.

    Args:
        cfg: What to run.
        model: A :class:`~worldenv.model.WorldModel` to use instead of loading ``cfg.model``
            (anything with ``reset`` / ``step`` of that signature, e.g. a test double).

    Returns:
        ``{"summary": {...}, "curves": {...}, "config": {...}}`` (also written to ``<out>/fidelity.json``).
    """
    t0 = time.time()
    if model is None:
        from worldenv.model import WorldModel

        model = WorldModel.from_pretrained(cfg.model, device="cpu", seed=cfg.seed)
    trajs = _trajectories(cfg)
    B, S = len(trajs), cfg.steps
    K = torch.from_numpy(np.stack([t["K"] for t in trajs]))  # (B, 3, 3)
    c2w = torch.from_numpy(np.stack([t["c2w"] for t in trajs]))  # (B, S+1, 4, 4)
    gt_rgb8 = torch.from_numpy(np.stack([t["rgb"] for t in trajs]))  # (B, S+1, H, W, 3) uint8
    gt_depth = torch.from_numpy(np.stack([t["depth"] for t in trajs])).float()
    size = (cfg.size, cfg.size)
    # "reference" holds the reference view only: it is the warp-only dynamics (WorldEnv's "warp") and
    # tells which pixels show reference surfaces.
    mems = {name: SpatialMemory(B, capacity=cfg.capacity, voxel_size=cfg.voxel_size) for name in ("oracle", "reference", "model")}
    for mem in mems.values():
        mem.fuse(gt_rgb8[:, 0], gt_depth[:, 0], c2w[:, 0], K)
    mems["model"].set_anchor(gt_depth[:, 0], c2w[:, 0], K)
    model.reset(gt_rgb8[:, 0], gt_depth[:, 0], c2w[:, 0], K)
    gen = torch.Generator().manual_seed(cfg.seed)
    per: dict[str, list[dict[str, Tensor]]] = {"model": [], "warp": [], "oracle_warp": []}
    hole_frac, model_ms = [], 0.0
    last_model_rgb = last_warp_rgb = None
    for i in range(1, S + 1):
        pose = c2w[:, i]
        gt = gt_rgb8[:, i].float() / 255.0
        o_rgb, o_depth, seen_valid = mems["oracle"].render(pose, K, size)
        w_rgb, w_depth, w_mask = mems["reference"].render(pose, K, size)
        tol = cfg.seen_depth_tol * gt_depth[:, i]
        seen = seen_valid & ((o_depth - gt_depth[:, i]).abs() <= tol)  # the same surface as before
        seen_ref = w_mask & ((w_depth - gt_depth[:, i]).abs() <= tol)
        splits = {"seen_valid": seen_valid, "seen_reference": seen_ref}
        m_rgb_w, m_depth_w, m_mask_w = mems["model"].render(pose, K, size)
        ts = time.perf_counter()
        m_rgb, m_depth = model.step(m_rgb_w, m_depth_w, m_mask_w, pose, generator=gen)
        model_ms += (time.perf_counter() - ts) * 1e3
        per["model"].append(frame_metrics(m_rgb, m_depth, gt, gt_depth[:, i], seen, splits))
        per["warp"].append(frame_metrics(w_rgb, w_depth, gt, gt_depth[:, i], seen, splits))
        per["oracle_warp"].append(frame_metrics(o_rgb, o_depth, gt, gt_depth[:, i], seen, splits))
        hole_frac.append(1.0 - w_mask.flatten(1).float().mean(1))
        mems["oracle"].fuse(gt_rgb8[:, i], gt_depth[:, i], pose, K)
        mems["model"].fuse_generated(m_rgb, m_depth, pose, K, m_mask_w, update=cfg.memory_update)
        last_model_rgb, last_warp_rgb = m_rgb, w_rgb
    assert last_model_rgb is not None and last_warp_rgb is not None
    curves = {
        dyn: {k: torch.stack([f[k] for f in frames], 1).numpy() for k in frames[0]}  # (B, S) each
        for dyn, frames in per.items()
    }
    holes = torch.stack(hole_frac, 1).numpy()  # (B, S)
    loop_psnr, warp_loop_psnr = [], []
    first = gt_rgb8[:, 0].float() / 255.0
    for b, t in enumerate(trajs):
        if t["kind"] == "loop" and np.allclose(t["c2w"][-1], t["c2w"][0], atol=1e-6):
            for out, last in ((loop_psnr, last_model_rgb), (warp_loop_psnr, last_warp_rgb)):
                out.append(float(psnr((last[b] - first[b]).pow(2).mean().clamp_min(1e-10))))
    summary = summarize(curves, holes, loop_psnr, cfg.hole_frac)
    # Per loop, and the reference memory's own re-render from the start pose (warp-only; holes black).
    summary["loop_closure_psnr_per_loop"] = loop_psnr
    summary["warp_loop_closure_psnr"] = float(np.mean(warp_loop_psnr)) if warp_loop_psnr else float("nan")
    summary["model_ms_per_step_batched"] = model_ms / S
    summary["trajectories"] = B
    summary["steps"] = S
    summary["wall_s"] = time.time() - t0
    result = {
        "summary": summary,
        "curves": {dyn: {k: _step_means(v).tolist() for k, v in c.items()} for dyn, c in curves.items()},
        "hole_frac_curve": holes.mean(0).tolist(),
        "trajectories": [{"seed": t["seed"], "kind": t["kind"]} for t in trajs],
        "config": asdict(cfg),
    }
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "fidelity.json").write_text(json.dumps(result, indent=1, default=_jsonable) + "\n")
    plot_curves(result, out / "fidelity.png")
    return result


def _jsonable(x: Any) -> Any:
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def _mean(x: np.ndarray) -> float:
    return float(np.nanmean(x)) if np.isfinite(x).any() else float("nan")


def _step_means(v: np.ndarray) -> np.ndarray:
    """``np.nanmean(v, 0)`` of (B, S) values without its warning: NaN at steps where every value is NaN."""
    ok = ~np.isnan(v)
    n = ok.sum(0)
    return np.where(n > 0, np.where(ok, v, 0.0).sum(0) / np.maximum(n, 1), np.nan)


def summarize(curves: dict[str, dict[str, np.ndarray]], holes: np.ndarray, loop_psnr: list[float], hole_frac: float) -> dict[str, Any]:
    """The summary numbers from per-step curves ``(B, S)``; see the module docstring."""
    m, w = curves["model"], curves["warp"]
    S = m["psnr_seen"].shape[1]
    q = 50 if S >= 200 else max(1, S // 4)
    early, late = m["psnr_seen"][:, :q], m["psnr_seen"][:, S - q :]
    holey = holes >= hole_frac
    s: dict[str, Any] = {}
    keys = ("psnr", "psnr_seen", "psnr_unseen", "ssim", "ssim_seen", "ssim_unseen", "absrel", "absrel_seen", "absrel_unseen")
    extra = [k for k in m if k.startswith("psnr_") and k not in keys]
    for dyn, c in (("", m), ("warp_", w)):
        for k in (*keys, *extra):
            s[dyn + k] = _mean(c[k])
    if "oracle_warp" in curves:  # the point-splat ceiling: a memory of ground-truth frames, re-rendered
        for k in ("psnr_seen", *extra):
            s["oracle_warp_" + k] = _mean(curves["oracle_warp"][k])
    s["psnr_drift_db"] = _mean(early) - _mean(late)
    if "oracle_warp" in curves:
        # The same difference for the ceiling: how much of the drift the trajectories alone cause
        # (early steps see more of the reference view, late ones more of what came into view later).
        o = curves["oracle_warp"]["psnr_seen"]
        s["oracle_warp_psnr_drift_db"] = _mean(o[:, :q]) - _mean(o[:, S - q :])
    s["drift_window_steps"] = q
    s["frames_with_holes"] = int(holey.sum())
    s["psnr_gain_over_warp_holes"] = _mean(m["psnr"][holey] - w["psnr"][holey]) if holey.any() else float("nan")
    s["loop_closure_psnr"] = float(np.mean(loop_psnr)) if loop_psnr else float("nan")
    s["loops"] = len(loop_psnr)
    s["seen_frac"] = _mean(m["seen_frac"])
    for k in m:
        if k.endswith("_frac") and k != "seen_frac":
            s[k] = _mean(m[k])
    return s


def plot_curves(result: dict[str, Any], path: Path) -> None:
    """Seen-PSNR and full-frame PSNR per step (model vs warp-only) as a PNG (Pillow, no plotting library)."""
    from PIL import Image, ImageDraw

    series = [
        ("model psnr_seen", result["curves"]["model"]["psnr_seen"], (200, 30, 30)),
        ("warp psnr_seen", result["curves"]["warp"]["psnr_seen"], (30, 30, 200)),
        ("model psnr", result["curves"]["model"]["psnr"], (240, 140, 40)),
        ("warp psnr", result["curves"]["warp"]["psnr"], (40, 160, 220)),
    ]
    if "oracle_warp" in result["curves"]:
        series.append(("oracle-memory warp psnr_seen (ceiling)", result["curves"]["oracle_warp"]["psnr_seen"], (40, 150, 40)))
    Wd, Ht, pad = 720, 420, 50
    vals = [v for _, ys, _ in series for v in ys if v is not None and math.isfinite(v)]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    lo, hi = math.floor(lo) - 1, math.ceil(hi) + 1
    img = Image.new("RGB", (Wd, Ht), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([pad, pad, Wd - pad, Ht - pad], outline="black")
    n = max(len(series[0][1]), 2)
    for yv in range(int(lo), int(hi) + 1, max(1, int((hi - lo) // 8) or 1)):
        y = Ht - pad - (yv - lo) / (hi - lo) * (Ht - 2 * pad)
        d.line([pad - 4, y, pad, y], fill="black")
        d.text((5, y - 6), f"{yv} dB", fill="black")
    for k, (name, ys, col) in enumerate(series):
        pts = [
            (pad + i / (n - 1) * (Wd - 2 * pad), Ht - pad - (v - lo) / (hi - lo) * (Ht - 2 * pad))
            for i, v in enumerate(ys)
            if v is not None and math.isfinite(v)
        ]
        if len(pts) > 1:
            d.line(pts, fill=col, width=2)
        d.text((pad + 10, pad + 8 + 14 * k), name, fill=col)
    d.text((Wd // 2 - 30, Ht - pad + 10), f"step 1..{n}", fill="black")
    img.save(path)
