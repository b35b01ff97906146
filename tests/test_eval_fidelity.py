"""Fidelity metrics on cases whose answer is known."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from worldenv.eval.fidelity import FidelityConfig, evaluate_fidelity, frame_metrics, summarize
from worldenv.train.data import HELDOUT_SEED_START


def test_identical_frames_are_perfect_and_holes_cost():
    g = torch.Generator().manual_seed(0)
    gt = torch.rand(2, 32, 32, 3, generator=g)
    depth = torch.full((2, 32, 32), 2.0)
    seen = torch.zeros(2, 32, 32, dtype=torch.bool)
    seen[:, :, :16] = True
    m = frame_metrics(gt, depth, gt, depth, seen)
    assert (m["psnr_seen"] >= 99).all() and (m["psnr_unseen"] >= 99).all()
    torch.testing.assert_close(m["ssim"], torch.ones(2), atol=1e-4, rtol=0)
    assert (m["absrel"] == 0).all()
    holes = gt.clone()
    holes[:, :, 16:] = 0  # a warp-only frame: nothing where never seen
    hd = depth.clone()
    hd[:, :, 16:] = 0
    h = frame_metrics(holes, hd, gt, depth, seen)
    assert (h["psnr_seen"] >= 99).all() and (h["psnr_unseen"] < 12).all()
    torch.testing.assert_close(h["absrel_unseen"], torch.ones(2))  # unknown depth is a full error
    torch.testing.assert_close(m["seen_frac"], torch.full((2,), 0.5))


def test_drift_is_first_minus_last_window_for_model_and_ceiling():
    S = 200
    steps = np.arange(S, dtype=np.float64)
    names = ("psnr", "psnr_unseen", "ssim", "ssim_seen", "ssim_unseen", "absrel", "absrel_seen", "absrel_unseen", "seen_frac")
    model = {k: np.full((3, S), 0.5) for k in names}
    model["psnr_seen"] = np.tile(20.0 - 0.02 * steps, (3, 1))
    model["psnr_seen"][0, [10, 39]] = np.nan  # steps with no seen pixel are skipped (symmetric: same mean)
    warp = {k: v.copy() for k, v in model.items()}
    ceiling = {"psnr_seen": np.tile(30.0 - 0.01 * steps, (3, 1))}
    s = summarize({"model": model, "warp": warp, "oracle_warp": ceiling}, np.zeros((3, S)), [], 0.1)
    assert s["drift_window_steps"] == 50
    assert s["psnr_drift_db"] == pytest.approx(0.02 * 150)  # the windows' centres are 150 steps apart
    assert s["oracle_warp_psnr_drift_db"] == pytest.approx(0.01 * 150)
    no_ceiling = summarize({"model": model, "warp": warp}, np.zeros((3, S)), [], 0.1)
    assert "oracle_warp_psnr_drift_db" not in no_ceiling


class OracleDouble:
    """A 'model' that returns the ground-truth render: every fidelity number must be perfect."""

    def __init__(self, seeds, kinds, size):
        from worldenv.scenes import load_scene

        self.scenes = [load_scene("rooms", seed=s) for s in seeds for _ in kinds]
        self.size = size

    def reset(self, rgb, depth, c2w, K):
        self.K = K.numpy()

    def step(self, warp_rgb, warp_depth, warp_mask, c2w, generator=None):
        out = [sc.render(c2w[b].numpy(), self.K[b], self.size) for b, sc in enumerate(self.scenes)]
        rgb = torch.from_numpy(np.stack([o[0] for o in out])).float() / 255
        return rgb, torch.from_numpy(np.stack([o[1] for o in out])).float()


@pytest.mark.timeout(120)
def test_oracle_model_scores_perfectly_and_beats_warp(tmp_path):
    seeds, kinds = (HELDOUT_SEED_START,), ("explore", "loop")
    cfg = FidelityConfig(seeds=seeds, kinds=kinds, steps=12, out=str(tmp_path))
    res = evaluate_fidelity(cfg, model=OracleDouble(seeds, kinds, 128))
    s = res["summary"]
    assert s["psnr_seen"] >= 99 and s["loop_closure_psnr"] >= 99 and s["loops"] == 1
    assert s["loop_closure_psnr_per_loop"] == [s["loop_closure_psnr"]]
    assert 15 < s["warp_loop_closure_psnr"] < 99  # the reference memory re-rendered at the start pose
    # Warp-only keeps the reference's points as they were (WorldEnv's "warp"); the oracle memory's
    # voxels were rewritten by later, oblique views. Re-fusing its own renders resampled them (-8 dB).
    assert s["warp_psnr_seen_reference"] > s["oracle_warp_psnr_seen_reference"] + 3
    assert abs(s["psnr_drift_db"]) < 1e-6
    assert s["frames_with_holes"] > 0 and s["psnr_gain_over_warp_holes"] > 10  # warp-only leaves its holes
    assert s["warp_psnr_seen"] < 99  # the point splat is not the renderer
    assert s["psnr_seen_valid"] >= 99 and s["psnr_seen_reference"] >= 99
    assert 15 < s["oracle_warp_psnr_seen"] < 99  # even a memory of ground-truth frames only resamples them
    # Seen surfaces are a subset of valid warps; the reference view's of all earlier frames'.
    assert s["seen_reference_frac"] <= s["seen_frac"] < s["seen_valid_frac"]
    on_disk = json.loads((tmp_path / "fidelity.json").read_text())
    assert len(on_disk["curves"]["model"]["psnr_seen"]) == 12
    assert (tmp_path / "fidelity.png").stat().st_size > 1000


class FloaterDouble(OracleDouble):
    """Copies the warp where it is valid; fills holes with black at half the true depth (floaters)."""

    def step(self, warp_rgb, warp_depth, warp_mask, c2w, generator=None):
        _, depth = super().step(warp_rgb, warp_depth, warp_mask, c2w)
        m = warp_mask[..., None]
        return torch.where(m, warp_rgb, torch.zeros_like(warp_rgb)), torch.where(warp_mask, warp_depth, 0.5 * depth)


@pytest.mark.timeout(120)
def test_memory_update_holes_keeps_floaters_out_of_the_loop(tmp_path):
    seeds, kinds = (HELDOUT_SEED_START + 1,), ("loop",)
    loops = {}
    for rule in ("holes", "all"):
        cfg = FidelityConfig(seeds=seeds, kinds=kinds, steps=24, out=str(tmp_path / rule), memory_update=rule)
        loops[rule] = evaluate_fidelity(cfg, model=FloaterDouble(seeds, kinds, 128))["summary"]["loop_closure_psnr"]
    # Fused everywhere, the floaters end up in front of the start view; the anchor keeps them out.
    assert loops["holes"] > loops["all"] + 3, loops
    with pytest.raises(ValueError, match="memory_update"):
        FidelityConfig(seeds=seeds, memory_update="never")


def test_rejects_training_seeds():
    with pytest.raises(ValueError, match="held-out"):
        FidelityConfig(seeds=(3,))


def test_cli_memory_update_choices_are_the_memory_rules():
    import argparse

    from worldenv.eval.cli import add_arguments
    from worldenv.memory import MEMORY_UPDATES

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    (action,) = [a for a in parser._actions if a.dest == "memory_update"]
    assert tuple(action.choices) == MEMORY_UPDATES
