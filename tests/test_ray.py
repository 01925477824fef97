"""`--engine ray` on a local 2-CPU Ray cluster with the tiny model: the same rows as the local
judge, a worker killed mid-run loses and duplicates nothing, errors are one line, no Ray needed
for the error that names the extra. Skips without `pip install distjudge[ray]`."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import read_chaosnli, write_jsonl, write_parquet

from distjudge.cli import main as cli_main
from distjudge.data import DataError
from distjudge.judge import Judge
from distjudge.task import load_task

pytestmark = pytest.mark.filterwarnings("ignore")
FLOAT_FIELDS = ("entropy", "label_mass")
TOLERANCE = 1e-6
BUSY_TITLE = b"ray::MapWorker(MapBatches(JudgeActor)).submit"


@pytest.fixture(scope="module")
def ray_cluster():
    ray = pytest.importorskip("ray", reason="pip install distjudge[ray]")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def items() -> list[dict]:
    """12 real items; two without an id, so both engines must number them by line."""
    rows = read_chaosnli(12)
    for row in rows[3], rows[8]:
        del row["id"]
    return rows


@pytest.fixture(scope="module")
def input_path(tmp_path_factory, items) -> Path:
    jsonl = write_jsonl(tmp_path_factory.mktemp("ray-inputs") / "items.jsonl", items)
    text = jsonl.read_text().splitlines(keepends=True)  # a blank line shifts the line numbers
    jsonl.write_text("".join(text[:5] + ["\n"] + text[5:]))
    return jsonl


def local_judge(tiny_model, input_path: Path, output_path: Path) -> list[dict]:
    """The single-process judge's rows (other chunk and batch boundaries than the Ray run)."""
    judge = Judge.from_pretrained(str(tiny_model), "nli", batch_size=4)
    judge.judge_file(input_path, output_path, chunk_size=5, progress=False)
    return read_rows(output_path)


def read_rows(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
        return [{k: v for k, v in row.items() if v is not None} for row in rows]
    return [json.loads(line) for line in path.read_text().splitlines()]


def assert_same_rows(ray_rows: list[dict], local: list[dict]) -> None:
    """Same ids in the same order, same fields; floats within TOLERANCE."""
    assert [r["id"] for r in ray_rows] == [r["id"] for r in local]
    worst = 0.0
    for a, b in zip(ray_rows, local):
        assert a.keys() == b.keys()
        assert a["distribution"].keys() == b["distribution"].keys()
        diffs = [abs(a["distribution"][k] - b["distribution"][k]) for k in a["distribution"]]
        diffs += [abs(a[k] - b[k]) for k in FLOAT_FIELDS]
        worst = max(worst, *diffs)
        exact = [k for k in a if k not in (*FLOAT_FIELDS, "distribution")]
        assert {k: a[k] for k in exact} == {k: b[k] for k in exact}
    print(f"max |ray - local| = {worst:.3g}")
    assert worst <= TOLERANCE


def ray_judge(ray_cluster, input_path, output_path, model, **kwargs) -> dict:
    from distjudge.ray_engine import judge_with_ray

    options = dict(model=str(model), batch_size=4, chunk_size=3, num_workers=2, progress=False)
    options.update(kwargs)
    return judge_with_ray(input_path, output_path, load_task("nli"), **options)


def test_same_rows_as_local_judge(ray_cluster, tmp_path, tiny_model, input_path):
    local = local_judge(tiny_model, input_path, tmp_path / "local.jsonl")
    output = tmp_path / "judged.jsonl"
    summary = ray_judge(ray_cluster, input_path, output, tiny_model)
    assert summary["items"] == 12 and summary["num_workers"] == 2
    rows = read_rows(output)
    assert rows[3]["id"] == "row-4" and rows[8]["id"] == "row-10"  # line numbers, blank counted
    assert_same_rows(rows, local)
    signature = json.loads((tmp_path / "judged.jsonl.signature.json").read_text())
    local_signature = json.loads((tmp_path / "local.jsonl.signature.json").read_text())
    assert signature["engine"] == "ray"
    assert signature["model"] == local_signature["model"]
    assert signature["label_token_ids"] == local_signature["label_token_ids"]
    assert sorted(p.name for p in tmp_path.glob("judged*")) == ["judged.jsonl",
                                                               "judged.jsonl.signature.json"]


def busy_judge_actors() -> list[int]:
    """Pids of judge actors running a block now: Ray titles them ``ray::<actor>.submit``."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and (proc / "cmdline").read_bytes().startswith(BUSY_TITLE):
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="finds actors through /proc")
def test_killed_worker_loses_and_duplicates_nothing(ray_cluster, tmp_path, tiny_model):
    """Parquet in and out, 120 items in 8 blocks, one worker: a watcher SIGKILLs the actor's
    process while it judges a block. Ray restarts the actor in a new process (same actor id),
    which judges the killed block again and the blocks after it."""
    items = read_chaosnli(120, start=200)
    input_path = write_parquet(tmp_path / "items.parquet", items)
    killed, seen, done = [], [], threading.Event()

    def kill_a_busy_actor() -> None:
        while not killed and not done.is_set():
            killed.extend(busy_judge_actors()[:1])
            if killed:
                os.kill(killed[0], signal.SIGKILL)
            time.sleep(0.002)

    watcher = threading.Thread(target=kill_a_busy_actor, daemon=True)
    watcher.start()
    output = tmp_path / "judged.parquet"
    try:
        ray_judge(ray_cluster, input_path, output, tiny_model, num_workers=1, chunk_size=16,
                  on_batch=lambda written, workers: seen.__setitem__(slice(None), workers))
    finally:
        done.set()
        watcher.join()
    assert killed, "no block was running while the watcher looked"
    local = local_judge(tiny_model, input_path, tmp_path / "local.jsonl")
    assert [row["id"] for row in local] == [item["id"] for item in items]
    assert_same_rows(read_rows(output), local)  # each row once, in input order
    assert len({w["actor"] for w in seen}) == 1  # one actor throughout ...
    assert {w["pid"] for w in seen} - set(killed)  # ... restarted in a new process


def test_bad_row_in_uri_input_names_uri_and_line(ray_cluster, tmp_path, tiny_model, items):
    """A file:// URI goes through the non-local path: streamed to the worker, then validated."""
    rows = [dict(row) for row in items[:4]]
    del rows[2]["hypothesis"]
    uri = "file://" + str(write_jsonl(tmp_path / "bad.jsonl", rows))
    with pytest.raises(DataError, match=r"^file://.*bad\.jsonl:3: field 'hypothesis': missing"):
        ray_judge(ray_cluster, uri, tmp_path / "out.jsonl", tiny_model, num_workers=1)
    assert not (tmp_path / "out.jsonl").exists()
    assert not list(tmp_path.glob(".out.jsonl*"))


def test_bad_local_input_fails_before_ray(tmp_path, items, capsys):
    pytest.importorskip("ray", reason="pip install distjudge[ray]")
    rows = [dict(row) for row in items[:3]]
    rows[1]["annotations"] = ["maybe"]
    bad = write_jsonl(tmp_path / "bad.jsonl", rows)
    code = cli_main(["judge", "--engine", "ray", "--input", str(bad),
                     "--output", str(tmp_path / "out.jsonl"), "--address", "ray://nowhere:1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith(f"distjudge: error: {bad}:2: field 'annotations'")
    assert not (tmp_path / "out.jsonl").exists()


def test_without_ray_the_error_names_the_extra(tmp_path, input_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if absent
    code = cli_main(["judge", "--engine", "ray", "--input", str(input_path),
                     "--output", str(tmp_path / "out.jsonl")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err == ["distjudge: error: --engine ray needs Ray: pip install distjudge[ray]"]


def test_a_judge_that_cannot_load_is_one_error_line(ray_cluster, tmp_path, input_path, capsys):
    """The model is loaded in the workers: its error reaches the driver as one line."""
    output = tmp_path / "out.jsonl"
    code = cli_main(["judge", "--engine", "ray", "--num_workers", "1", "--input",
                     str(input_path), "--output", str(output), "--model", str(tmp_path / "none")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith(f"distjudge: error: a worker could not load the judge: model "
                              f"'{tmp_path / 'none'}' is not a local folder")
    assert not output.exists()


def test_parquet_output_keeps_every_field_of_every_row(tmp_path):
    """Rows differ in fields and label keys; each row group sees only some: one schema for all."""
    from distjudge.ray_engine import jsonl_to_parquet

    rows = [{"id": "a", "text": "p", "label_counts": {"neutral": 3}},
            {"id": "b", "text": "q", "label_counts": {"entailment": 1}, "context": "c"},
            {"id": "c", "text": "r", "annotations": ["neutral"], "score": 1},
            {"id": "d", "text": "s", "annotations": ["neutral"], "score": 1.5}]
    jsonl = write_jsonl(tmp_path / "rows.jsonl", rows)
    jsonl_to_parquet(jsonl, tmp_path / "rows.parquet", rows_per_group=1)
    back = read_rows(tmp_path / "rows.parquet")
    for row in back:
        if "label_counts" in row:
            row["label_counts"] = {k: v for k, v in row["label_counts"].items() if v is not None}
    assert back == rows
