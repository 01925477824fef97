"""benchmarks/quality.py end to end on a tiny random model: rows, resume, robustness, report."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import benchmark_module


@pytest.fixture(scope="module")
def quality():
    return benchmark_module("quality", "chaosnli-snli")


def test_cells_rows_resume_and_report(quality, tiny_model, tmp_path, capsys):
    output = tmp_path / "results" / "quality.json"
    argv = ["--datasets", "chaosnli-snli", "--methods", "uniform,prior,raw_temperature,kl_ce_adv",
            "--model", str(tiny_model), "--backbone", "tiny", "--limit", "16",
            "--output", str(output), "--work", str(tmp_path / "work")]
    assert quality.main(argv) == 0
    results = json.loads(output.read_text())
    rows = {r["method"]: r for r in results["runs"]}
    assert set(rows) == {"uniform", "prior", "raw_temperature", "kl_ce_adv"}
    for row in rows.values():
        assert {"dataset", "method", "backbone", "seed", "kl", "jsd", "acc", "ece", "n_test",
                "train_seconds"} <= set(row)
        assert row["backbone"] == "tiny" and row["n_test"] > 200
        assert row["host"].endswith(("AMX yes", "AMX no"))  # which CPU its seconds come from
    assert rows["uniform"]["kl"] > rows["prior"]["kl"]  # the train prior beats uniform on NLI
    assert rows["kl_ce_adv"]["train_seconds"] > 0 and rows["kl_ce_adv"]["n_train"] == 16
    assert rows["raw_temperature"]["temperature"] > 0
    # the perturbed-target study: delta 0 is the cell's own KL, from the saved items
    perturbed = {r["delta"]: r["kl"] for r in results["robustness"]
                 if r["study"] == "perturbed_test"}
    assert perturbed[0.0] == pytest.approx(rows["kl_ce_adv"]["kl"], rel=1e-9)
    assert len(perturbed) == len(quality.DELTAS)
    saved = json.loads(quality.items_path(output, rows["kl_ce_adv"]["key"]).read_text())
    assert np.allclose(np.sum(saved["q"], axis=1), 1, atol=1e-4)
    assert 0 < results["ceilings"]["chaosnli-snli"] < 1
    report = output.with_suffix(".md").read_text()
    assert "| chaosnli-snli | kl_ce_adv, 16 train items, tiny | 1 |" in report
    assert "## Targets" in report
    assert (output.parent / "quality_plots" / "kl_by_method.png").stat().st_size > 1000
    assert (output.parent / "quality_plots" / "reliability_entropy.png").is_file()

    capsys.readouterr()
    assert quality.main(argv) == 0  # a rerun redoes nothing
    assert capsys.readouterr().out.count("done before, skipped") == 4
    assert len(json.loads(output.read_text())["runs"]) == 4


def test_a_killed_cell_resumes_from_its_checkpoint(quality, tiny_model, tmp_path, monkeypatch,
                                                   capsys):
    monkeypatch.setattr(quality, "CHECKPOINT_STEPS", 1)
    task = quality.load_task("nli")
    cell = {"dataset": "chaosnli-snli", "method": "kl_ce", "backbone": "x", "seed": 0,
            "split": "test", "limit": 16, "settings": {"max_steps": 2}, "train_source": None,
            "pretrain": None, "annotators": None}
    items, _ = quality.cell_data(cell, task)
    run_dir = tmp_path / "cell"
    first = quality.fine_tune(cell, items, str(tiny_model), run_dir, "nli", task)
    assert first["global_steps"] == 2 and (run_dir / "checkpoint-2").is_dir()
    (run_dir / quality.RUN_FILE).unlink()  # as if killed after its checkpoint at step 2
    capsys.readouterr()
    again = quality.fine_tune({**cell, "settings": {"max_steps": 4}}, items, str(tiny_model),
                              run_dir, "nli", task)
    assert "resuming from" in capsys.readouterr().out
    assert again["global_steps"] == 4
    assert again["train_seconds"] > first["train_seconds"]  # the first part is counted too
    assert quality.fine_tune(cell, items, str(tiny_model), run_dir, "nli", task) == \
        json.loads((run_dir / quality.RUN_FILE).read_text())  # a finished stage is not redone


def test_annotator_subsampling_and_transfer_cells(quality):
    task = quality.load_task("nli")
    base = {"dataset": "chaosnli-snli", "method": "kl_ce", "backbone": "x", "seed": 0,
            "split": "test", "limit": 50, "settings": {}, "train_source": None,
            "pretrain": None, "annotators": 3}
    train_items, test_items = quality.cell_data(base, task)
    assert len(train_items) == 50
    assert all(sum(i["label_counts"].values()) == 3 for i in train_items)
    transfer, test2 = quality.cell_data({**base, "annotators": None,
                                         "train_source": "snli-nochaos"}, task)
    assert [i["id"] for i in test2] == [i["id"] for i in test_items]
    assert len(transfer) == 50 and all(i["source"] == "snli-nochaos" for i in transfer)
    assert not {i["id"] for i in transfer} & {i["id"] for i in test_items}
    whole, _ = quality.cell_data({**base, "annotators": None, "pretrain": "snli-nochaos"}, task)
    assert len(whole) > 50  # with pretraining, --limit samples the pretraining source only
    keys = {quality.cell_key(c) for c in (base, {**base, "annotators": 5},
                                          {**base, "train_source": "snli-nochaos"})}
    assert len(keys) == 3


def test_one_annotator_cells_run_once_for_all_methods(quality):
    args = quality.argparse.Namespace(
        sweeps=False, annotators="1,3", methods="single_point,kl_ce", datasets="dices",
        seeds="0", backbone="smollm2-135m", model=None, split="test", limit=None,
        train_source=None, pretrain=None)
    cells = quality.build_cells(args, {})
    assert [(c["method"], c["annotators"]) for c in cells] == [
        ("single_point", 1), ("single_point", 3), ("kl_ce", 3)]


def test_sweep_cells_train_and_judge_inside_the_train_split(quality):
    task = quality.load_task("nli")
    base = {"dataset": "chaosnli-snli", "method": "kl_ce_adv", "backbone": "x", "seed": 0,
            "split": "test", "limit": None, "settings": {}, "train_source": None,
            "pretrain": None, "annotators": None}
    train_items, test_items = quality.cell_data(base, task)
    dev_train, dev = quality.cell_data({**base, "split": "dev"}, task)
    train_ids, test_ids = {i["id"] for i in train_items}, {i["id"] for i in test_items}
    dev_train_ids, dev_ids = {i["id"] for i in dev_train}, {i["id"] for i in dev}
    assert dev_ids and dev_train_ids and not dev_ids & dev_train_ids
    assert dev_ids | dev_train_ids == train_ids  # carved from train: test never seen
    assert not (dev_ids | dev_train_ids) & test_ids
    assert 0.1 < len(dev_ids) / len(train_ids) < 0.3


@pytest.mark.parametrize("limit", [None, 400])  # all train items, or a --limit subsample
# a trained method also below ours: none, one below the prior too, or one between the two
@pytest.mark.parametrize("rival", [None, "below_prior", "above_prior"])
def test_targets_explain_a_judge_that_does_not_beat_the_prior(quality, tmp_path, limit, rival):
    import quality_report

    output = tmp_path / "quality.json"
    p = np.array([[0.9, 0.1], [0.5, 0.5], [0.1, 0.9]])
    prior, judge = np.tile([0.5, 0.5], (3, 1)), np.tile([0.55, 0.45], (3, 1))
    other = {"below_prior": np.array([[0.6, 0.4], [0.5, 0.5], [0.4, 0.6]]),
             "above_prior": np.tile([0.52, 0.48], (3, 1))}.get(rival)
    results = {"runs": [], "robustness": [], "sweeps": [], "ceilings": {}}
    methods = (("prior", prior), ("kl_ce", judge)) + ((("single_point", other),) if rival else ())
    for method, q in methods:
        row = {"dataset": "toy", "method": method, "seed": 0, "settings": {}, "limit": limit,
               "key": f"toy/{method}", "kl": float(quality.kl_divergence(p, q).mean())}
        if method == "kl_ce":
            row.update(train_loss_by_epoch=[0.52, 0.47], prior_train_loss=0.466,
                       prompts_cut={"n": 2, "of": 5, "max_length": 512})
        results["runs"].append(row)
        quality.save_items(quality.items_path(output, row["key"]), row, p, q, ["a", "b"])
    if limit:  # baselines on all train items too: that group points to the subsampled one
        results["runs"].append({**results["runs"][0], "limit": None, "key": "toy/prior/all"})
    lines = quality_report.targets(results, output)
    widest = "single_point" if rival == "below_prior" else "prior"
    assert any(f"NOT met: {widest}" in line for line in lines)
    assert any(line.endswith("checked on its own line.") for line in lines) == bool(limit)
    why = next(line for line in lines if "Why, measured" in line)
    assert ("kl_ce minus single_point" in why) == bool(rival)  # the trained rival's paired gap
    expected = quality_report.js_divergence(judge, prior).mean()
    assert f"judge {expected:.4f}" in why and "humans" in why
    assert "per epoch 0.520, 0.470; the prior's loss on the same training items 0.466" in why
    assert "(underfitting, not overfitting)" in why
    assert why.endswith("Cut to fit: 2 of 5 training prompts longer than 512 tokens; their "
                        "middle was dropped.")


def test_training_options_tried_are_listed_under_the_unmet_target(quality, tmp_path):
    import quality_report

    def row(method, kl, **extra):
        return {"dataset": "toy", "method": method, "seed": 0, "settings": {}, "limit": None,
                "key": f"toy/{method}/{extra}", "kl": kl, **extra}

    results = {"runs": [row("prior", 0.40), row("kl_ce", 0.41),
                        row("kl_ce", 0.405, settings={"num_train_epochs": 4},
                            train_loss_by_epoch=[0.48, 0.47], prior_train_loss=0.466,
                            prompts_cut={"n": 0, "of": 5, "max_length": 1024}),
                        row("kl_ce", 0.30, settings={"learning_rate": 1e-4}, limit=400),
                        row("kl_ce", 0.30, settings={"learning_rate": 1e-4}, backbone="other")],
               "robustness": [], "sweeps": [], "ceilings": {}}
    why = next(line for line in quality_report.targets(results, tmp_path / "quality.json")
               if "Why, measured" in line)
    assert why.endswith("Tried: kl_ce, num_train_epochs=4 0.405 on seed 0 (training loss per "
                        "epoch 0.480, 0.470 against the prior's 0.466, 0 of 5 training "
                        "prompts longer than 1024 tokens).")  # not the other splits


@pytest.mark.parametrize("limit", [None, 2000])
def test_fitted_temperature_is_reported_with_its_train_items(quality, tmp_path, limit):
    import quality_report

    row = {"dataset": "toy", "method": "raw_temperature", "seed": 0, "settings": {},
           "limit": limit, "key": "toy/raw_temperature", "kl": 0.8, "temperature": 99.9}
    lines = quality_report.targets({"runs": [row], "robustness": [], "sweeps": []},
                                   tmp_path / "quality.json")
    label = "toy (seed 0, 2000 train items)" if limit else "toy (seed 0)"
    assert f"- {label}: raw_temperature fitted T = 99.9 = the search bound" in "\n".join(lines)


def test_training_loss_per_epoch_and_the_priors_loss(quality):
    history = [{"loss": 0.9, "epoch": 0.1}, {"loss": 0.7, "epoch": 1.0},
               {"loss": 0.5, "epoch": 1.5}, {"eval_loss": 9.0, "epoch": 2.0},
               {"loss": 0.3, "epoch": 2.0}, {"train_runtime": 1.0, "epoch": 2.0}]
    assert quality.epoch_losses(history) == pytest.approx([0.8, 0.4])
    task = quality.load_task("nli")
    items = [{"label_counts": {"entailment": 3, "neutral": 1, "contradiction": 0}},
             {"label_counts": {"entailment": 0, "neutral": 2, "contradiction": 2}}]
    p = quality.count_distributions(items, task.label_names)
    prior = p.mean(0)
    cell = {"method": "kl", "settings": {}}  # alpha 1: the mean KL to the prior (numpy reference)
    expected = quality.kl_divergence(p, np.tile(prior, (2, 1))).mean()
    assert quality.prior_train_loss(cell, items, task) == pytest.approx(expected)
    ce = -np.log(prior[[0, 1]]).mean()  # majorities: entailment; the tie goes to neutral
    assert quality.prior_train_loss({**cell, "method": "kl_ce"}, items, task) == pytest.approx(
        0.8 * expected + 0.2 * ce)
    assert quality.prior_train_loss({**cell, "method": "kl_ce_adv"}, items, task) is None


def test_an_unmet_reduction_target_says_where_the_kl_stays(quality, tmp_path):
    import quality_report

    output = tmp_path / "quality.json"
    p = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8]])
    single = np.array([[0.5, 0.3, 0.2], [0.2, 0.6, 0.2], [0.3, 0.5, 0.2], [0.2, 0.2, 0.6]])
    ours = np.array([[0.7, 0.2, 0.1], [0.3, 0.5, 0.2], [0.3, 0.6, 0.1], [0.2, 0.2, 0.6]])
    results = {"runs": [], "robustness": [], "sweeps": [], "ceilings": {}}
    for method, q in (("single_point", single), ("kl_ce", ours)):
        row = {"dataset": "snli", "method": method, "seed": 0, "limit": 4,
               "key": f"snli/{method}/4", "kl": float(quality.kl_divergence(p, q).mean())}
        results["runs"].append(row)
        quality.save_items(quality.items_path(output, row["key"]), row, p, q, ["e", "n", "c"])
    lines = quality_report.targets(results, output)
    target = next(i for i, line in enumerate(lines) if "reduction over single point" in line)
    assert "NOT met" in lines[target] and lines[target + 1].startswith("  Why, measured (seed 0):")
    kl = quality.kl_divergence(p, ours)  # ours misses the majority on item 1 only
    why = lines[target + 1]
    assert f"kl_ce KL {kl[[0, 2, 3]].mean():.3f} on the 75.0% of items" in why
    assert f"{kl[1]:.3f} on the rest ({100 * kl[1] / kl.sum():.0f}% of its KL)" in why
    assert "less confident than the humans" in why  # single point's top share 0.55 < 0.725


def test_each_summeval_criterion_is_set_beside_the_papers_pooled_summeval(quality, tmp_path):
    """The paper pools SummEval's four criteria: any criterion run gets its reduction target;
    datasets not run get no line."""
    import quality_report

    runs = [{"dataset": "summeval-fluency", "method": m, "seed": 0, "settings": {}, "kl": kl,
             "key": m} for m, kl in (("single_point", 0.5), ("kl_ce", 0.3))]
    lines = quality_report.targets({"runs": runs, "robustness": [], "sweeps": []},
                                   tmp_path / "quality.json")
    reductions = [line for line in lines if "reduction over single point" in line]
    assert reductions == ["- summeval-fluency (all train items): KL reduction over single point "
                          "40% (paper 27%): met."]


def test_a_training_option_tried_gets_its_own_reduction_over_single_point(quality, tmp_path):
    """Where single point and ours both ran with the same --set option, the reduction with that
    option follows the plain target; an option only one side ran, or another backbone, adds none."""
    import quality_report

    def row(method, kl, settings, **extra):
        return {"dataset": "summeval-consistency", "method": method, "seed": 0, "limit": 400,
                "settings": settings, "kl": kl, "key": f"{method}/{settings}/{extra}", **extra}

    long = {"max_length": 1024}
    runs = [row("single_point", 0.50, {}), row("kl_ce", 0.45, {}),
            row("single_point", 0.50, long), row("kl_ce", 0.40, long),
            row("kl", 0.30, {"learning_rate": 1e-4}),
            row("single_point", 0.9, {"learning_rate": 1e-4}, backbone="other")]
    lines = quality_report.targets({"runs": runs, "robustness": [], "sweeps": []},
                                   tmp_path / "quality.json")
    start = next(i for i, line in enumerate(lines) if "reduction over single point" in line)
    assert lines[start].startswith("- summeval-consistency (trained on 400 items): KL reduction "
                                   "over single point 10% (paper 27%): NOT met.")
    tried = [line for line in lines if line.startswith("  Tried ")]
    assert tried == ["  Tried max_length=1024 (trained on 400 items): KL reduction of kl_ce over "
                     "single point with the same setting 20% (kl_ce 0.400, single point 0.500; "
                     "default settings on the same seeds: kl_ce 0.450, single point 0.500)."]


def test_a_tried_reduction_sits_under_the_target_of_its_own_train_set_size(quality, tmp_path):
    """With targets at 2000 and 4000 items, an option tried at 2000 items follows the 2000-item
    target and its reason, not the last target of the dataset."""
    import quality_report

    def row(method, kl, limit, settings=None):
        return {"dataset": "snli", "method": method, "seed": 0, "limit": limit,
                "settings": settings or {}, "kl": kl, "key": f"{method}/{limit}/{settings}"}

    runs = [row("single_point", 0.7, 2000), row("kl_ce", 0.4, 2000),
            row("single_point", 0.6, 4000), row("kl_ce", 0.3, 4000),
            row("single_point", 1.0, 2000, {"num_train_epochs": 3}),
            row("kl_ce", 0.5, 2000, {"num_train_epochs": 3})]
    lines = quality_report.targets({"runs": runs, "robustness": [], "sweeps": []},
                                   tmp_path / "quality.json")
    lines = lines[next(i for i, line in enumerate(lines) if "reduction over single" in line):]
    assert [line[:30] for line in lines[:5]] == [
        "- snli (trained on 2000 items)", "  Why, measured (seed 0): per-",
        "  Tried num_train_epochs=3 (tr", "- snli (trained on 4000 items)",
        "  Why, measured (seed 0): per-"]


def test_a_tried_reduction_gives_no_default_kls_where_its_seed_has_no_default_cell(quality):
    """The default-settings figures are means over the tried option's seeds; a seed the default
    cells lack leaves them out rather than comparing other seeds."""
    import quality_report

    plain = {("snli", 2000, "kl_ce"): {0: 0.43}, ("snli", 2000, "single_point"): {0: 0.70}}
    tried = {("snli", 2000, "kl_ce"): {0: 0.47}, ("snli", 2000, "single_point"): {0: 1.15}}
    assert quality_report.default_kls(plain, tried, ("snli", 2000), "kl_ce") == \
        "; default settings on the same seeds: kl_ce 0.430, single point 0.700"
    tried = {key: {1: kl} for key, by_seed in tried.items() for kl in by_seed.values()}
    assert quality_report.default_kls(plain, tried, ("snli", 2000), "kl_ce") == ""
    unpaired = {("snli", 2000, "kl_ce"): {0: 0.47}, ("snli", 2000, "single_point"): {1: 1.15}}
    assert quality_report.default_kls(plain, unpaired, ("snli", 2000), "kl_ce") == ""


def test_a_reduction_that_rounds_to_zero_is_not_written_minus_zero(quality):
    import quality_report

    assert [quality_report.percent(x) for x in (-0.0001, 0.0001, -0.2, 0.104)] == \
        ["0%", "0%", "-20%", "10%"]


def test_main_table_shows_multi_vote_items_and_the_papers_transfer_figure(quality):
    import quality_report

    base = {"seed": 0, "settings": {}, "jsd": 0.1, "ece": 0.1, "n_test": 10, "n_train": 40}
    runs = [{**base, "dataset": "mt-bench", "method": "prior", "key": "m", "kl": 0.9, "acc": 0.4,
             "votes_ge_2": {"n": 6, "kl": 0.8, "acc": 0.5}},
            {**base, "dataset": "chaosnli-snli", "method": "kl_ce_adv", "key": "t", "kl": 0.4,
             "acc": 0.6, "train_source": "snli-nochaos", "limit": 40}]
    results = {"runs": runs, "robustness": [], "sweeps": [], "ceilings": {}}
    multi = quality_report.multi_vote_table(results)
    assert "| mt-bench | prior | 1 | 6 | 0.800 | 50.0% |" in multi
    table = "\n".join(quality_report.main_table(results))
    row = "| chaosnli-snli | kl_ce_adv, trained on snli-nochaos (40 items) only | 1 | 0.400 |"
    assert row in table
    assert "*paper: SNLI → ChaosNLI, Qwen2.5-7B, Table 6* | 5 | 0.31 |" in table
    assert quality_report.multi_vote_table({**results, "runs": runs[1:]}) == []


def test_a_trained_rival_is_weighed_against_the_spread_over_seeds(quality, tmp_path):
    import quality_report

    output = tmp_path / "quality.json"
    p = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    runs = []
    for method, seed, kl in (("kl", 0, 0.10), ("kl", 1, 0.12), ("kl_ce_adv", 0, 0.09),
                             ("kl_ce_adv", 1, 0.17)):
        runs.append({"dataset": "toy", "method": method, "seed": seed, "settings": {},
                     "key": f"toy/{method}/{seed}", "kl": kl})
    q = {"kl": np.array([[0.7, 0.3], [0.6, 0.4], [0.4, 0.6]]),
         "kl_ce_adv": np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]])}
    for row in runs[::2]:  # seed 0 cells
        quality.save_items(quality.items_path(output, row["key"]), row, p, q[row["method"]],
                           ["a", "b"])
    results = {"runs": runs, "robustness": [], "sweeps": [], "ceilings": {}}
    lines = quality_report.targets(results, output)
    assert any("NOT met: kl has 0.110" in line for line in lines)
    why = next(line for line in lines if "Why, measured" in line)
    assert "seed 0 -0.0100, seed 1 +0.0500" in why and "mean gap 0.0200" in why
    assert f"sd over seeds {np.std([0.09, 0.17], ddof=1):.4f}" in why
    missed = quality.kl_divergence(p, q["kl_ce_adv"])[1]  # it misses item 1's majority only
    assert "top-label share kl 0.633, kl_ce_adv 0.767, humans 0.700" in why
    assert f"kl (misses none), kl_ce_adv {missed:.3f}." in why
    paired = quality.kl_divergence(p, q["kl_ce_adv"]) - quality.kl_divergence(p, q["kl"])
    se = paired.std(ddof=1) / np.sqrt(paired.size)
    assert (f"kl_ce_adv minus kl (± standard error): seed 0, 3 items: {paired.mean():+.4f} ± "
            f"{se:.4f}, ") in why and "seed 1, " not in why  # seed 1 saved no items
    assert ("does not tell the two apart" in why) == (abs(paired.mean()) < 2 * se)
    one_seed = quality_report.targets({**results, "runs": runs[1::2]}, output)
    why = next(line for line in one_seed if "Why, measured" in line)
    assert "(one seed of kl_ce_adv: no sd over seeds)" in why and "nan" not in why


def test_a_consistent_paired_gap_is_called_beyond_two_standard_errors(quality, tmp_path):
    import quality_report

    output = tmp_path / "quality.json"
    p = np.tile([0.7, 0.3], (20, 1))
    q = {"kl": p.copy(), "kl_ce": np.tile([0.9, 0.1], (20, 1)) + np.linspace(0, 0.05, 20)[:, None]
         * np.array([1, -1])}  # worse on every item, by slightly different amounts
    runs = []
    for method in q:
        row = {"dataset": "toy", "method": method, "seed": 0, "settings": {},
               "key": f"toy/{method}", "kl": float(quality.kl_divergence(p, q[method]).mean())}
        runs.append(row)
        quality.save_items(quality.items_path(output, row["key"]), row, p, q[method], ["a", "b"])
    lines = quality_report.targets({"runs": runs, "robustness": [], "sweeps": [],
                                    "ceilings": {}}, output)
    why = next(line for line in lines if "Why, measured" in line)
    assert "seed 0, 20 items:" in why and ", beyond two standard errors." in why
    assert "does not tell the two apart" not in why


def test_a_met_target_names_the_closest_method_and_the_paired_gap_per_seed(quality, tmp_path):
    import quality_report

    output = tmp_path / "quality.json"
    p = np.array([[0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])
    q = {"kl_ce": np.array([[0.7, 0.3], [0.6, 0.4], [0.4, 0.6]]),
         "single_point": np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8]]), "prior": None}
    runs = []
    for seed in (0, 1):
        for method, kl in (("kl_ce", 0.10), ("single_point", 0.12), ("prior", 0.30)):
            row = {"dataset": "toy", "method": method, "seed": seed, "settings": {},
                   "key": f"toy/{method}/{seed}", "kl": kl}
            runs.append(row)
            if q[method] is not None:  # seed 1's items: seed 0's, each item twice
                quality.save_items(quality.items_path(output, row["key"]), row,
                                   np.tile(p, (seed + 1, 1)), np.tile(q[method], (seed + 1, 1)),
                                   ["a", "b"])
    lines = quality_report.targets({"runs": runs, "robustness": [], "sweeps": [],
                                    "ceilings": {}}, output)
    met = next(line for line in lines if "lowest of all: met." in line)
    paired = quality.kl_divergence(p, q["kl_ce"]) - quality.kl_divergence(p, q["single_point"])
    se = [np.tile(paired, n).std(ddof=1) / np.sqrt(3 * n) for n in (1, 2)]
    assert abs(paired.mean()) < 2 * se[0] and abs(paired.mean()) > 2 * se[1]  # more items
    assert met.endswith(f"Closest other method: single_point 0.120. Paired over each seed's test "
                        f"items, kl_ce minus single_point (± standard error): seed 0, 3 items: "
                        f"{paired.mean():+.4f} ± {se[0]:.4f}, within two standard errors; "
                        f"seed 1, 6 items: {paired.mean():+.4f} ± {se[1]:.4f}, beyond two "
                        "standard errors. Within two standard errors, that seed's test set does "
                        "not tell the two apart.")


def test_the_paired_gap_is_split_by_one_hot_human_distributions(quality):
    import quality_report

    p = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.6, 0.4], [0.5, 0.5]])
    paired = np.array([0.03, 0.01, 0.02, -0.01, -0.03])  # ours minus rival, per item
    text = quality_report.one_hot_split(p, paired, "kl_ce", "single_point")
    assert text.startswith(" 60% of the test items have a one-hot human distribution")
    one_hot_se = np.std([0.03, 0.01, 0.02], ddof=1) / np.sqrt(3)
    split_se = np.std([-0.01, -0.03], ddof=1) / np.sqrt(2)
    assert f"kl_ce minus single_point +0.0200 ± {one_hot_se:.4f} there" in text
    assert f"-0.0200 ± {split_se:.4f} on the 2 items the annotators split." in text
    assert quality_report.one_hot_split(p[3:], paired[3:], "kl_ce", "kl") == ""  # none one-hot
    assert quality_report.one_hot_split(p[:3], paired[:3], "kl_ce", "kl") == ""  # all one-hot


def test_still_to_run_lists_what_the_issue_asks_and_the_rows_lack(quality):
    import quality_report

    runs = [{"dataset": d, "method": m, "seed": s, "settings": {}, "kl": 0.1}
            for d in quality_report.ISSUE_DATASETS for m in quality_report.ORDER for s in range(3)
            if (d, m) != ("mt-bench", "kl") and (d, m, s) != ("dices", "kl_ce_adv", 2)]
    runs.append({"dataset": "chaosnli-snli", "method": "kl_ce", "seed": 0, "settings": {},
                 "kl": 0.1, "backbone": "gemma3-270m"})
    robustness = [{"dataset": "dices", "method": "kl_ce", "annotators": k, "kl": 0.1}
                  for k in (1, 3)]
    sweeps = [{"dataset": "chaosnli-snli", "settings": {"alpha": 0.8, "epsilon": 0.25},
               "kl": 0.1}]
    lines = quality_report.still_to_run({"runs": runs, "robustness": robustness,
                                         "sweeps": sweeps})
    assert lines == [
        "- mt-bench: kl not run.",
        "- dices: 3 seeds asked; seeds run: kl_ce_adv 2.",
        "- robustness (a), k annotators per item: 20 of 24 cells not run: chaosnli-snli "
        "single_point k=1,3,5,10; chaosnli-snli kl_ce k=1,3,5,10; chaosnli-snli kl_ce_adv "
        "k=1,3,5,10; dices single_point k=3,5,10; dices kl_ce k=5,10; dices kl_ce_adv k=3,5,10 "
        f"(2 more at k=1 {quality_report.ONE_ANNOTATOR_NOTE}).",
        "- sweeps on chaosnli-snli's dev split: α 0.5 ε 0.25, α 1.0 ε 0.25, α 0.8 ε 0.0, "
        "α 0.8 ε 0.1 not run.",
    ]


def test_targets_compare_methods_on_the_seeds_both_ran(quality, tmp_path):
    """A second seed's easier split must not let ours win against a rival run on seed 0 only."""
    import quality_report

    runs = [{"dataset": "chaosnli-snli", "method": m, "seed": s, "settings": {}, "kl": kl,
             "key": f"c/{m}/{s}"}
            for m, s, kl in (("prior", 0, 0.40), ("kl_ce_adv", 0, 0.42), ("kl_ce_adv", 1, 0.30))]
    lines = quality_report.targets({"runs": runs, "robustness": [], "sweeps": []},
                                   tmp_path / "quality.json")
    assert lines[0].startswith("- chaosnli-snli: ours best kl_ce_adv 0.360 (2 seeds)")
    assert "NOT met: prior has 0.400 against 0.420 on seed 0." in lines[0]
    below = next(line for line in lines if "20% below the prior" in line)
    assert "best of ours 0.420 (kl_ce_adv) (on seed 0, the ones every method has)" in below


def test_ours_best_is_chosen_on_the_seeds_both_of_ours_ran(quality, tmp_path):
    """kl_ce on a second, harder split must not lose the pick to kl_ce_adv run on seed 0 only."""
    import quality_report

    runs = [{"dataset": "chaosnli-anli", "method": m, "seed": s, "settings": {}, "kl": kl,
             "key": f"c/{m}/{s}"}
            for m, s, kl in (("kl", 0, 0.380), ("kl_ce", 0, 0.391), ("kl_ce", 1, 0.401),
                             ("kl_ce_adv", 0, 0.393))]
    lines = quality_report.targets({"runs": runs, "robustness": [], "sweeps": []},
                                   tmp_path / "quality.json")
    assert lines[0].startswith("- chaosnli-anli: ours best kl_ce 0.396 (2 seeds)")
    assert "NOT met: kl has 0.380 against 0.391 on seed 0." in lines[0]


def test_best_variant_against_the_prior_is_chosen_on_shared_seeds(quality, tmp_path):
    """A variant with an easy second split must not beat one run on seed 0 only by its mean."""
    import quality_report

    runs = [{"dataset": "chaosnli-snli", "method": m, "seed": s, "settings": {}, "kl": kl,
             "key": f"c/{m}/{s}/{pre}", **({"pretrain": pre, "limit": 1000} if pre else {})}
            for m, s, kl, pre in (("prior", 0, 0.50, None), ("prior", 1, 0.50, None),
                                  ("kl_ce", 0, 0.40, None), ("kl_ce", 1, 0.30, None),
                                  ("kl_ce", 0, 0.38, "snli-nochaos"))]
    lines = quality_report.targets({"runs": runs, "robustness": [], "sweeps": []},
                                   tmp_path / "quality.json")
    below = next(line for line in lines if "20% below the prior" in line)
    assert below.startswith("- chaosnli-snli: best of ours 0.380 (kl_ce, after snli-nochaos")


def test_adversarial_effect_is_paired_per_condition_and_seed(quality, tmp_path):
    """kl_ce_adv against kl_ce: clean test, most-perturbed targets and k annotators, each on
    the seeds both ran; an unpaired seed does not enter the mean."""
    import quality_report

    def row(method, seed, kl, **extra):
        return {"dataset": "dices", "method": method, "seed": seed, "settings": {}, "kl": kl,
                **extra}

    runs = [row("kl_ce", 0, 0.050), row("kl_ce_adv", 0, 0.040), row("kl_ce_adv", 1, 0.010),
            row("kl_ce", 1, 0.060)]
    robustness = [row("kl_ce", 0, 0.20, study="perturbed_test", delta=0.25),
                  row("kl_ce_adv", 0, 0.15, study="perturbed_test", delta=0.25),
                  row("kl_ce_adv", 0, 0.04, study="perturbed_test", delta=0.0),
                  row("kl_ce", 0, 0.30, annotators=1), row("kl_ce_adv", 0, 0.35, annotators=1),
                  row("kl_ce_adv", 2, 0.01, annotators=1)]
    for r in runs + robustness[3:]:  # items saved by the test cells and the k=1 ones
        r["key"] = f"dices/{r['method']}/{r['seed']}/{r.get('annotators')}"
        flat = r["method"] == "kl_ce_adv" and not r.get("annotators")
        p, q = np.array([[0.5, 0.5]]), np.array([[0.5, 0.5] if flat else [0.9, 0.1]])
        path = quality_report.items_path(tmp_path / "quality.json", r["key"])
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({"p": p.tolist(), "q": q.tolist()}))
    lines = quality_report.adversarial_table({"runs": runs, "robustness": robustness,
                                              "sweeps": []}, tmp_path / "quality.json")
    table = [line for line in lines if line.startswith("| dices")]
    ln2, h9 = f"{np.log(2):.3f}", f"{-(0.9 * np.log(0.9) + 0.1 * np.log(0.1)):.3f}"
    gap = f"{-(0.5 * np.log(0.5 / 0.9) + 0.5 * np.log(0.5 / 0.1)):+.3f}"  # 0 - KL(p‖q_plain)
    assert table == [
        f"| dices | test | 0, 1 | 0.055 | 0.025 | -0.030 | 0: {gap}; 1: {gap} | {h9} | {ln2} | "
        f"{ln2} |",
        "| dices | test targets moved by δ=0.25 | 0 | 0.200 | 0.150 | -0.050 | - | - | - | - |",
        f"| dices | trained on k=1 annotators per item | 0 | 0.300 | 0.350 | +0.050 | 0: +0.000 | "
        f"{h9} | {h9} | {ln2} |",
    ]
    summary = next(line for line in lines if line.startswith("kl_ce_adv is lower"))
    assert "lower in 2 of 3 comparisons; higher in: dices (trained on k=1 annotators per item)" \
        in summary
    assert ("flatter (higher H) than kl_ce's in 1 of 2 comparisons with saved items. Beyond two "
            "standard errors of the paired per-item gap on some seed, kl_ce_adv is lower in 0 "
            "(none) and higher in 0 (none)") in summary  # one item per cell: no standard error
    assert "kl_ce 0.007 on dices, kl_ce_adv 0.021 on dices" in summary


def test_adversarial_paired_gap_is_starred_beyond_two_standard_errors(quality, tmp_path):
    """The paired column: per seed, kl_ce_adv minus kl_ce per item with its standard error,
    starred beyond two; the summary names where it is beyond, in which direction."""
    import quality_report

    p, flat = np.array([[0.8, 0.2], [0.75, 0.25], [0.8, 0.2], [0.7, 0.3]]), np.full(2, 0.5)
    qs = {("kl_ce", 0): np.full((4, 2), 0.5), ("kl_ce_adv", 0): p,  # adv exact: clearly lower
          ("kl_ce", 1): np.array([p[0], flat, p[2], flat]),  # each exact on half: a wash
          ("kl_ce_adv", 1): np.array([flat, p[1], flat, p[3]])}
    runs = []
    for (method, seed), q in qs.items():
        runs.append({"dataset": "dices", "method": method, "seed": seed, "settings": {},
                     "kl": float(quality_report.kl_divergence(p, q).mean()),
                     "key": f"{method}/{seed}"})
        path = quality_report.items_path(tmp_path / "quality.json", runs[-1]["key"])
        path.parent.mkdir(exist_ok=True)
        path.write_text(json.dumps({"p": p.tolist(), "q": q.tolist()}))
    lines = quality_report.adversarial_table({"runs": runs, "robustness": [], "sweeps": []},
                                             tmp_path / "quality.json")
    gaps = {s: quality_report.kl_divergence(p, qs[("kl_ce_adv", s)])
            - quality_report.kl_divergence(p, qs[("kl_ce", s)]) for s in (0, 1)}
    cells = [f"{s}: {g.mean():+.3f} ± {g.std(ddof=1) / 2:.3f}" for s, g in gaps.items()]
    assert abs(gaps[0].mean()) > 2 * gaps[0].std(ddof=1) / 2  # the data are what they claim
    assert abs(gaps[1].mean()) < 2 * gaps[1].std(ddof=1) / 2
    row = next(line for line in lines if line.startswith("| dices | test |"))
    assert f"| {cells[0]}*; {cells[1]} |" in row
    assert lines[-2].endswith("kl_ce_adv is lower in 1 (dices (test)) and higher in 0 (none); "
                              "the rest are within noise.")


def test_two_standard_errors_is_one_rule_for_every_paired_gap(quality):
    """One rule for the targets' verdicts and the adversarial stars: an exact tie is never
    beyond, a constant nonzero gap always is, one item has no standard error."""
    import quality_report

    assert quality_report.beyond_two_se(np.zeros(5)) == (0.0, False)
    assert quality_report.beyond_two_se(np.full(5, 0.01)) == (0.0, True)
    assert quality_report.beyond_two_se(np.array([0.3])) == (None, False)
    assert quality_report.beyond_two_se(np.array([0.1, -0.1, 0.2]))[1] is False
    assert quality_report.mean_and_se(np.array([0.3]), 3) == ("+0.300", False)
    assert quality_report.mean_and_se(np.full(3, -0.01), 3) == ("-0.010 ± 0.000", True)
    verdict = quality_report.paired_verdicts({0: np.zeros(4), 1: np.full(4, -0.02)}, "a", "b")
    assert ("seed 0, 4 items: +0.0000 ± 0.0000, within two standard errors; seed 1, 4 items: "
            "-0.0200 ± 0.0000, beyond two standard errors.") in verdict


def test_adversarial_ties_explain_one_hot_targets_only_where_k_is_1(quality):
    """A tie at k=1 says why (one-hot targets); a tie elsewhere is listed without that reason."""
    import quality_report

    robustness = [{"dataset": "dices", "method": m, "seed": 0, "settings": {}, "kl": kl,
                   "annotators": k}
                  for k in (1, 10) for m, kl in (("kl_ce", 0.0820), ("kl_ce_adv", 0.0822))]
    lines = quality_report.adversarial_table({"runs": [], "robustness": robustness,
                                              "sweeps": []})
    summary = next(line for line in lines if line.startswith("kl_ce_adv is lower"))
    assert ("the same (within 5e-4) in: dices (trained on k=1 annotators per item) (one-hot "
            "targets: the ascent cannot leave the simplex's vertex, so ε changes nothing); "
            "dices (trained on k=10 annotators per item). For scale") in summary


def test_a_second_backbone_is_set_beside_the_default_on_shared_seeds(quality):
    """Each method on another backbone beside the default backbone's same method, on the seeds
    both ran, with the prior of those seeds; an unpaired method shows its own seeds alone."""
    import quality_report

    def row(method, seed, kl, backbone="smollm2-135m"):
        return {"dataset": "chaosnli-snli", "method": method, "seed": seed, "settings": {},
                "kl": kl, "backbone": backbone}

    runs = [row("prior", 0, 0.50), row("prior", 1, 0.40), row("kl_ce", 0, 0.30),
            row("kl_ce", 1, 0.20), row("kl_ce", 0, 0.35, "gemma3-270m"),
            row("raw", 2, 0.90, "gemma3-270m")]
    lines = quality_report.backbone_table({"runs": runs, "robustness": [], "sweeps": []})
    assert lines[2:4] == [
        "| chaosnli-snli | gemma3-270m | raw | 2 | 0.900 | - | - |",
        "| chaosnli-snli | gemma3-270m | kl_ce | 0 | 0.350 | 0.300 | 0.500 |",
    ]
    assert quality_report.backbone_table({"runs": runs[:4]}) == ["Not run yet.", ""]


def test_a_second_backbone_says_which_method_is_lowest_and_its_cut_over_single_point(quality):
    """On another backbone: its methods ranked with the weight-free label baselines, on the
    seeds all share; ours' reduction over single point beside the default backbone's on the
    seeds single point ran on the other backbone."""
    import quality_report

    def row(method, seed, kl, backbone="smollm2-135m"):
        return {"dataset": "chaosnli-snli", "method": method, "seed": seed, "settings": {},
                "kl": kl, "backbone": backbone}

    runs = [row("prior", 0, 0.48), row("prior", 1, 0.40), row("single_point", 0, 0.50),
            row("single_point", 1, 0.30), row("kl_ce", 0, 0.40), row("kl_ce", 1, 0.10),
            row("single_point", 0, 0.60, "gemma3-270m"), row("kl_ce", 0, 0.45, "gemma3-270m"),
            row("kl_ce_adv", 0, 0.42, "gemma3-270m")]
    lines = quality_report.backbone_table({"runs": runs})
    assert ("- chaosnli-snli on gemma3-270m (on seed 0, the ones every method has): lowest KL: "
            "ours (kl_ce_adv 0.420, kl_ce 0.450, prior 0.480, single_point 0.600). KL reduction "
            "of ours over single point: gemma3-270m 30%, smollm2-135m 20% (on the seeds single "
            "point ran on gemma3-270m).") in lines
    runs[-1] = row("kl_ce_adv", 0, 0.70, "gemma3-270m")
    runs[-2] = row("kl_ce", 0, 0.65, "gemma3-270m")
    assert any(line.startswith("- chaosnli-snli on gemma3-270m (on seed 0, the ones every method "
                               "has): lowest KL: NOT ours (prior 0.480, single_point 0.600")
               for line in quality_report.backbone_table({"runs": runs}))


def test_robustness_rows_say_their_seeds_and_pair_k_all_with_them(quality):
    """(a): the k=all column is the plain cell on the seeds the k columns ran, not on every
    seed; (b): each row lists the seeds it averages."""
    import quality_report

    def row(seed, kl, **extra):
        return {"dataset": "dices", "method": "kl_ce", "seed": seed, "settings": {}, "kl": kl,
                **extra}

    runs = [row(0, 0.30), row(1, 0.10)]
    robustness = [row(0, 0.50, annotators=1), row(0, 0.40, annotators=3),
                  row(0, 0.20, study="perturbed_test", delta=0.0),
                  row(1, 0.40, study="perturbed_test", delta=0.0)]
    lines = quality_report.robustness_tables({"runs": runs, "robustness": robustness})
    assert "| dices | kl_ce | 0 | 0.500 | 0.400 | 0.300 |" in lines
    # k=1: one annotator per item makes every robustness method train the same loss
    assert "| dices | single_point | 0 | 0.500† | - | - |" in lines
    assert "| dices | kl_ce_adv | 0 | 0.500† | - | - |" in lines
    assert "| dices | kl_ce | 0, 1 | 0.300 |" in lines


def test_sweeps_table_names_the_lowest_dev_kl_beside_the_papers_setting(quality):
    import quality_report

    sweeps = [{"dataset": "chaosnli-snli", "settings": {"alpha": a, "epsilon": e}, "kl": kl,
               "acc": 0.5} for a, e, kl in [(0.8, 0.25, 0.40), (0.5, 0.25, 0.38),
                                            (0.5, 0.25, 0.36), (1.0, 0.25, 0.41)]]
    lines = quality_report.sweeps_table({"sweeps": sweeps})
    assert "| chaosnli-snli | 0.5 | 0.25 | 2 | 0.370 ± 0.014 | 50.0 ± 0.0% |" in lines
    assert ("- chaosnli-snli: lowest dev KL at α 0.5, ε 0.25 (0.370); "
            "the paper's α 0.8, ε 0.25: 0.400.") in lines
