"""Codec ceiling: how well the world model's codec reconstructs held-out frames (no DiT involved).

Reports, on ground-truth frames of held-out rooms scenes (seeds >= 1,000,000):
RGB PSNR of encode -> decode (the best any generated latent can look through
the codec), AbsRel of the decoded depth, and the PSNR of the memory warp alone
on its valid pixels (the ceiling of copying seen surfaces).

    python benchmarks/codec_ceiling.py --model runs/student/model.safetensors
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from worldenv.model import WorldModel, frames_to_model, model_to_frames
from worldenv.scenes import load_scene
from worldenv.scenes.trajectories import make_trajectory
from worldenv.train.data import HELDOUT_SEED_START, memory_conditions


@torch.no_grad()
def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model", default="default")
    p.add_argument("--scenes", type=int, default=4)
    p.add_argument("--frames", type=int, default=24)
    a = p.parse_args()
    model = WorldModel.from_pretrained(a.model, device="cpu")
    cfg = model.config
    ps, rels, warp_ps = [], [], []
    for i in range(a.scenes):
        sc = load_scene("rooms", seed=HELDOUT_SEED_START + i)
        K = sc.default_intrinsics(cfg.height)
        _, c2w = make_trajectory("explore", sc, a.frames, np.random.default_rng(i))
        rgb, depth = sc.render_batch(c2w, np.repeat(K[None], len(c2w), 0), cfg.height)
        x = frames_to_model(torch.from_numpy(rgb), torch.from_numpy(depth).float(), cfg.depth_near, cfg.depth_far)
        r, d = model_to_frames(model.codec(x), cfg.depth_near, cfg.depth_far)
        gt = torch.from_numpy(rgb).float() / 255
        mse = (r - gt).pow(2).flatten(1).mean(1)
        ps += (10 * torch.log10(1 / mse)).tolist()
        gd = torch.from_numpy(depth)
        v = gd > 0
        rels.append(float(((d - gd).abs() / gd.clamp_min(1e-6))[v].clamp(max=1).mean()))
        wr, _, wm = memory_conditions(rgb, depth, c2w, K, range(1, len(c2w)))
        for j in range(len(wr)):
            m = torch.from_numpy(wm[j])
            if m.any():
                e = (torch.from_numpy(wr[j]).float() / 255 - gt[j + 1]).pow(2).mean(-1)[m].mean()
                warp_ps.append(float(10 * torch.log10(1 / e)))
    print(f"codec recon PSNR (RGB, held-out frames): {np.mean(ps):.2f} dB (median {np.median(ps):.2f}, n={len(ps)})")
    print(f"codec recon depth AbsRel: {np.mean(rels):.4f}")
    print(f"warp-only PSNR on valid warp pixels (GT memory): {np.mean(warp_ps):.2f} dB (n={len(warp_ps)})")


if __name__ == "__main__":
    main()
