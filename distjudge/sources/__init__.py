"""Real multi-annotator datasets by name: registry, converters, splits, subsampling, statistics.

>>> from distjudge.sources import load_source, split_items, source_stats
>>> items = load_source("chaosnli-snli")                      # common item format
>>> train = load_source("snli", exclude=["chaosnli-snli"])    # shared pair ids dropped
>>> train, test = split_items(items, test=0.2, seed=0)         # group-aware, deterministic

See :mod:`distjudge.sources.registry` for the item format and the overlap rules, and
``distjudge data list`` for the sources.
"""

from distjudge.sources import fed, nli, pairwise, ratings, safety, text  # noqa: F401 - register
from distjudge.sources.pairwise import both_orders, swap_pair
from distjudge.sources.registry import (
    ENV_VAR,
    SOURCES,
    Source,
    data_root,
    get_source,
    list_sources,
    load_source,
    mix,
    register,
)
from distjudge.sources.splits import split_items, subsample_annotations
from distjudge.sources.stats import format_table, source_stats

__all__ = [
    "ENV_VAR",
    "SOURCES",
    "Source",
    "both_orders",
    "data_root",
    "format_table",
    "get_source",
    "list_sources",
    "load_source",
    "mix",
    "register",
    "source_stats",
    "split_items",
    "subsample_annotations",
    "swap_pair",
]
