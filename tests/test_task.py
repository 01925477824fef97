"""Tasks as data: built-in tasks, user YAML tasks, `extends:`, errors, label-token collisions."""

from __future__ import annotations

import textwrap

import pytest

from distjudge.readout import label_token_ids
from distjudge.task import Task, TaskError, available_tasks, load_task

ITEMS = {
    "nli": {"premise": "A dog runs on the beach.", "hypothesis": "An animal is outside."},
    "rating": {"text": "The cat sat on the mat.", "criterion": "fluency"},
    "pairwise": {"context": "Name a prime number.", "response_a": "Seven.", "response_b": "Nine."},
    "safety": {"context": "How do I bake bread?", "response": "Mix flour, water and yeast."},
}
BUILTIN = sorted(ITEMS)


def write(tmp_path, name: str, text: str):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_builtin_tasks_are_listed():
    assert set(BUILTIN) <= set(available_tasks())


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_task_renders_every_field_through_the_chat_template(name, tokenizer):
    task = load_task(name)
    assert task.name == name
    assert len(task.labels) >= 2 and len(set(task.label_names)) == len(task.label_names)
    item = ITEMS[name]
    assert set(task.fields) <= set(item)
    messages = task.render(item)
    assert messages[-1]["role"] == "user"
    user = messages[-1]["content"]
    for field_name in task.fields:
        assert item[field_name] in user, f"{name}: field {field_name} not in the prompt"
    assert "{{" not in user and "{%" not in user
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert user in text
    assert text.rstrip().endswith("assistant"), "the prompt must end where the answer starts"


def test_builtin_labels_and_ordinal_values():
    assert load_task("nli").label_names == ["entailment", "neutral", "contradiction"]
    rating = load_task("rating")
    assert rating.ordinal and rating.label_names == ["1", "2", "3", "4", "5"]
    assert rating.values == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert load_task("pairwise").label_names[:2] == ["A", "B"]
    assert load_task("safety").label_names == ["yes", "no", "unsure"]
    assert load_task("nli").values is None


def test_rating_optional_context():
    rating = load_task("rating")
    assert "context" in rating.optional_fields and "context" not in rating.fields
    item = dict(ITEMS["rating"])
    without = rating.render(item)[-1]["content"]
    with_context = rating.render({**item, "context": "An article about a cat."})[-1]["content"]
    assert "An article about a cat." in with_context and "Source:" in with_context
    assert "Source:" not in without and "written for a source" not in without
    assert item["text"] in without and item["text"] in with_context
    # an explicit empty/None context is the same as no context
    assert rating.render({**item, "context": None})[-1]["content"] == without


def test_render_without_a_required_field_fails():
    with pytest.raises(KeyError):
        load_task("nli").render({"premise": "only a premise"})


def test_user_yaml_task_needs_no_code(tmp_path, tokenizer):
    path = write(tmp_path, "sentiment.yaml", """\
        name: sentiment
        description: Is a review positive or negative?
        fields: [review]
        optional_fields: [product]
        system: You are a careful annotator.
        labels:
          - {name: positive, verbalizers: [positive, good]}
          - {name: negative, verbalizers: [negative, bad]}
        template: |-
          {% if product %}Product: {{ product }}
          {% endif %}Review: {{ review }}
          Is the review positive or negative? Answer with one word.
        """)
    task = load_task(path)
    assert task.name == "sentiment" and task.label_names == ["positive", "negative"]
    assert task.labels[0].words() == ("positive", "good")
    messages = task.render({"review": "Loved it.", "product": "a kettle"})
    assert messages[0] == {"role": "system", "content": "You are a careful annotator."}
    assert "Review: Loved it." in messages[1]["content"]
    assert "Product: a kettle" in messages[1]["content"]
    assert "Product:" not in task.render({"review": "Meh."})[1]["content"]
    ids = label_token_ids(task, tokenizer)
    assert len(ids) == 2 and all(ids) and not set(ids[0]) & set(ids[1])
    # the definition round-trips through YAML with the same fingerprint
    task.save(tmp_path / "copy.yaml")
    again = load_task(tmp_path / "copy.yaml")
    assert again == task and again.fingerprint() == task.fingerprint()


def test_extends_overrides_only_the_given_keys(tmp_path):
    path = write(tmp_path, "short_nli.yaml", """\
        extends: nli
        name: short_nli
        template: "{{ premise }} => {{ hypothesis }}? One word."
        """)
    task, base = load_task(path), load_task("nli")
    assert task.name == "short_nli"
    assert task.labels == base.labels and task.fields == base.fields
    assert task.template != base.template
    assert task.render(ITEMS["nli"])[-1]["content"] == (
        "A dog runs on the beach. => An animal is outside.? One word."
    )
    assert task.fingerprint() != base.fingerprint()


def test_extends_keeps_the_swap_declaration(tmp_path):
    path = write(tmp_path, "ab.yaml", """\
        extends: pairwise
        name: ab_only
        labels: [A, B]
        template: "{{ context }} | {{ response_a }} | {{ response_b }}"
        """)
    task = load_task(path)
    assert task.label_names == ["A", "B"]
    assert task.swappable and task.swap_permutation() == [1, 0]


def test_extends_a_sibling_yaml_file_by_relative_path(tmp_path, monkeypatch):
    """`extends: base.yaml` in a task file means the file next to it, whatever the cwd."""
    write(tmp_path, "base.yaml", """\
        name: base
        fields: [text]
        labels: ["yes", "no"]
        template: "{{ text }}"
        """)
    child = write(tmp_path, "child.yaml", """\
        extends: base.yaml
        name: child
        """)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    task = load_task(child)
    assert task.name == "child" and task.fields == ("text",)


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("name: x\nfields: [a\nlabels: [p, q]\n", "not valid YAML"),
        ("- just\n- a list\n", "mapping"),
        ("name: x\nfields: [a]\ntemplate: '{{ a }}'\n", "labels"),
        ("name: x\nlabels: [p, q]\ntemplate: '{{ a }}'\n", "fields"),
        ("name: x\nfields: [a]\nlabels: [p, q]\n", "template"),
        ("name: x\nfields: [a]\nlabels: [p, p]\ntemplate: '{{ a }}'\n", "duplicate"),
        ("name: x\nfields: [a]\nlabels: [p]\ntemplate: '{{ a }}'\n", "two labels"),
        ("name: x\nfields: [a]\nordinal: true\nlabels: [{name: lo, value: 1}, {name: hi}]\n"
         "template: '{{ a }}'\n", "value"),
        ("name: x\nfields: [a]\nlabels: [p, q]\ntemplate: '{{ a '\n", "template"),
        ("name: x\nfields: [a]\nlabels: [{verbalizers: [p]}, q]\ntemplate: '{{ a }}'\n", "name"),
    ],
    ids=["bad-yaml", "not-mapping", "no-labels", "no-fields", "no-template", "duplicate-labels",
         "one-label", "ordinal-without-value", "bad-template", "label-without-name"],
)
def test_bad_task_files_raise_task_error(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(TaskError) as err:
        load_task(path)
    message = str(err.value)
    assert needle in message
    assert "\n" not in message.strip(), "a task error is one line"


def test_missing_task_file_and_unknown_task(tmp_path):
    with pytest.raises(TaskError, match="not found"):
        load_task(tmp_path / "nope.yaml")
    with pytest.raises(TaskError, match="nli"):  # lists the built-in tasks
        load_task("no_such_task")


def test_template_using_an_undeclared_field_is_refused_at_load(tmp_path):
    """A typo in a user template must be a TaskError when the task loads, not a crash later."""
    path = write(tmp_path, "typo.yaml", """\
        name: typo
        fields: [premise, hypothesis]
        labels: ["yes", "no"]
        template: "{{ premise }} / {{ hypothesis_typo }}"
        """)
    with pytest.raises(TaskError, match="hypothesis_typo"):
        load_task(path)


def test_unquoted_yes_no_labels_are_not_silently_renamed(tmp_path):
    """YAML reads `[yes, no]` as booleans: the task must not become labels 'True'/'False'."""
    path = write(tmp_path, "yn.yaml", """\
        name: yn
        fields: [text]
        labels: [yes, no]
        template: "{{ text }}"
        """)
    try:
        task = load_task(path)
    except TaskError as err:  # refusing with a hint to quote them is fine
        assert "yes" in str(err).lower() or "quote" in str(err).lower()
    else:  # or reading them back as the words the user wrote
        assert task.label_names == ["yes", "no"]


def test_duplicate_names_direct():
    from distjudge.task import Label

    with pytest.raises(TaskError, match="duplicate"):
        Task(name="t", fields=("a",), labels=(Label("x"), Label("x")), template="{{ a }}")


# -- label tokens on the real tokenizer ---------------------------------------------------------

@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_label_tokens_do_not_collide(name, tokenizer):
    task = load_task(name)
    ids = label_token_ids(task, tokenizer)
    assert len(ids) == len(task.labels)
    seen: set[int] = set()
    for label, label_ids in zip(task.labels, ids):
        assert label_ids, f"{label.name}: no token"
        assert len(set(label_ids)) == len(label_ids), f"{label.name}: duplicate token ids"
        assert not seen & set(label_ids), f"{label.name}: shares a token with another label"
        seen |= set(label_ids)
        words = [w.lower() for w in label.words()]
        for token in label_ids:
            piece = tokenizer.decode([token]).strip().lower()
            assert piece and any(w.startswith(piece) for w in words), (
                f"{label.name}: token {piece!r} does not start any of {words}"
            )


def _numbers_task(tmp_path, labels):
    names = ", ".join(f'"{x}"' for x in labels)
    return load_task(write(tmp_path, "scale.yaml", f"""\
        name: scale
        fields: [text]
        labels: [{names}]
        template: "Rate: {{{{ text }}}}"
        """))


@pytest.mark.parametrize("labels", [["1", "10"], [str(i) for i in range(1, 11)]],
                         ids=["1-and-10", "1-to-10"])
def test_labels_sharing_a_first_token_are_refused(tmp_path, tokenizer, labels):
    task = _numbers_task(tmp_path, labels)
    with pytest.raises(TaskError) as err:
        label_token_ids(task, tokenizer)
    message = str(err.value)
    assert "'1'" in message and "'10'" in message, message


@pytest.mark.slow
def test_a_judge_refuses_a_colliding_task(tmp_path, judge):
    from distjudge.judge import Judge

    task = _numbers_task(tmp_path, ["1", "10"])
    with pytest.raises(TaskError, match="'10'"):
        Judge(judge.model, judge.tokenizer, task)


def test_pairwise_swap_permutation_flips_a_and_b():
    task = load_task("pairwise")
    assert task.swappable
    names = task.label_names
    perm = task.swap_permutation()
    assert sorted(perm) == list(range(len(names)))
    flipped = [names[i] for i in perm]
    assert flipped[names.index("A")] == "B" and flipped[names.index("B")] == "A"
    if "tie" in names:
        assert flipped[names.index("tie")] == "tie"
    item = ITEMS["pairwise"]
    swapped = task.swapped(item)
    assert swapped["response_a"] == item["response_b"]
    assert swapped["response_b"] == item["response_a"]
    assert swapped["context"] == item["context"]
    assert task.swapped(swapped) == item
    assert not load_task("nli").swappable
