"""Tasks as data: a label set with verbalizers and a prompt template over named item fields.

A task is one YAML file (see ``distjudge/tasks/*.yaml`` for the built-in ones)::

    name: nli
    fields: [premise, hypothesis]          # required item fields
    optional_fields: []                    # fields the template may use when present
    ordinal: false                         # true: labels carry numeric ``value``s
    labels:
      - {name: entailment, verbalizers: [entailment, entails]}
      - ...
    system: null                           # optional system message (else the model's default)
    template: "Premise: {{ premise }} ..."  # Jinja2, rendered as the user message

``extends: <task>`` starts from another task and overrides the keys given. The rendered
messages go through the model's chat template (see :mod:`distjudge.readout`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from functools import cached_property
from importlib import resources
from pathlib import Path

import jinja2
import jinja2.meta as jinja2meta
import yaml


class TaskError(ValueError):
    """A task definition is missing or malformed."""


@dataclass(frozen=True)
class Label:
    """One judgment label: its canonical name, the words that express it, and an ordinal value."""

    name: str
    verbalizers: tuple[str, ...] = ()
    value: float | None = None

    def words(self) -> tuple[str, ...]:
        """The canonical name followed by its synonyms, without duplicates."""
        return tuple(dict.fromkeys((self.name, *self.verbalizers)))


@dataclass(frozen=True)
class Task:
    """A judgment task: label set, item fields and the prompt that asks for one label word."""

    name: str
    fields: tuple[str, ...]
    labels: tuple[Label, ...]
    template: str
    description: str = ""
    optional_fields: tuple[str, ...] = ()
    ordinal: bool = False
    system: str | None = None
    extra: dict = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        names = [label.name for label in self.labels]
        if len(names) < 2:
            raise TaskError(f"task {self.name!r}: needs at least two labels, got {names}")
        if len(set(names)) != len(names):
            raise TaskError(f"task {self.name!r}: duplicate label names in {names}")
        if self.ordinal and any(label.value is None for label in self.labels):
            raise TaskError(f"task {self.name!r}: an ordinal task needs a value on every label")
        try:
            used = jinja2meta.find_undeclared_variables(jinja2.Environment().parse(self.template))
        except jinja2.TemplateSyntaxError as err:
            raise TaskError(f"task {self.name!r}: template syntax error: {err}") from err
        unknown = sorted(used - set(self.fields) - set(self.optional_fields))
        if unknown:
            raise TaskError(f"task {self.name!r}: the template uses {unknown}, which are not in "
                            "fields or optional_fields")

    @property
    def label_names(self) -> list[str]:
        return [label.name for label in self.labels]

    @property
    def values(self) -> list[float] | None:
        return [float(label.value) for label in self.labels] if self.ordinal else None

    @cached_property
    def _compiled(self) -> jinja2.Template:
        env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False)
        return env.from_string(self.template)

    def render(self, item: dict) -> list[dict[str, str]]:
        """Chat messages asking the judge for one label word about ``item``."""
        values = {name: item[name] for name in self.fields}
        values.update({name: item.get(name) or "" for name in self.optional_fields})
        messages = [{"role": "system", "content": self.system}] if self.system else []
        messages.append({"role": "user", "content": self._compiled.render(**values).strip()})
        return messages

    @property
    def swappable(self) -> bool:
        """Whether the task declares how to judge an item in the other order (``swap:``)."""
        return bool(self.extra.get("swap"))

    def swap_spec(self) -> tuple[str, str, str, str]:
        """``(field_a, field_b, label_a, label_b)`` from the task's ``swap:`` key."""
        spec = self.extra.get("swap")
        if not spec:
            raise TaskError(f"task {self.name!r} declares no swap: it has no second order")
        (field_a, field_b), (label_a, label_b) = spec["fields"], spec["labels"]
        return str(field_a), str(field_b), str(label_a), str(label_b)

    def swapped(self, item: dict) -> dict:
        """The item with its two swapped fields exchanged (labels are flipped by the caller)."""
        first, second, _, _ = self.swap_spec()
        return {**item, first: item[second], second: item[first]}

    def swap_permutation(self) -> list[int]:
        """``perm`` with ``probs_swapped[:, perm]`` = the same judgment in the original order."""
        _, _, label_a, label_b = self.swap_spec()
        flip = {label_a: label_b, label_b: label_a}
        return [self.label_names.index(flip.get(name, name)) for name in self.label_names]

    def to_dict(self) -> dict:
        """The plain definition, as it would be written in YAML."""
        out = asdict(self)
        out.update(out.pop("extra"))
        out["labels"] = [
            {k: v for k, v in asdict(label).items() if v not in (None, ())} for label in self.labels
        ]
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}

    def fingerprint(self) -> str:
        """Hash of the definition (labels, fields, prompt): part of every run signature."""
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def save(self, path: str | Path) -> None:
        Path(path).write_text(yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True))


def task_from_dict(data: dict, source: str = "<dict>", folder: Path | None = None) -> Task:
    """Build a task from its YAML mapping (``extends`` resolved first, relative to ``folder``)."""
    if not isinstance(data, dict):
        raise TaskError(f"{source}: a task definition must be a mapping")
    data = dict(data)
    if "extends" in data:
        parent = str(data.pop("extends"))
        if folder is not None and parent.endswith((".yaml", ".yml")):
            parent = str(folder / parent)
        base = load_task(parent).to_dict()
        base.update(data)
        data = base
    missing = [key for key in ("name", "fields", "labels", "template") if key not in data]
    if missing:
        raise TaskError(f"{source}: task definition lacks {', '.join(missing)}")
    for key in ("fields", "optional_fields"):
        value = data.get(key) or []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise TaskError(f"{source}: {key} must be a list of field names")
    labels = []
    for i, raw in enumerate(data.pop("labels")):
        raw = {"name": raw} if isinstance(raw, (str, int, bool)) else raw
        if not isinstance(raw, dict) or "name" not in raw:
            raise TaskError(f"{source}: labels[{i}] needs a name")
        if isinstance(raw["name"], bool):
            raise TaskError(f"{source}: labels[{i}]: YAML read the name as {raw['name']}; "
                            "quote it (\"yes\", \"no\")")
        if any(isinstance(v, bool) for v in raw.get("verbalizers", ())):
            raise TaskError(f"{source}: labels[{i}]: a verbalizer was read as a boolean; quote it")
        labels.append(
            Label(
                name=str(raw["name"]),
                verbalizers=tuple(str(v) for v in raw.get("verbalizers", ())),
                value=None if raw.get("value") is None else float(raw["value"]),
            )
        )
    known = {"name", "fields", "template", "description", "optional_fields", "ordinal", "system"}
    extra = {k: v for k, v in data.items() if k not in known}
    return Task(
        name=str(data["name"]),
        fields=tuple(data["fields"]),
        labels=tuple(labels),
        template=str(data["template"]),
        description=str(data.get("description", "")),
        optional_fields=tuple(data.get("optional_fields") or ()),
        ordinal=bool(data.get("ordinal", False)),
        system=data.get("system"),
        extra=extra,
    )


def load_task(name_or_path: str | Path | Task) -> Task:
    """A built-in task by name (``nli``, ``rating``, ``pairwise``, ``safety``) or a YAML file."""
    if isinstance(name_or_path, Task):
        return name_or_path
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if not path.is_file():
            raise TaskError(f"{path}: task file not found")
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise TaskError(f"{path}: not valid YAML: {err}".splitlines()[0]) from err
        return task_from_dict(data, source=str(path), folder=path.parent)
    builtin = resources.files("distjudge") / "tasks" / f"{name_or_path}.yaml"
    if not builtin.is_file():
        raise TaskError(
            f"unknown task {str(name_or_path)!r}: use one of {', '.join(available_tasks())}"
            " or the path of a task YAML file"
        )
    return task_from_dict(yaml.safe_load(builtin.read_text()), source=f"task {name_or_path}")


def available_tasks() -> list[str]:
    """Names of the built-in task definitions."""
    folder = resources.files("distjudge") / "tasks"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))
