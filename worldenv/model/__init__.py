"""The world model: a tiny RGB-D codec, a causal DiT with camera encodings, a spatiotemporal KV cache
and a few-step flow-matching sampler, streamed over B episodes.

```python
from worldenv.model import WorldModel
model = WorldModel.from_pretrained("default")
model.reset(rgb, depth, c2w, K)                       # (B, H, W, 3), (B, H, W), (B, 4, 4), (B, 3, 3)
rgb, depth = model.step(warp_rgb, warp_depth, warp_mask, c2w_next)
```
"""

from __future__ import annotations

from worldenv.model.cache import CacheState, KVCache
from worldenv.model.camera import Camera
from worldenv.model.checkpoint import (
    check_state_dict,
    load_checkpoint,
    resolve_checkpoint,
    save_checkpoint,
)
from worldenv.model.codec import Codec, CodecConfig, frames_to_model, model_to_frames
from worldenv.model.dit import ClipLayout, DiT, DiTConfig
from worldenv.model.sampler import (
    FlowSampler,
    SamplerConfig,
    token_coverage,
    token_start_times,
)
from worldenv.model.world_model import ModelConfig, WorldModel, WorldModelState

__all__ = [
    "WorldModel",
    "ModelConfig",
    "WorldModelState",
    "Codec",
    "CodecConfig",
    "DiT",
    "DiTConfig",
    "Camera",
    "ClipLayout",
    "KVCache",
    "CacheState",
    "FlowSampler",
    "SamplerConfig",
    "token_coverage",
    "token_start_times",
    "frames_to_model",
    "model_to_frames",
    "save_checkpoint",
    "load_checkpoint",
    "resolve_checkpoint",
    "check_state_dict",
]
