"""Batch planning: length buckets (optimal against brute force) and shared prefixes run once."""

from __future__ import annotations

import itertools
import random

from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from distjudge.batching import common_prefix_length, length_batches, plan_batches, prefix_groups


def _padded_cost(lengths, batches, overhead):
    return sum(len(b) * max(lengths[i] for i in b) + overhead for b in batches)


@hypothesis_settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 60), min_size=1, max_size=9), st.integers(1, 4),
       st.sampled_from([0, 8, 64]))
def test_length_batches_cover_every_item_once_at_least_padding(lengths, max_batch, overhead):
    batches = length_batches(lengths, max_batch, overhead)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    assert all(1 <= len(b) <= max_batch for b in batches)
    # optimal among all cuts of the length-sorted order into runs of <= max_batch
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    best = min(
        _padded_cost(lengths, [order[a:b] for a, b in zip((0, *cuts), (*cuts, len(order)))],
                     overhead)
        for r in range(len(order))
        for cuts in itertools.combinations(range(1, len(order)), r)
        if all(b - a <= max_batch for a, b in zip((0, *cuts), (*cuts, len(order))))
    )
    assert _padded_cost(lengths, batches, overhead) == best


def test_length_batches_fill_batches_of_equal_lengths_and_isolate_a_long_tail():
    assert sorted(len(b) for b in length_batches([100] * 40, 16)) == [8, 16, 16]
    batches = length_batches([100] * 15 + [500], 16)
    assert [len(b) for b in batches] == [15, 1] and batches[1] == [15]


def _sources_and_items(seed: int = 0) -> list[list[int]]:
    """A fixed 90-token header; 3 sources of 200 tokens, 14 items each; 20 items of their own."""
    rng = random.Random(seed)
    header = list(range(100, 190))
    sources = [[rng.randrange(1000) for _ in range(200)] for _ in range(3)]
    prompts = [header + source + [rng.randrange(1000) for _ in range(rng.randrange(20, 60))]
               for source in sources for _ in range(14)]
    prompts += [header + [rng.randrange(1000) for _ in range(rng.randrange(20, 200))]
                for _ in range(20)]
    rng.shuffle(prompts)
    return prompts


def test_items_sharing_a_source_form_one_group_each_and_the_rest_share_the_header():
    prompts = _sources_and_items()
    base, groups = prefix_groups(prompts)
    assert base == 90
    assert sorted((prefix, len(rows)) for prefix, rows in groups) == [(290, 14)] * 3
    for prefix, rows in groups:
        assert len({tuple(prompts[i][:prefix]) for i in rows}) == 1


def test_a_few_short_shared_prefixes_are_not_worth_their_own_passes():
    header = list(range(50))
    prompts = [header + [7, 8, i, i + 1] for i in range(10)] + [header + [9, 9, 9, 1], header]
    base, groups = prefix_groups(prompts)
    assert base == 49 and groups == []  # the bare header keeps one token for its answer


@hypothesis_settings(max_examples=80, deadline=None)
@given(st.lists(st.lists(st.integers(0, 2), min_size=1, max_size=12), min_size=1, max_size=12),
       st.integers(0, 20), st.integers(1, 5), st.sampled_from([0, 2, 64]), st.booleans())
def test_plans_cover_every_row_once_and_prefixes_are_shared_and_leave_a_token(
        tails, head, max_batch, overhead, share):
    prompts = [[5] * head + tail for tail in tails]
    batches = plan_batches(prompts, max_batch, overhead, share_prefix=share)
    assert sorted(r for b in batches for r in b.rows) == list(range(len(prompts)))
    for batch in batches:
        assert 1 <= len(batch.rows) <= max_batch
        assert all(batch.prefix_length < len(prompts[r]) for r in batch.rows)
        first = prompts[batch.rows[0]]
        assert all(common_prefix_length(first, prompts[r]) >= batch.prefix_length
                   for r in batch.rows)
        if not share:
            assert batch.prefix_length == 0
