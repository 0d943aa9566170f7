"""Exact top-k over long rows of scores, in two cheap passes (kNN search, issue 16).

torch.topk over a row of hundreds of thousands of scores is far slower than a reduction over it. So
``grouped_top_k`` takes the maxima of strided groups of a row, keeps the groups of the k highest
maxima (which hold the row's k best: exact), and takes the top k of their members alone; the
maxima's own top k is found the same way while their row is long enough. ``masked_top_k`` is the
plain definition it is tested against and falls back to.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

# Slots per group in grouped_top_k: group g of a row of L slots holds the slots g, g + L/16, g + 2L/16, ...
# Strided rather than consecutive, so that the group maxima reduce the outer of two dims, whose reads
# are contiguous, instead of 16 adjacent scores per output.
TOP_K_GROUP = 16


def masked_top_k(scores: Tensor, allowed: Optional[Tensor], k: int) -> tuple[Tensor, Tensor]:
    """The top k scores over the last dim where ``allowed`` (broadcastable to scores; None: everywhere)
    is True, and their indices; disallowed ones score -inf, as do the places past a row shorter than
    k (index 0)."""
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    best, index = scores.topk(min(k, scores.shape[-1]), dim=-1)
    missing = k - best.shape[-1]
    if missing:
        best, index = F.pad(best, (0, missing), value=float("-inf")), F.pad(index, (0, missing))
    return best, index


def grouped_top_k(scores: Tensor, allowed: Optional[Tensor], k: int,
                  group: int = TOP_K_GROUP) -> tuple[Tensor, Tensor]:
    """``masked_top_k(scores, allowed, k)`` (ties may be broken differently) in two cheap passes instead
    of one slow one (torch.topk over long rows is far slower than a reduction). May overwrite
    ``scores``: its disallowed entries are set to -inf in place, sparing a copy of them; so
    ``allowed`` must broadcast to the shape of ``scores`` (not widen it). None: every score allowed
    (scores masked already, or none to mask), and no pass over them to mask.

    A row of L slots is cut into L / group groups of ``group`` slots, strided: group g holds the
    slots g, g + L/group, g + 2L/group, ... Take each group's maximum, keep the k best groups by
    maximum (by the same two passes over the maxima, where their row is long enough), then the top k
    of their scores. Exact whatever ``allowed`` is: with the disallowed scores at -inf, the k best
    allowed scores lie in at most k groups, each with a maximum at least the k-th best, so the k best
    groups by maximum hold them (up to ties: a group kept in place of one with an equal maximum holds
    scores as high). Rows too short to gain, or not a whole number of groups, go to masked_top_k.
    """
    length = scores.shape[-1]
    if not grouping_pays(length, k, group):
        return masked_top_k(scores, allowed, k)
    groups = length // group  # also the stride between the slots of a group (>= 4k: grouping_pays)
    if allowed is not None:  # one group spans the whole row: mask every score, not groups
        scores.masked_fill_(~allowed, float("-inf"))
    maxima = scores.unflatten(-1, (group, groups)).amax(dim=-2)  # (..., groups): an outer reduction
    # the k best groups by maximum, found the same way where the maxima's row is long enough: a
    # 262,144-slot row has 16,384 maxima, and torch.topk over them took ~20 ms of the 56 ms of
    # kernels of an evaluation segment at batch 50 (bench/RESULTS.md, 2026-11-30, sixth session)
    best_groups = grouped_top_k(maxima, None, k, group)[1]
    candidates = (best_groups[..., None] + torch.arange(group, device=scores.device) * groups).flatten(-2)
    best, order = scores.gather(-1, candidates).topk(k, dim=-1)  # k * group >= k candidates: no padding
    return best, candidates.gather(-1, order)


def grouping_pays(length: int, k: int, group: int = TOP_K_GROUP) -> bool:
    """Whether grouped_top_k groups a row of ``length`` scores: a whole number of groups, at least
    4k of them (fewer: torch.topk over the row costs no more than the two passes)."""
    groups = length // group
    # group > 1: a group of one would leave the maxima's row as long as the scores' (no end to grouping it)
    return group > 1 and groups > 0 and length % group == 0 and groups >= 4 * k
