"""WarpBlend: the warp wins where it is trusted, never in holes, and the fused first conv is exact."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from worldenv.model.blend import WarpBlend


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    decoded = torch.randn(2, 4, 16, 16, generator=g)
    warp = torch.randn(2, 4, 16, 16, generator=g)
    mask = (torch.rand(2, 1, 16, 16, generator=g) > 0.3).float()
    return decoded, warp * mask, mask


def test_initial_blend_trusts_the_warp_where_valid_and_never_in_holes() -> None:
    blend = WarpBlend(4).eval()
    decoded, warp, mask = _inputs()
    with torch.no_grad():
        a = blend.weight(decoded, warp, mask)
        out = blend(decoded, warp, mask)
    assert (a[mask == 0] == 0).all()
    assert (a[mask == 1] > 0.98).all()  # sigmoid(4)
    holes = (mask == 0).expand_as(out)
    assert torch.equal(out[holes], decoded[holes])


def test_weight_equals_the_unshuffled_network() -> None:
    blend = WarpBlend(4).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in blend.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        decoded, warp, mask = _inputs(2)
        x = F.pixel_unshuffle(torch.cat([decoded, warp, mask], 1), 2)
        first = blend.net[0]
        h = F.conv2d(x, first.weight, first.bias, padding=1)
        logits = F.pixel_shuffle(blend.net[1:](h), 2)
        expected = torch.sigmoid(logits) * mask
        torch.testing.assert_close(blend.weight(decoded, warp, mask), expected, atol=1e-5, rtol=1e-5)
