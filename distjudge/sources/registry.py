"""Named sources: raw multi-annotator datasets, each converted to the common item format.

A source is registered by name with its task, license, a one-paragraph description and a loader
``loader(root: Path, **options) -> Iterable[dict]`` (one small converter per raw format, in the
sibling modules). Items look like::

    {"id": str, <task fields>, "label_counts": {label: count, ...}, "group": str,
     "source": <source name>, ...extra fields}

``group`` names the source text an item is about (article, dialogue, premise, question...):
:func:`distjudge.sources.split_items` never puts one group on both sides of a split.

**Overlaps.** Some sources share items: every ChaosNLI-SNLI item is an SNLI dev item and every
VariErr-NLI item a ChaosNLI-MNLI item. Those sources use the upstream pair id as item id, so
``load_source(name, exclude=[...])`` drops every item whose id occurs in an excluded source, and
:func:`mix` (several sources as one training set) keeps each shared id once and drops the ids of
its ``exclude`` sources. The source ``snli-nochaos`` is SNLI dev+test without the ChaosNLI-SNLI
pair ids: the SNLI training set for a ChaosNLI evaluation.

The datasets folder is ``root`` when given, else ``$DISTJUDGE_DATA``, else ``../shared/datasets``
from the current directory, else ``../shared/datasets`` from the repository root.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from distjudge.data import DataError

ENV_VAR = "DISTJUDGE_DATA"
DEFAULT_ROOT = Path("../shared/datasets")


@dataclass(frozen=True)
class Source:
    """A named dataset: its task, license, description and loader (with fixed options)."""

    name: str
    task: str
    license: str
    description: str
    loader: Callable[..., Iterable[dict]] = field(repr=False)
    options: dict = field(default_factory=dict)
    overlaps: tuple[str, ...] = ()  # sources sharing item ids with this one

    def load(self, root: str | Path | None = None, **options) -> list[dict]:
        """All items (fresh dicts) with ``source`` set; ids checked unique."""
        items = []
        seen: set[str] = set()
        for item in self.loader(data_root(root), **{**self.options, **options}):
            if item["id"] in seen:
                raise DataError(f"source {self.name!r}: duplicate item id {item['id']!r}")
            seen.add(item["id"])
            # fresh dicts: loaders may hand out cached items
            items.append({**item, "label_counts": dict(item["label_counts"]), "source": self.name})
        if not items:
            raise DataError(f"source {self.name!r}: no items")
        return items


SOURCES: dict[str, Source] = {}


def register(name: str, task: str, license: str, description: str, loader: Callable, /,
             overlaps: tuple[str, ...] = (), **options) -> Source:
    """Add a source to the registry (a name may be registered once)."""
    if name in SOURCES:
        raise ValueError(f"source {name!r} registered twice")
    source = Source(name, task, license, " ".join(description.split()), loader, options,
                    tuple(overlaps))
    SOURCES[name] = source
    return source


def get_source(name: str) -> Source:
    try:
        return SOURCES[name]
    except KeyError:
        examples = ", ".join(sorted(SOURCES)[:4])
        raise DataError(
            f"unknown source {name!r} (see `distjudge data list`; e.g. {examples})"
        ) from None


def list_sources() -> list[Source]:
    """Every registered source, sorted by name (so families sit together)."""
    return [SOURCES[name] for name in sorted(SOURCES)]


def data_root(root: str | Path | None = None) -> Path:
    """The datasets folder: ``root``, ``$DISTJUDGE_DATA``, cwd-relative or repo-relative default."""
    if root is not None:
        return Path(root)
    if os.environ.get(ENV_VAR):
        return Path(os.environ[ENV_VAR])
    here = Path.cwd() / DEFAULT_ROOT
    if here.is_dir():
        return here.resolve()
    repo = Path(__file__).resolve().parents[2] / DEFAULT_ROOT
    return repo.resolve() if repo.is_dir() else here


def source_ids(name: str, root: str | Path | None = None) -> set[str]:
    return {item["id"] for item in get_source(name).load(root)}


def load_source(name: str, root: str | Path | None = None, *, exclude: Iterable[str] = (),
                **options) -> list[dict]:
    """Items of source ``name``, minus any whose id occurs in the ``exclude`` sources.

    ``load_source("snli-dev", exclude=["chaosnli-snli"])`` is the SNLI dev training set for a
    ChaosNLI-SNLI evaluation (1,514 pair ids dropped).
    """
    items = get_source(name).load(root, **options)
    drop: set[str] = set()
    for other in exclude:
        drop |= source_ids(other, root)
    return [item for item in items if item["id"] not in drop] if drop else items


def mix(names: Iterable[str], root: str | Path | None = None, *,
        exclude: Iterable[str] = ()) -> list[dict]:
    """Several sources as one item list: a shared id is kept once (first source wins), and ids
    of the ``exclude`` sources (the evaluation sets) are dropped.

    All sources of a mix must have the same task.
    """
    names = list(names)
    tasks = {get_source(name).task for name in names}
    if len(tasks) > 1:
        raise DataError(f"mix: sources have different tasks ({', '.join(sorted(tasks))})")
    seen: set[str] = set()
    for other in exclude:
        seen |= source_ids(other, root)
    out = []
    for name in names:
        for item in load_source(name, root):
            if item["id"] not in seen:
                seen.add(item["id"])
                out.append(item)
    return out
