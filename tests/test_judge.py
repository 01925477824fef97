"""`distjudge judge` files on the real model: fields, signature, rerun, SIGKILL-and-resume,
the three input formats, and pairwise judging in both orders."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.distance import jensenshannon

from distjudge.batching import plan_batches
from distjudge.cli import main as cli_main
from distjudge.judge import Judge, Judgment
from distjudge.models import default_gguf, file_sha256
from distjudge.readout import (
    SharedPrefixCache,
    cache_keyword,
    encode_prompts,
    pad_left,
    prefix_cache,
)
from distjudge.task import load_task

pytestmark = pytest.mark.slow  # the real embedded model

N_RESUME = 40
CHUNKING = ("--chunk_size", "8", "--batch_size", "4")
# The resume tests judge real NLI items with a user task (no code) that extends `nli` with a
# shorter prompt: the same labels and readout, half the tokens per item (CPU time).
SHORT_NLI = """\
extends: nli
name: nli_short
template: |-
  Premise: {{ premise }}
  Hypothesis: {{ hypothesis }}
  Answer with one word: entailment, neutral or contradiction.
"""
OUTPUT_FIELDS = {"distribution", "prediction", "entropy", "label_mass", "estimator"}


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("judge_files")


@pytest.fixture(scope="module")
def settings(workdir) -> list[str]:
    task = workdir / "nli_short.yaml"
    task.write_text(SHORT_NLI)
    return ["--task", str(task), *CHUNKING]


def judge_command(cli, input_path: Path, output_path: Path, settings) -> list[str]:
    return cli.command("judge", "--input", input_path, "--output", output_path, *settings)


@pytest.fixture(scope="module")
def resume_input(workdir, chaosnli, files):
    items = chaosnli(N_RESUME, start=100)
    return files.jsonl(workdir / "items.jsonl", items), items


@pytest.fixture(scope="module")
def reference_run(workdir, resume_input, cli, settings, judge):  # `judge`: skip when no model
    """An uninterrupted `distjudge judge` of the 40 items, as a real subprocess."""
    input_path, _ = resume_input
    output = workdir / "reference.jsonl"
    proc = subprocess.run(judge_command(cli, input_path, output, settings), capture_output=True,
                          text=True, timeout=400, env=cli.env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1])["status"] == "done"
    return output


def test_output_rows_fields_and_order(reference_run, resume_input):
    _, items = resume_input
    rows = read_jsonl(reference_run)
    assert len(rows) == len(items)
    assert [r["id"] for r in rows] == [i["id"] for i in items]  # input order, no loss
    labels = ["entailment", "neutral", "contradiction"]
    for row, item in zip(rows, items):
        assert OUTPUT_FIELDS <= set(row)
        assert "counts" not in row and "expected_score" not in row
        assert row["premise"] == item["premise"] and row["annotations"] == item["annotations"]
        assert list(row["distribution"]) == labels
        q = np.array(list(row["distribution"].values()))
        assert abs(q.sum() - 1) < 1e-6 and q.min() >= 0  # fp32 readout
        assert row["prediction"] == labels[int(q.argmax())]
        assert row["entropy"] == pytest.approx(-(q[q > 0] * np.log(q[q > 0])).sum())
        assert 0 < row["label_mass"] <= 1
    assert not reference_run.with_name(reference_run.name + ".parts").exists()


def test_signature_beside_the_output(reference_run, resume_input, settings, judge):
    input_path, _ = resume_input
    sig_path = reference_run.with_name(reference_run.name + ".signature.json")
    sig = json.loads(sig_path.read_text())
    assert sig["model"]["model_sha256"] == file_sha256(default_gguf())
    task = load_task(settings[1])
    assert sig["task"]["name"] == "nli_short" and task.name == "nli_short"
    assert sig["task"]["fingerprint"] == task.fingerprint() != load_task("nli").fingerprint()
    assert sig["label_token_ids"] == judge.token_ids
    assert sig["input"]["sha256"] == hashlib.sha256(input_path.read_bytes()).hexdigest()
    for package in ("distjudge", "torch", "transformers"):
        assert sig["versions"][package] not in ("", "absent")
    assert sig["chunk_size"] == 8 and sig["batch_size"] == 4 and sig["dtype"] == "float32"


def test_rerun_of_a_finished_job_is_a_no_op(reference_run, resume_input, settings, capsys):
    input_path, _ = resume_input
    before = reference_run.read_bytes()
    sig_path = reference_run.with_name(reference_run.name + ".signature.json")
    sig_before, mtime = sig_path.read_bytes(), reference_run.stat().st_mtime_ns
    rc = cli_main(["judge", "--input", str(input_path), "--output", str(reference_run),
                   *settings])
    out = capsys.readouterr().out
    assert rc == 0
    assert json.loads(out.strip().splitlines()[-1])["status"] == "already complete"
    assert reference_run.read_bytes() == before and sig_path.read_bytes() == sig_before
    assert reference_run.stat().st_mtime_ns == mtime


def test_sigkill_and_resume_equals_an_uninterrupted_run(reference_run, resume_input, workdir,
                                                        settings, cli, capsys):
    input_path, items = resume_input
    output = workdir / "killed.jsonl"
    parts = output.with_name(output.name + ".parts")
    log = (workdir / "killed.stderr").open("w")
    command = judge_command(cli, input_path, output, settings)
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log, env=cli.env())
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            if len(list(parts.glob("chunk-*.jsonl"))) >= 2:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    done = sorted(parts.glob("chunk-*.jsonl"))
    assert 2 <= len(done) < N_RESUME // 8, "killed mid-run: some but not all chunks are written"
    assert not output.exists(), "no output before the run is complete"
    for chunk in done:  # every finished chunk is whole (written atomically)
        assert len(read_jsonl(chunk)) == 8

    # rerunning with other settings while the parts exist: a clear error, the parts kept
    rc = cli_main(["judge", "--input", str(input_path), "--output", str(output),
                   "--task", settings[1], "--chunk_size", "16", "--batch_size", "4"])
    err = capsys.readouterr().err
    assert rc == 2
    [line] = cli.error_lines(err)
    assert str(parts) in line and "other settings" in line and "delete" in line
    assert sorted(parts.glob("chunk-*.jsonl")) == done and not output.exists()

    # the same command again: continues and finishes
    resumed = subprocess.run(judge_command(cli, input_path, output, settings), capture_output=True,
                             text=True, timeout=400, env=cli.env())
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert output.read_bytes() == reference_run.read_bytes()
    ids = [row["id"] for row in read_jsonl(output)]
    assert ids == [item["id"] for item in items] and len(set(ids)) == len(ids)
    assert not parts.exists()
    sig = json.loads(output.with_name(output.name + ".signature.json").read_text())
    ref_sig = json.loads(reference_run.with_name(reference_run.name + ".signature.json")
                         .read_text())
    assert sig == ref_sig


def test_three_input_formats_give_the_same_distributions(tmp_path, judge, chaosnli, files):
    items = chaosnli(3, start=60, labels="label_counts")
    paths = [files.jsonl(tmp_path / "in.jsonl", items), files.csv(tmp_path / "in.csv", items)]
    import pyarrow as pa

    schema = pa.schema([("id", pa.string()), ("premise", pa.string()),
                        ("hypothesis", pa.string()),
                        ("label_counts", pa.map_(pa.string(), pa.int64()))])
    paths.append(files.parquet(tmp_path / "in.parquet", items, schema=schema))
    outputs = []
    for path in paths:
        out = tmp_path / f"out-{path.suffix[1:]}.jsonl"
        summary = judge.judge_file(path, out, chunk_size=8, progress=False)
        assert summary["status"] == "done" and summary["items"] == len(items)
        outputs.append(read_jsonl(out))
    for rows in outputs:
        assert [r["id"] for r in rows] == [i["id"] for i in items]
        assert [r["label_counts"] for r in rows] == [i["label_counts"] for i in items]
    for rows in outputs[1:]:
        for a, b in zip(outputs[0], rows):
            assert a["distribution"] == b["distribution"]
            assert a["label_mass"] == b["label_mass"]


# -- pairwise, both orders ----------------------------------------------------------------------

PAIRS = [
    {"id": "p1", "context": "What is the capital of France?",
     "response_a": "Paris is the capital of France.", "response_b": "I think it is Berlin."},
    {"id": "p2", "context": "Write a greeting.",
     "response_a": "hi", "response_b": "Hello! I hope you are having a wonderful day."},
    {"id": "p3", "context": "What is 2 + 2?", "response_a": "4", "response_b": "4"},
]


def test_both_orders_is_the_mean_with_labels_flipped_back(judge):
    task = load_task("pairwise")
    one_order = Judge(judge.model, judge.tokenizer, task)
    both = Judge(judge.model, judge.tokenizer, task, both_orders=True)
    result = both.predict(PAIRS)
    swapped_items = [dict(item, response_a=item["response_b"], response_b=item["response_a"])
                     for item in PAIRS]
    both_ways = one_order.predict(PAIRS + swapped_items)
    n = len(PAIRS)
    direct = Judgment(both_ways.labels, both_ways.probs[:n], both_ways.label_mass[:n])
    swapped = Judgment(both_ways.labels, both_ways.probs[n:], both_ways.label_mass[n:])
    names = task.label_names
    a, b = names.index("A"), names.index("B")
    flipped = swapped.probs.copy()
    flipped[:, [a, b]] = swapped.probs[:, [b, a]]
    np.testing.assert_allclose(result.probs, (direct.probs + flipped) / 2, atol=1e-5)
    np.testing.assert_allclose(result.label_mass, (direct.label_mass + swapped.label_mass) / 2,
                               rtol=1e-4)
    expected_jsd = [jensenshannon(x, y) ** 2 for x, y in zip(direct.probs, flipped)]
    rows = list(result.rows())
    for row, jsd in zip(rows, expected_jsd):
        assert row["order_flip_jsd"] >= 0
        assert row["order_flip_jsd"] == pytest.approx(jsd, abs=1e-4)
        assert abs(sum(row["distribution"].values()) - 1) < 1e-6
    assert "order_flip_jsd" not in next(direct.rows())
    with pytest.raises(ValueError, match="swap"):
        Judge(judge.model, judge.tokenizer, load_task("nli"), both_orders=True)


def test_shared_prefixes_run_once_give_the_same_distributions(judge, chaosnli):
    """The KV-cached header and per-source prefixes change no figure (fp32)."""
    nli = chaosnli(16)
    sources = [item["premise"] for item in nli[:2]]
    items = [{"context": src, "text": item["hypothesis"], "criterion": "relevance"}
             for src in sources for item in nli[:8]]
    rating = load_task("rating")
    prompts = encode_prompts(rating, judge.tokenizer, items)
    plan = plan_batches(prompts, 16)
    assert len({tuple(prompts[b.rows[0]][:b.prefix_length]) for b in plan}) == 2  # one a source
    for task, batch in ((judge.task, nli), (rating, items)):
        plain = Judge(judge.model, judge.tokenizer, task, share_prefix=False).predict(batch)
        shared = Judge(judge.model, judge.tokenizer, task, share_prefix=True).predict(batch)
        np.testing.assert_allclose(shared.probs, plain.probs, atol=2e-5)
        np.testing.assert_allclose(shared.label_mass, plain.label_mass, rtol=2e-4)


def test_a_batch_attends_to_a_shared_prefix_without_extending_it(judge, chaosnli):
    """The prefix's keys and values are read, never grown or copied into a per-batch cache."""
    prompts = encode_prompts(judge.task, judge.tokenizer, chaosnli(4))
    length = min(len(p) for p in prompts) - 3
    prefix = prefix_cache(judge.model, prompts[0][:length])
    before = [(k.clone(), v.clone()) for k, v in prefix]
    batch = pad_left([p[length:] for p in prompts], judge.pad_id, length)
    cache = SharedPrefixCache([(k.expand(4, -1, -1, -1), v.expand(4, -1, -1, -1))
                               for k, v in prefix], config=judge.model.config)
    with torch.no_grad():
        judge.model(**batch, **{cache_keyword(judge.model): cache}, use_cache=True,
                    logits_to_keep=1)
    assert cache.get_seq_length() == length
    for (k, v), (k0, v0) in zip(prefix, before):
        assert k.shape[-2] == length and torch.equal(k, k0) and torch.equal(v, v0)


def test_a_kept_prefix_holds_no_autograd_graph(judge, chaosnli):
    """Keys and values with a grad_fn would keep all of the prefix pass's activations alive."""
    prompts = encode_prompts(judge.task, judge.tokenizer, chaosnli(1))
    assert any(p.requires_grad for p in judge.model.parameters())  # as loaded: trainable
    prefix = prefix_cache(judge.model, prompts[0][:-3])
    assert all(t.grad_fn is None and not t.requires_grad for kv in prefix for t in kv)
