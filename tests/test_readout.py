"""The readout on the real embedded model, against a full softmax computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distjudge.judge import Judge, Judgment
from distjudge.readout import encode_prompts, label_log_probs, pad_left
from distjudge.task import load_task

pytestmark = pytest.mark.slow  # the real embedded model


def brute_force(judge: Judge, item: dict) -> tuple[np.ndarray, float]:
    """q and label mass of one item alone: no padding, full vocabulary softmax in float64."""
    tokenizer = judge.tokenizer
    text = tokenizer.apply_chat_template(judge.task.render(item), tokenize=False,
                                         add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():  # the body, then the LM head on the last position only (by hand)
        hidden = judge.model.model(torch.tensor([ids])).last_hidden_state[0, -1]
        logits = judge.model.lm_head(hidden)
    probs = torch.softmax(logits.double(), dim=-1).numpy()
    assert probs.shape[0] == judge.model.config.vocab_size  # the whole vocabulary
    per_label = np.array([probs[sorted(set(token_ids))].sum() for token_ids in judge.token_ids])
    return per_label / per_label.sum(), float(per_label.sum())


@pytest.fixture(scope="module")
def nli_items(chaosnli):
    return chaosnli(6, start=20, labels="none")


@pytest.fixture(scope="module")
def batched(judge, nli_items):
    return judge.predict(nli_items)


@pytest.fixture(scope="module")
def references(judge, nli_items):
    return [brute_force(judge, item) for item in nli_items]


def test_prompt_ends_at_the_answer_and_labels_are_sets(judge, nli_items):
    prompts = encode_prompts(judge.task, judge.tokenizer, nli_items)
    for item, ids in zip(nli_items, prompts):
        text = judge.tokenizer.decode(ids)
        assert item["premise"] in text and item["hypothesis"] in text
        assert text.endswith("assistant\n")
    flat = [t for ids in judge.token_ids for t in ids]
    assert len(flat) == len(set(flat))


def test_readout_matches_brute_force_full_softmax(judge, nli_items, batched, references):
    assert isinstance(batched, Judgment)
    assert batched.probs.shape == (len(nli_items), 3)
    assert batched.labels == ["entailment", "neutral", "contradiction"]
    assert len({len(p) for p in encode_prompts(judge.task, judge.tokenizer, nli_items)}) > 1, (
        "the items must have different lengths so that the batch is really left-padded"
    )
    for i, (q, mass) in enumerate(references):
        assert np.abs(batched.probs[i] - q).max() <= 1e-4, (i, batched.probs[i], q)
        assert abs(batched.label_mass[i] - mass) / mass <= 1e-3, (i, batched.label_mass[i], mass)
    assert np.abs(batched.probs.sum(axis=1) - 1).max() < 1e-6
    assert np.all((batched.label_mass > 0) & (batched.label_mass <= 1))


def test_readout_is_not_trivially_uniform(batched, references):
    """Guard against a vacuous comparison: the items get different, non-uniform readouts."""
    q = np.stack([r[0] for r in references])
    assert np.abs(q - 1 / 3).max() > 0.01
    assert np.ptp(q, axis=0).max() > 1e-3


def test_batched_equals_one_by_one(judge, nli_items, batched):
    single = np.stack([judge.predict([item]).probs[0] for item in nli_items])
    assert np.abs(batched.probs - single).max() <= 1e-5


def test_left_padding_with_position_ids():
    batch = pad_left([[5, 6], [1, 2, 3, 4]], pad_id=0)
    assert batch["input_ids"].tolist() == [[0, 0, 5, 6], [1, 2, 3, 4]]
    assert batch["attention_mask"].tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    assert batch["position_ids"].tolist() == [[0, 0, 0, 1], [0, 1, 2, 3]]


def test_label_log_probs_sums_each_label_token_set():
    logits = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.15, 0.25]]))
    index = torch.tensor([[0, 2], [3, -1]])  # label 0: tokens {0, 2}; label 1: token {3}
    log_q, log_mass = label_log_probs(logits, index)
    assert torch.allclose(log_mass.exp(), torch.tensor([0.55]))
    assert torch.allclose(log_q.exp(), torch.tensor([[0.4 / 0.55, 0.15 / 0.55]]))


@pytest.mark.filterwarnings("ignore:bf16 is emulated")  # the bf16 path is the point here
def test_bfloat16_is_a_distribution_close_to_float32(judge, nli_items, batched):
    bf16 = Judge(judge.model, judge.tokenizer, judge.task, dtype="bfloat16")
    result = bf16.predict(nli_items)
    assert next(judge.model.parameters()).dtype == torch.float32  # autocast, weights untouched
    assert np.abs(result.probs.sum(axis=1) - 1).max() < 1e-6
    assert np.all(result.probs >= 0) and np.all(np.isfinite(result.label_mass))
    diff = float(np.abs(result.probs - batched.probs).max())
    print(f"\nbf16 vs fp32: max |dq| = {diff:.5f}, "
          f"max |d label_mass| = {np.abs(result.label_mass - batched.label_mass).max():.5f}")
    assert diff <= 0.1
    with pytest.raises(ValueError, match="dtype"):
        Judge(judge.model, judge.tokenizer, judge.task, dtype="float16")


@pytest.mark.filterwarnings("ignore:bf16 is emulated")  # the bf16 path is the point here
def test_from_pretrained_loads_bfloat16_weights_close_to_float32(nli_items, batched, tmp_path):
    bf16 = Judge.from_pretrained(task="nli", dtype="bfloat16")
    assert {p.dtype for p in bf16.model.parameters()} == {torch.bfloat16}  # no fp32 copy kept
    result = bf16.predict(nli_items)
    assert np.abs(result.probs.sum(axis=1) - 1).max() < 1e-6
    assert float(np.abs(result.probs - batched.probs).max()) <= 0.1
    source = tmp_path / "items.jsonl"
    source.write_text("")
    assert bf16.signature(source, 256)["weights_dtype"] == "torch.bfloat16"
    with pytest.raises(ValueError, match="dtype must be one of"):
        Judge.from_pretrained(task="nli", dtype="float16")


def test_rows_carry_every_output_field(batched):
    rows = list(batched.rows())
    assert len(rows) == len(batched.probs)
    for row, probs, mass in zip(rows, batched.probs, batched.label_mass):
        assert set(row) == {"distribution", "prediction", "entropy", "label_mass", "estimator"}
        assert list(row["distribution"]) == batched.labels
        assert np.allclose(list(row["distribution"].values()), probs)
        assert row["prediction"] == batched.labels[int(np.argmax(probs))]
        expected_entropy = -sum(x * np.log(x) for x in probs if x > 0)
        assert row["entropy"] == pytest.approx(expected_entropy)
        assert row["label_mass"] == pytest.approx(mass)
        assert row["estimator"] == "exact"
        assert "expected_score" not in row


def test_rating_rows_have_an_expected_score(judge):
    rating = Judge(judge.model, judge.tokenizer, load_task("rating"))
    items = [
        {"text": "The cat sat on the mat.", "criterion": "fluency"},
        {"text": "Cat mat the on sat.", "criterion": "coherence",
         "context": "A short story about a cat."},
    ]
    result = rating.predict(items)
    assert result.values == [1.0, 2.0, 3.0, 4.0, 5.0]
    rows = list(result.rows())
    for i, (row, probs) in enumerate(zip(rows, result.probs)):
        assert list(row["distribution"]) == ["1", "2", "3", "4", "5"]
        assert row["expected_score"] == pytest.approx(float(probs @ np.arange(1, 6)))
        assert 1.0 <= row["expected_score"] <= 5.0
        q, mass = brute_force(rating, items[i])
        assert np.abs(probs - q).max() <= 1e-4
        assert abs(result.label_mass[i] - mass) / mass <= 1e-3
