"""The spatiotemporal KV cache: reference sinks, a ring of recent frames, the current frame.

For B streams and every DiT layer the cache preallocates keys and values for
``S = R + W + 1`` frame slots of N tokens each, in attention order:

```
slot:      0 .. R-1       R .. R+W-1                     R+W
content:   references     history ring (physical order)  current frame
position:  r              R + W - age                    R + W
```

- **References (attention sinks).** Written by :meth:`KVCache.reset_streams`
  and never evicted, so a stream can always look back at its reference view
  (InSpatio-World's spatiotemporal anchor; Endless World's attention sink).
- **History ring.** The last W committed frames. A frame's physical slot never
  moves; its *age* grows as newer frames arrive, and its temporal RoPE
  position is ``R + W - age``. Keys are stored unrotated in ``k_ring_raw``
  and rotated (spatial and temporal RoPE) into the attention buffer ``k``
  once per commit, for all layers in one op, with a table chosen by the
  ring's phase. So positions never grow and the cache's memory is constant
  over an unbounded rollout.
- **Current frame.** Every streaming forward writes the frame's keys
  (rotated at position R + W) and values to the last slot and its unrotated
  keys to ``k_cur_raw``; :meth:`KVCache.commit` copies the current slot into
  the ring.

All streams share the ring's phase (every step advances every stream by one
frame), so rotation tables broadcast over B. Streams may be at different
points of their episodes: ``hist_len[b]`` counts the valid history frames of
stream b, and invalid slots are masked out of attention. Tensors are never
reallocated after construction; :meth:`snapshot` / :meth:`restore` copy them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["KVCache", "CacheState"]


@dataclass
class CacheState:
    """A copy of a :class:`KVCache`'s contents (see :meth:`KVCache.snapshot`).

    Attributes:
        k: ``(L, B, nh, S*N, hd)`` attention keys.
        v: ``(L, B, nh, S*N, hd)`` attention values.
        k_ring_raw: ``(L, B, nh, W*N, hd)`` history keys before RoPE.
        k_cur_raw: ``(L, B, nh, N, hd)`` current-frame keys before RoPE.
        hist_len: ``(B,)`` valid history frames per stream.
        newest: Physical ring slot of the newest history frame.
    """

    k: Tensor
    v: Tensor
    k_ring_raw: Tensor
    k_cur_raw: Tensor
    hist_len: Tensor
    newest: int


class KVCache:
    """Preallocated keys and values of every DiT layer for B streams.

    Args:
        layers: L, the DiT's blocks.
        batch: B streams.
        heads: nh attention heads.
        head_dim: hd.
        tokens: N tokens per frame.
        num_ref: R reference (sink) slots.
        window: W history slots.
        slot_table: ``(R + W + 1, N, hd/2, 2)`` key rotation (cos, sin; spatial and temporal) of a
            frame at each slot position, from :meth:`DiT.key_table` at positions ``0 .. R + W``.
        device: Where the tensors live.
        dtype: Storage dtype of keys and values (float32 on CPU, bfloat16 under CUDA autocast).
    """

    def __init__(
        self,
        *,
        layers: int,
        batch: int,
        heads: int,
        head_dim: int,
        tokens: int,
        num_ref: int,
        window: int,
        slot_table: Tensor,
        device: torch.device | str,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.layers, self.batch, self.heads, self.head_dim = layers, batch, heads, head_dim
        self.tokens, self.num_ref, self.window = tokens, num_ref, window
        self.slots = num_ref + window + 1
        N, W, R = tokens, window, num_ref
        shape = (layers, batch, heads, self.slots * N, head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.k_ring_raw = torch.zeros(layers, batch, heads, W * N, head_dim, device=device, dtype=dtype)
        self.k_cur_raw = torch.zeros(layers, batch, heads, N, head_dim, device=device, dtype=dtype)
        self.hist_len = torch.zeros(batch, dtype=torch.long, device=device)
        self._hist_len_host = [0] * batch  # mirrors hist_len without device syncs
        self.newest = W - 1  # the next commit writes physical slot 0

        # ring_table[n]: temporal rotation of every ring token when physical slot n holds the newest frame.
        slot_table = slot_table.to(device=device, dtype=torch.float32)
        phys = torch.arange(W, device=device)
        tables = []
        for newest in range(W):
            age = (newest - phys) % W + 1  # (W,) 1 = newest
            pos = R + W - age  # (W,) slot position of each physical slot
            tables.append(slot_table[pos].flatten(0, 1))  # (W*N, hd/2, 2)
        self._ring_table = torch.stack(tables)  # (W, W*N, hd/2, 2)
        self._phys = phys
        self._mask: Tensor | None = None
        self._full = False
        self._mask_dirty = True

    # -- views used by the DiT

    @property
    def ring_start(self) -> int:
        """Token offset of the ring in the attention buffers."""
        return self.num_ref * self.tokens

    @property
    def current_start(self) -> int:
        """Token offset of the current slot in the attention buffers."""
        return (self.num_ref + self.window) * self.tokens

    def layer(self, layer: int) -> tuple[Tensor, Tensor]:
        """Attention keys and values of one layer, each ``(B, nh, S*N, hd)`` (views)."""
        return self.k[layer], self.v[layer]

    def write_current(self, layer: int, *, k_raw: Tensor, k: Tensor, v: Tensor) -> None:
        """Write the current frame's keys and values of one layer.

        Args:
            layer: Layer index.
            k_raw: ``(B, nh, N, hd)`` keys before RoPE (kept for :meth:`commit`).
            k: ``(B, nh, N, hd)`` keys rotated at the current slot position.
            v: ``(B, nh, N, hd)`` values.
        """
        c = self.current_start
        self.k_cur_raw[layer].copy_(k_raw)
        self.k[layer, :, :, c:].copy_(k)
        self.v[layer, :, :, c:].copy_(v)

    def attn_mask(self, dense: bool = False) -> Tensor | None:
        """``(B, 1, 1, S*N)`` bool key mask (True = attend).

        Args:
            dense: Return a tensor even when every slot of every stream is
                valid (a compiled forward then keeps one graph); otherwise None
                in that case, so attention runs unmasked.
        """
        if self._mask_dirty:
            self._mask_dirty = False
            self._mask = None
            self._full = min(self._hist_len_host) >= self.window
        if self._full and not dense:
            return None
        if self._mask is None:
            age = (self.newest - self._phys) % self.window + 1  # (W,)
            ring_ok = age[None, :] <= self.hist_len[:, None]  # (B, W)
            ones = torch.ones(self.batch, self.num_ref, dtype=torch.bool, device=ring_ok.device)
            slot_ok = torch.cat([ones, ring_ok, ones[:, :1]], dim=1)  # (B, S)
            self._mask = slot_ok.repeat_interleave(self.tokens, 1)[:, None, None, :]  # (B, 1, 1, S*N)
        return self._mask

    # -- state changes

    def commit(self) -> None:
        """Make the current frame the newest history frame of every stream and advance the ring."""
        W, N = self.window, self.tokens
        slot = (self.newest + 1) % W
        r0 = self.ring_start + slot * N
        self.k_ring_raw[:, :, :, slot * N : (slot + 1) * N].copy_(self.k_cur_raw)
        self.v[:, :, :, r0 : r0 + N].copy_(self.v[:, :, :, self.current_start :])
        self.newest = slot
        self.hist_len.clamp_(max=W - 1).add_(1)
        self._hist_len_host = [min(h + 1, W) for h in self._hist_len_host]
        self._mask_dirty = True
        self._rotate_ring()

    def _rotate_ring(self) -> None:
        """Rotate all stored history keys to their slot positions (all layers, one complex multiply)."""
        table = torch.view_as_complex(self._ring_table[self.newest])  # (W*N, hd/2)
        raw = torch.view_as_complex(self.k_ring_raw.float().unflatten(-1, (-1, 2)))  # (L, B, nh, W*N, hd/2)
        rotated = torch.view_as_real(raw * table).flatten(-2)  # (L, B, nh, W*N, hd)
        self.k[:, :, :, self.ring_start : self.current_start].copy_(rotated)

    def reset_streams(self, streams: Tensor, ref_k: list[Tensor], ref_v: list[Tensor]) -> None:
        """Start new episodes on some streams: write their references, empty their history.

        Args:
            streams: ``(M,)`` long indices of the streams to reset.
            ref_k: Per layer ``(M, nh, R*N, hd)`` reference keys rotated at their slot positions.
            ref_v: Per layer ``(M, nh, R*N, hd)`` reference values.
        """
        rs = self.ring_start
        for layer, (k, v) in enumerate(zip(ref_k, ref_v, strict=True)):
            self.k[layer, :, :, :rs].index_copy_(0, streams, k.to(self.k.dtype))
            self.v[layer, :, :, :rs].index_copy_(0, streams, v.to(self.v.dtype))
        # Zero the streams' history and current slots so masked slots never hold stale or non-finite values.
        self.k[:, streams, :, rs:] = 0
        self.v[:, streams, :, rs:] = 0
        self.k_ring_raw[:, streams] = 0
        self.k_cur_raw[:, streams] = 0
        self.hist_len[streams] = 0
        for b in streams.tolist():
            self._hist_len_host[b] = 0
        if max(self._hist_len_host) == 0:
            # Every stream restarts: restart the ring's phase too, so that a reset
            # cache computes bit-identically to a new one.
            self.newest = self.window - 1
            self._rotate_ring()
        self._mask_dirty = True

    def snapshot(self) -> CacheState:
        """A deep copy of the contents."""
        return CacheState(
            k=self.k.clone(),
            v=self.v.clone(),
            k_ring_raw=self.k_ring_raw.clone(),
            k_cur_raw=self.k_cur_raw.clone(),
            hist_len=self.hist_len.clone(),
            newest=self.newest,
        )

    def restore(self, state: CacheState) -> None:
        """Copy ``state`` back into the preallocated tensors (no reallocation).

        Raises:
            ValueError: If ``state`` has a different shape (another config or batch size).
        """
        for name in ("k", "v", "k_ring_raw", "k_cur_raw", "hist_len"):
            mine, theirs = getattr(self, name), getattr(state, name)
            if mine.shape != theirs.shape:
                raise ValueError(
                    f"Expect the snapshot's `{name}` to have shape {tuple(mine.shape)}, actually: {tuple(theirs.shape)}"
                )
            mine.copy_(theirs)
        self.newest = int(state.newest)
        self._hist_len_host = [int(h) for h in self.hist_len.tolist()]
        self._mask_dirty = True

    def tensors(self) -> dict[str, Tensor]:
        """The preallocated tensors by name (for memory checks)."""
        return {
            "k": self.k,
            "v": self.v,
            "k_ring_raw": self.k_ring_raw,
            "k_cur_raw": self.k_cur_raw,
            "hist_len": self.hist_len,
        }

    def nbytes(self) -> int:
        """Bytes held by the cache's tensors."""
        return sum(t.numel() * t.element_size() for t in self.tensors().values())
