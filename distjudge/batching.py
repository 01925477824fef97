"""How the judge cuts prompts into forward passes: shared prefixes once, then length buckets.

Judging items against one task prompt repeats the same tokens: every prompt starts with the
chat header and the instructions, and items that share a source (SummEval's 16 summaries of one
article, MT-Bench's answer pairs to one question) share much more. :func:`plan_batches` runs
each shared prefix once, keeps its keys and values, and feeds only the rest of each prompt:

1. sort the prompts lexicographically; the longest common prefix (LCP) of any run of them is
   the minimum of their neighbours' LCPs;
2. every prompt shares the global prefix (all prompts' LCP). Within the LCP-interval tree, a
   run of n prompts sharing P tokens becomes its own group when that saves more tokens,
   (n - 1) · (P - global), than its extra forward passes cost; else its prompts stay in the pool;
3. the pool and each group are cut into length buckets (:func:`length_batches`) over the
   tokens left after their prefix.

A prefix never covers a whole prompt: the answer position's token always runs in the batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

MIN_PREFIX = 8  # shorter shared prefixes are not worth a forward pass of their own


@dataclass(frozen=True)
class Batch:
    """Rows judged in one forward pass after their shared ``prefix_length`` tokens."""

    rows: list[int]
    prefix_length: int = 0


def length_batches(lengths: Sequence[int], max_batch: int,
                   overhead_tokens: int = 64) -> list[list[int]]:
    """Item indices grouped into batches of at most ``max_batch`` that pad the least.

    Sorted by length, the items are cut into consecutive runs minimizing
    Σ (run size · longest in run) + ``overhead_tokens`` · number of runs: the tokens a left-padded
    batch computes, plus a forward pass's fixed cost counted in tokens (dynamic programming,
    O(N · max_batch)). Equal lengths share a batch; a long tail gets small batches instead of
    padding 15 short prompts to its length.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    size = [lengths[i] for i in order]
    cost = [0.0] + [float("inf")] * len(order)
    start = [0] * (len(order) + 1)
    for end in range(1, len(order) + 1):
        for begin in range(max(0, end - max_batch), end):
            c = cost[begin] + (end - begin) * size[end - 1] + overhead_tokens
            if c < cost[end]:
                cost[end], start[end] = c, begin
    batches, end = [], len(order)
    while end:
        batches.append(order[start[end]:end])
        end = start[end]
    return batches[::-1]


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def prefix_groups(prompts: Sequence[Sequence[int]],
                  overhead_tokens: int = 64) -> tuple[int, list[tuple[int, list[int]]]]:
    """``(global prefix length, [(group prefix length, rows), ...])``; rows in no group share
    only the global prefix. Every prefix leaves at least one token of each of its prompts."""
    if len(prompts) < 2:
        return 0, []
    order = sorted(range(len(prompts)), key=lambda i: prompts[i])
    lcp = [common_prefix_length(prompts[a], prompts[b]) for a, b in zip(order, order[1:])]
    shortest = [len(prompts[i]) for i in order]

    def shared(lo: int, hi: int) -> int:  # LCP of sorted prompts lo..hi-1, one token left each
        return min(min(lcp[lo:hi - 1]), min(shortest[lo:hi]) - 1)

    base = shared(0, len(order))
    if base < MIN_PREFIX:
        base = 0

    def children(lo: int, hi: int, prefix: int) -> list[tuple[int, int]]:
        cuts = [j + 1 for j in range(lo, hi - 1) if lcp[j] <= prefix]
        return list(zip([lo, *cuts], [*cuts, hi]))

    # Bottom-up over the LCP-interval tree (iterative: its depth can reach the prompt length):
    # best[(lo, hi)] = (tokens saved, groups) of the best choice inside sorted prompts lo..hi-1.
    best: dict[tuple[int, int], tuple[int, list[tuple[int, list[int]]]]] = {}
    stack: list[tuple[int, int, bool]] = [(0, len(order), False)]
    while stack:
        lo, hi, expanded = stack.pop()
        prefix = shared(lo, hi) if hi - lo > 1 else 0
        kids = children(lo, hi, prefix) if hi - lo > 1 else []
        kids = [k for k in kids if k[1] - k[0] > 1] if len(kids) > 1 else []
        if not expanded and kids:
            stack.append((lo, hi, True))
            stack.extend((k_lo, k_hi, False) for k_lo, k_hi in kids)
            continue
        inner = [best.pop(k) for k in kids]
        inner_saving = sum(saving for saving, _ in inner)
        own = (hi - lo - 1) * (prefix - base) - 2 * overhead_tokens
        if own > 0 and own > inner_saving:
            best[(lo, hi)] = (own, [(prefix, [order[k] for k in range(lo, hi)])])
        else:
            best[(lo, hi)] = (inner_saving, [g for _, groups in inner for g in groups])
    return base, best[(0, len(order))][1]


def plan_batches(prompts: Sequence[Sequence[int]], max_batch: int, overhead_tokens: int = 64,
                 share_prefix: bool = True) -> list[Batch]:
    """The forward passes that judge ``prompts``: shared prefixes once, then length buckets."""
    if not share_prefix:
        return [Batch(rows) for rows in length_batches([len(p) for p in prompts], max_batch,
                                                       overhead_tokens)]
    base, groups = prefix_groups(prompts, overhead_tokens)
    grouped = {row for _, rows in groups for row in rows}
    pool = [i for i in range(len(prompts)) if i not in grouped]
    batches = []
    for prefix, rows in [(base, pool), *groups]:
        for cut in length_batches([len(prompts[i]) - prefix for i in rows], max_batch,
                                  overhead_tokens):
            batches.append(Batch([rows[k] for k in cut], prefix))
    return batches
