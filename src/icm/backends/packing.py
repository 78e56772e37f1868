"""Packing a divide-and-conquer subtree of leave-one-out prompts into one forward pass.

The scorer (`transformers.py`) walks the `loo_orders` tree over a KV cache; on a GPU it hands a
whole subtree to `Packed`, whose segments share the cache and see only their own ancestors."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def default_pack(device: torch.device) -> int:
    """Tokens one packed forward pass may hold (0: no packing). On a GPU, packing a subtree of the
    divide and conquer into one pass keeps the chip busy; on a CPU small passes already run
    near its speed, and a CPU keeps what it measured best."""
    return 4096 if device.type == "cuda" else 0


class Sizes:
    """Tokens a packed leave-one-out subtree holds (its pending tokens aside), memoised."""

    def __init__(self, demo: Sequence[list[int]], query: Sequence[list[int]]) -> None:
        self.query = [len(q) for q in query]
        self.before = np.concatenate([[0], np.cumsum([len(d) for d in demo])])
        self.memo: dict[tuple[int, int], int] = {}

    def __call__(self, lo: int, hi: int) -> int:
        if hi - lo == 1:
            return self.query[lo]
        if (lo, hi) not in self.memo:
            mid = (lo + hi) // 2
            demos = int(self.before[hi] - self.before[lo])  # each half's demos, for the other
            self.memo[lo, hi] = demos + self(lo, mid) + self(mid, hi)
        return self.memo[lo, hi]


class Packed:
    """Segments of token ids that form a tree over a KV cache, packed into one sequence.

    A segment extends its parent's tokens (or, with parent -1, the cache itself); a leaf segment
    ends a scored prompt. Segments are added parents first, so in the packed sequence a token's
    ancestors always come before it: a token may see the cache, its ancestors' tokens and the
    earlier tokens of its own segment, which is exactly the prompt it belongs to, and sits at the
    position it has in that prompt. One forward pass then scores every leaf."""

    def __init__(self, root: list[int]) -> None:
        self.segments: list[list[int]] = []
        self.parent: list[int] = []
        self.leaf: list[int] = []
        if root:
            self.add(root, -1)

    def add(self, tokens: list[int], parent: int, leaf: int = -1) -> int:
        self.segments.append(tokens)
        self.parent.append(parent)
        self.leaf.append(leaf)
        return len(self.segments) - 1

    def loo(self, lo: int, hi: int, parent: int, demo, query) -> None:
        """The `loo_orders` tree of items lo..hi-1 under segment `parent`."""
        if hi - lo == 1:
            self.add(query[lo], parent, lo)
            return
        mid = (lo + hi) // 2
        for (a, b), (c, d) in (((lo, mid), (mid, hi)), ((mid, hi), (lo, mid))):
            ext = self.add([t for j in range(c, d) for t in demo[j]], parent)
            self.loo(a, b, ext, demo, query)

    def layout(self) -> tuple[list[int], list[int], list[int]]:
        """The packed ids, each segment's parent, and where each segment starts."""
        first = np.concatenate([[0], np.cumsum([len(t) for t in self.segments])[:-1]])
        return [t for seg in self.segments for t in seg], self.parent, [int(x) for x in first]

    def segment_of(self) -> list[int]:
        return [s for s, seg in enumerate(self.segments) for _ in seg]

    def leaf_positions(self) -> dict[int, int]:
        """Each leaf's index and the packed position of its last token."""
        _, _, first = self.layout()
        return {
            leaf: first[s] + len(self.segments[s]) - 1
            for s, leaf in enumerate(self.leaf)
            if leaf >= 0
        }

    def inputs(
        self, past: int, device: torch.device, dtype: torch.dtype
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The packed ids, the attention mask over the `past` cached tokens and the packed
        ones (0 where a token may look, the dtype's minimum elsewhere), and each token's
        position: the one it has in its own prompt, after its ancestors only."""
        ids, parent, _ = self.layout()
        q = len(ids)
        seg = torch.tensor(self.segment_of(), device=device)
        # Which segment each segment may see: itself and its ancestors (a tree, parents first).
        sees = torch.eye(len(parent), dtype=torch.bool, device=device)
        for s, p in enumerate(parent):
            if p >= 0:
                sees[s] |= sees[p]
        rows = torch.arange(q, device=device)
        visible = sees[seg[:, None], seg[None, :]] & (rows[None, :] <= rows[:, None])
        visible = torch.cat([torch.ones(q, past, dtype=torch.bool, device=device), visible], 1)
        mask = torch.zeros(visible.shape, dtype=dtype, device=device)
        mask.masked_fill_(~visible, torch.finfo(dtype).min)
        depth = [0] * len(parent)
        for s, p in enumerate(parent):
            depth[s] = 0 if p < 0 else depth[p] + len(self.segments[p])
        positions = [
            past + depth[s] + k
            for s, tokens in enumerate(self.segments)
            for k in range(len(tokens))
        ]
        as_ids = torch.tensor(ids, device=device)
        return as_ids, mask, torch.tensor(positions, device=device)
