"""Evaluation: the judge beside the uniform and label-prior baselines; `distjudge evaluate`."""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

import distjudge
import distjudge.io
from distjudge.cli import main as cli_main
from distjudge.evaluation import evaluate, evaluate_file, label_prior
from distjudge.metrics import METRICS, entropy, kl_divergence, majority_correct

LABELS = ["entailment", "neutral", "contradiction"]


def random_pq(seed: int, n: int = 60, c: int = 3):
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(20, rng.dirichlet(np.ones(c)), size=n).astype(float)
    p = counts / counts.sum(axis=1, keepdims=True)
    q = rng.dirichlet(np.ones(c), size=n)
    return p, q


def test_evaluate_blocks_and_baselines():
    p, q = random_pq(0, c=4)
    prior = np.array([0.4, 0.3, 0.2, 0.1])
    report = evaluate(p, q, prior, n_boot=200, seed=1)
    assert report["n"] == len(p)
    for block in ("judge", "uniform", "prior"):
        assert set(report[block]) == set(METRICS)
        for stats in report[block].values():
            assert set(stats) == {"value", "low", "high"}
            assert stats["low"] <= stats["high"]
    assert report["judge"]["kl"]["value"] == pytest.approx(kl_divergence(p, q).mean())
    # uniform: KL(p || 1/C) = log C - H(p)
    assert report["uniform"]["kl"]["value"] == pytest.approx(np.mean(np.log(4) - entropy(p)))
    uniform = np.full_like(p, 0.25)
    assert report["uniform"]["accuracy"]["value"] == pytest.approx(
        majority_correct(p, uniform).mean())
    assert report["prior"]["kl"]["value"] == pytest.approx(
        kl_divergence(p, np.tile(prior, (len(p), 1))).mean())
    assert "prior" not in evaluate(p, q, n_boot=50)


def test_top_level_distjudge_evaluate_is_the_function():
    """`distjudge.evaluate(p, q)` (the documented Python API) must stay the function, also
    after the submodule `distjudge.evaluation` has been imported (the CLI and this file do)."""
    importlib.import_module("distjudge.evaluation")
    p, q = random_pq(1)
    for _ in range(2):  # the first access may differ from later ones with lazy exports
        assert callable(distjudge.evaluate), type(distjudge.evaluate)
        assert distjudge.evaluate(p, q, n_boot=10)["n"] == len(p)


def test_evaluate_checks_shapes():
    p, q = random_pq(1)
    with pytest.raises(ValueError, match="N, C"):
        evaluate(p, q[:, :2])
    with pytest.raises(ValueError):
        evaluate(p[0], q[0])


def test_label_prior_is_the_mean_human_distribution():
    p = np.array([[1.0, 0.0, 0.0], [0.0, 0.5, 0.5]])
    np.testing.assert_allclose(label_prior(p), [0.5, 0.25, 0.25])


# -- files and the CLI --------------------------------------------------------------------------

def judged_rows(items, seed=0):
    """Items with a (synthetic, not model-made) judged distribution."""
    rng = np.random.default_rng(seed)
    rows = []
    for item in items:
        q = rng.dirichlet(np.ones(3))
        rows.append({**item, "distribution": dict(zip(LABELS, q.tolist())),
                     "prediction": LABELS[int(q.argmax())], "label_mass": 0.5})
    return rows


def counts_p(items):
    counts = np.array([[item["annotations"].count(name) for name in LABELS] for item in items],
                      dtype=float)
    return counts / counts.sum(axis=1, keepdims=True)


def test_cli_evaluate_prints_a_table_and_writes_json_atomically(tmp_path, chaosnli, files, capsys,
                                                               monkeypatch):
    items = chaosnli(30, start=200)
    reference = chaosnli(50, start=300)
    judged = files.jsonl(tmp_path / "judged.jsonl", judged_rows(items))
    ref_path = files.jsonl(tmp_path / "items.jsonl", reference)
    output = tmp_path / "metrics.json"
    replaced = []
    real_replace = distjudge.io.os.replace
    monkeypatch.setattr(distjudge.io.os, "replace",
                        lambda src, dst: (replaced.append((str(src), str(dst))),
                                          real_replace(src, dst)))
    rc = cli_main(["evaluate", "--task", "nli", "--input", str(judged), "--reference",
                   str(ref_path), "--output", str(output), "--n_boot", "200"])
    out = capsys.readouterr().out
    assert rc == 0
    header = next(line for line in out.splitlines() if line.startswith("metric"))
    assert header.split() == ["metric", "judge", "uniform", "prior"]
    for metric in METRICS:
        assert any(line.split()[:1] == [metric] for line in out.splitlines()), metric
    assert "30 items with human labels" in out and "0.5000" in out  # mean label mass
    assert [dst for _, dst in replaced] == [str(output)]  # written by rename
    assert [f.name for f in tmp_path.iterdir() if f.name.endswith(".tmp")] == []
    report = json.loads(output.read_text())
    p = counts_p(items)
    q = np.array([[row["distribution"][name] for name in LABELS] for row in judged_rows(items)])
    prior = counts_p(reference).mean(axis=0)
    assert report["n"] == 30 and report["unlabeled"] == 0
    assert report["judge"]["kl"]["value"] == pytest.approx(kl_divergence(p, q).mean())
    assert report["prior"]["kl"]["value"] == pytest.approx(
        kl_divergence(p, np.tile(prior, (30, 1))).mean())
    np.testing.assert_allclose(list(report["prior_distribution"].values()), prior)
    assert report == json.loads(json.dumps(evaluate_file(judged, "nli", ref_path, 200, 0)))


def test_cli_evaluate_default_output_path(tmp_path, chaosnli, files, capsys):
    judged = files.jsonl(tmp_path / "j.jsonl", judged_rows(chaosnli(5)))
    assert cli_main(["evaluate", "--input", str(judged), "--n_boot", "20"]) == 0
    assert "metrics written to" in capsys.readouterr().out
    assert json.loads((tmp_path / "j.jsonl.metrics.json").read_text())["n"] == 5


def test_unlabeled_rows_are_counted_not_dropped(tmp_path, chaosnli, files, capsys):
    items = chaosnli(8, start=400)
    rows = judged_rows(items)
    for i in (1, 4, 6):
        del rows[i]["annotations"]
    judged = files.jsonl(tmp_path / "judged.jsonl", rows)
    report = evaluate_file(judged, "nli", n_boot=50)
    assert report["n"] == 5 and report["unlabeled"] == 3
    assert cli_main(["evaluate", "--input", str(judged), "--n_boot", "50"]) == 0
    out = capsys.readouterr().out
    assert "5 items with human labels" in out and "3 without" in out


BROKEN = {
    "missing": None,
    "a-list": [0.2, 0.3, 0.5],
    "label-missing": {"entailment": 0.5, "neutral": 0.5},
    "negative": {"entailment": 1.2, "neutral": -0.2, "contradiction": 0.0},
    "not-summing-to-1": {"entailment": 0.2, "neutral": 0.2, "contradiction": 0.2},
    "nan": {"entailment": float("nan"), "neutral": 0.5, "contradiction": 0.5},
    "text-value": {"entailment": "high", "neutral": 0.5, "contradiction": 0.5},
    "nested-value": {"entailment": {"p": 1}, "neutral": 0.0, "contradiction": 0.0},
}


@pytest.mark.parametrize("broken", list(BROKEN), ids=list(BROKEN))
def test_broken_distribution_fails_with_file_line_field(tmp_path, broken, files, capsys, cli):
    items = [{"id": str(i), "premise": "A man walks.", "hypothesis": "A person moves.",
              "annotations": ["neutral", "entailment"]} for i in range(3)]
    rows = judged_rows(items)
    if BROKEN[broken] is None:
        del rows[2]["distribution"]
    else:
        rows[2]["distribution"] = BROKEN[broken]
    judged = files.jsonl(tmp_path / "judged.jsonl", rows)
    rc = cli_main(["evaluate", "--input", str(judged), "--n_boot", "10"])
    err = capsys.readouterr().err
    assert rc == 2
    [line] = cli.error_lines(err)
    assert f"{judged}:3: field 'distribution'" in line, line
    assert not (tmp_path / "judged.jsonl.metrics.json").exists()


def test_evaluate_with_bad_human_labels_or_no_labels(tmp_path, files, capsys, cli):
    row = {"premise": "p", "hypothesis": "h",
           "distribution": dict(zip(LABELS, [0.2, 0.3, 0.5]))}
    judged = files.jsonl(tmp_path / "bad.jsonl", [{**row, "annotations": ["neutral"]},
                                                  {**row, "annotations": ["sideways"]}])
    assert cli_main(["evaluate", "--input", str(judged)]) == 2
    [line] = cli.error_lines(capsys.readouterr().err)
    assert f"{judged}:2: field 'annotations'" in line and "sideways" in line
    nolabels = files.jsonl(tmp_path / "none.jsonl", [row, row])
    assert cli_main(["evaluate", "--input", str(nolabels)]) == 2
    [line] = cli.error_lines(capsys.readouterr().err)
    assert str(nolabels) in line and "human labels" in line


def test_plot_is_a_png(tmp_path):
    rows = [{"id": str(i), "premise": "a", "hypothesis": "b",
             "label_counts": {"entailment": i + 1, "neutral": 2, "contradiction": 1},
             "distribution": {"entailment": 0.5, "neutral": 0.3, "contradiction": 0.2}}
            for i in range(5)]
    judged = tmp_path / "judged.jsonl"
    judged.write_text("".join(json.dumps(r) + "\n" for r in rows))
    png = tmp_path / "report.png"
    report = evaluate_file(judged, "nli", n_boot=10, plot=png)
    assert report["n"] == 5
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fit_temperature_matches_scipy_and_undoes_a_known_scaling():
    from scipy.optimize import minimize_scalar

    from distjudge.evaluation import apply_temperature, fit_temperature
    from distjudge.metrics import kl_divergence

    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(3), size=200)
    q = apply_temperature(p, 0.25)  # a judge 4x too sharp
    assert abs(fit_temperature(p, q) - 4.0) < 1e-3
    noisy = rng.dirichlet(np.ones(3) * 0.3, size=200)
    found = fit_temperature(p, noisy)
    ref = minimize_scalar(lambda t: kl_divergence(p, apply_temperature(noisy, t)).mean(),
                          bounds=(0.01, 100), method="bounded", options={"xatol": 1e-8})
    loss = kl_divergence(p, apply_temperature(noisy, found)).mean()
    assert loss <= ref.fun + 1e-7
    np.testing.assert_allclose(apply_temperature(q, 1.0), q, atol=1e-12)


def test_fit_temperature_is_not_trapped_where_a_sharp_judge_underflows():
    """A judge whose argmax is never the humans' label is best flattened (T at the top bound);
    through probabilities the loss saturated at large 1/T and the search ran there instead."""
    from distjudge.evaluation import apply_temperature, fit_temperature
    from distjudge.metrics import kl_divergence

    rng = np.random.default_rng(1)
    p = np.zeros((50, 5))
    p[:, 3:] = rng.dirichlet(np.ones(2), size=50)  # humans: only labels 4 and 5
    q = rng.dirichlet(np.ones(5), size=50)
    q[:, 0] += 3.0  # the judge: mostly label 1
    q /= q.sum(axis=1, keepdims=True)
    found = fit_temperature(p, q)
    grid = [0.01, 0.1, 1.0, 10.0, 100.0]
    losses = [kl_divergence(p, apply_temperature(q, t)).mean() for t in grid]
    assert losses[-1] == min(losses) and found > 99.0
