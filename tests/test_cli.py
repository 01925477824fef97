"""The command line: every bad input of part 5 through `distjudge judge`, model loading errors.

Bad input is validated before the model is loaded, so these tests are fast. Each must end with
exit status 2, one line ``distjudge: error: FILE:LINE: field 'NAME': ...`` and no output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from distjudge.cli import main as cli_main
from distjudge.models import ModelError, cache_root, default_gguf, file_sha256, resolve_model

HUB_ID = "HuggingFaceTB/SmolLM2-135M"


def good_rows() -> list[dict]:
    return [
        {"id": "a", "premise": "A man rides a bike.\nIt is raining.", "hypothesis": "It is wet.",
         "annotations": ["entailment", "neutral"]},
        {"id": "b", "premise": "Two dogs play.", "hypothesis": "Animals are outside.",
         "annotations": ["neutral"]},
        {"id": "c", "premise": "A woman sings.", "hypothesis": "Someone makes music.",
         "annotations": ["entailment", "entailment", "neutral"]},
    ]


def _without(row: dict, *keys: str) -> dict:
    return {k: v for k, v in row.items() if k not in keys}


# Each case turns the third row bad: (field named in the error, the bad row)
CASES = {
    "missing-field": ("hypothesis", lambda r: _without(r, "hypothesis")),
    "unknown-label": ("annotations", lambda r: {**r, "annotations": ["entailment", "maybe"]}),
    "empty-annotations": ("annotations", lambda r: {**r, "annotations": []}),
    "all-zero-counts": ("label_counts", lambda r: {
        **_without(r, "annotations"), "label_counts": {"entailment": 0, "neutral": 0}}),
    "negative-count": ("label_counts", lambda r: {
        **_without(r, "annotations"), "label_counts": {"entailment": 3, "neutral": -1}}),
    "non-integer-count": ("label_counts", lambda r: {
        **_without(r, "annotations"), "label_counts": {"entailment": 2.5}}),
    "empty-text": ("premise", lambda r: {**r, "premise": "   "}),
    "duplicate-id": ("id", lambda r: {**r, "id": "a"}),
}
# the bad (third) item's line: JSONL has a blank line after the first row; the CSV's first row
# spans two physical lines (a quoted newline) after the header; Parquet counts rows
BAD_LINE = {"jsonl": 4, "csv": 5, "parquet": 3}


def write_input(tmp_path, fmt: str, rows: list[dict], files):
    path = tmp_path / f"items.{fmt}"
    if fmt == "jsonl":
        lines = [json.dumps(row) for row in rows]
        path.write_text(lines[0] + "\n\n" + "\n".join(lines[1:]) + "\n")
    elif fmt == "csv":
        files.csv(path, rows, ["id", "premise", "hypothesis", "annotations", "label_counts"])
    else:
        import pyarrow as pa

        schema = pa.schema([("id", pa.string()), ("premise", pa.string()),
                            ("hypothesis", pa.string()), ("annotations", pa.list_(pa.string())),
                            ("label_counts", pa.map_(pa.string(), pa.float64()))])
        files.parquet(path, rows, schema=schema)
    return path


def judge_error(capsys, cli, input_path, output, *extra) -> str:
    """Run `distjudge judge` in-process on bad input; return its one error line."""
    rc = cli_main(["judge", "--input", str(input_path), "--output", str(output), *extra])
    captured = capsys.readouterr()
    assert rc == 2, captured.err
    lines = cli.error_lines(captured.err)
    assert len(lines) == 1, captured.err
    assert "Traceback" not in captured.err
    assert_no_output(output)
    return lines[0]


def assert_no_output(output) -> None:
    assert not output.exists()
    assert not output.with_name(output.name + ".parts").exists()
    assert not output.with_name(output.name + ".signature.json").exists()


@pytest.mark.parametrize("fmt", list(BAD_LINE))
@pytest.mark.parametrize("case", list(CASES))
def test_bad_item_through_the_cli(tmp_path, fmt, case, files, cli, capsys):
    field, make_bad = CASES[case]
    rows = good_rows()
    rows[2] = make_bad(rows[2])
    path = write_input(tmp_path, fmt, rows, files)
    output = tmp_path / "out" / "judged.jsonl"
    line = judge_error(capsys, cli, path, output)
    assert line.startswith(f"distjudge: error: {path}:{BAD_LINE[fmt]}: field '{field}'"), line


@pytest.mark.parametrize("fmt", list(BAD_LINE))
def test_good_input_of_each_format_passes_validation(tmp_path, fmt, files):
    from distjudge.data import check_file
    from distjudge.task import load_task

    assert check_file(write_input(tmp_path, fmt, good_rows(), files), load_task("nli")) == 3


def test_invalid_json_line(tmp_path, cli, capsys):
    path = tmp_path / "items.jsonl"
    lines = [json.dumps(row) for row in good_rows()]
    path.write_text("\n".join([lines[0], lines[1], '{"premise": "p", "hypothesis": ']) + "\n")
    line = judge_error(capsys, cli, path, tmp_path / "judged.jsonl")
    assert line.startswith(f"distjudge: error: {path}:3: invalid JSON"), line
    path.write_text(lines[0] + "\n" + json.dumps(["a", "list"]) + "\n")
    line = judge_error(capsys, cli, path, tmp_path / "judged.jsonl")
    assert line.startswith(f"distjudge: error: {path}:2:"), line


def test_csv_cell_that_is_not_json(tmp_path, files, cli, capsys):
    rows = good_rows()
    rows[2]["annotations"] = "[entailment, neutral"  # written as is: not JSON
    path = write_input(tmp_path, "csv", rows, files)
    line = judge_error(capsys, cli, path, tmp_path / "judged.jsonl")
    assert line.startswith(f"distjudge: error: {path}:5: field 'annotations'"), line


def test_text_field_of_the_wrong_type(tmp_path, files, cli, capsys):
    rows = good_rows()
    rows[1]["hypothesis"] = 42
    path = files.jsonl(tmp_path / "items.jsonl", rows)
    line = judge_error(capsys, cli, path, tmp_path / "judged.jsonl")
    assert line.startswith(f"distjudge: error: {path}:2: field 'hypothesis'"), line


@pytest.mark.parametrize("name", ["missing.jsonl", "missing.csv", "missing.parquet"])
def test_missing_file(tmp_path, name, cli, capsys):
    path = tmp_path / name
    line = judge_error(capsys, cli, path, tmp_path / "judged.jsonl")
    assert str(path) in line and "not found" in line


def test_a_directory_is_not_an_input_file(tmp_path, cli, capsys):
    path = tmp_path / "folder.jsonl"
    path.mkdir()
    line = judge_error(capsys, cli, path, tmp_path / "judged.jsonl")
    assert str(path) in line


def test_unknown_extension(tmp_path, files, cli, capsys):
    path = files.jsonl(tmp_path / "items.txt", good_rows())
    line = judge_error(capsys, cli, path, tmp_path / "judged.jsonl")
    assert str(path) in line and ".jsonl" in line  # says which formats are known


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_not_utf8_text(tmp_path, fmt, cli, capsys):
    path = tmp_path / f"items.{fmt}"
    path.write_bytes(b"\xff\xfe\x00garbage\n")
    line = judge_error(capsys, cli, path, tmp_path / "judged.jsonl")
    assert str(path) in line and "UTF-8" in line


def test_corrupt_parquet(tmp_path, cli, capsys):
    path = tmp_path / "items.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    line = judge_error(capsys, cli, path, tmp_path / "judged.jsonl")
    assert str(path) in line and "Parquet" in line


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="file permissions do not stop root")
def test_unreadable_file(tmp_path, files, cli, capsys):
    path = files.jsonl(tmp_path / "items.jsonl", good_rows())
    path.chmod(0)
    try:
        line = judge_error(capsys, cli, path, tmp_path / "judged.jsonl")
    finally:
        path.chmod(0o644)
    assert str(path) in line and "unreadable" in line


def test_empty_input(tmp_path, cli, capsys):
    path = tmp_path / "items.jsonl"
    path.write_text("")
    line = judge_error(capsys, cli, path, tmp_path / "judged.jsonl")
    assert str(path) in line and "no items" in line


def test_bad_input_as_a_real_subprocess(tmp_path, files, cli):
    rows = good_rows()
    rows[2] = _without(rows[2], "premise")
    path = files.jsonl(tmp_path / "items.jsonl", rows)
    output = tmp_path / "judged.jsonl"
    proc = cli.run("judge", "--input", path, "--output", output, timeout=120)
    assert proc.returncode == 2
    [line] = cli.error_lines(proc.stderr)
    assert line == (f"distjudge: error: {path}:3: field 'premise': missing "
                    "(task 'nli' needs it)")
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert_no_output(output)


def test_bad_task_file_through_the_cli(tmp_path, files, cli, capsys):
    task = tmp_path / "task.yaml"
    task.write_text("name: t\nfields: [a]\nlabels: [x, x]\ntemplate: '{{ a }}'\n")
    path = files.jsonl(tmp_path / "items.jsonl", good_rows())
    line = judge_error(capsys, cli, path, tmp_path / "judged.jsonl", "--task", str(task))
    assert "duplicate" in line
    line = judge_error(capsys, cli, path, tmp_path / "judged.jsonl", "--task", "nope")
    assert "unknown task 'nope'" in line


def test_usage(capsys):
    assert cli_main([]) == 2
    captured = capsys.readouterr()
    assert "usage: distjudge" in captured.out + captured.err
    assert cli_main(["--help"]) == 0
    assert "judge" in capsys.readouterr().out
    assert cli_main(["frobnicate"]) == 2


# -- model loading ------------------------------------------------------------------------------

@pytest.fixture
def empty_hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache, so that a hub id is surely not available offline."""
    import huggingface_hub.constants

    cache = tmp_path / "hf-cache"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def test_hub_id_not_in_the_local_cache(empty_hf_cache):
    with pytest.raises(ModelError) as err:
        resolve_model(HUB_ID)
    message = str(err.value)
    assert HUB_ID in message and "local" in message and "\n" not in message


def test_hub_id_through_the_cli(tmp_path, empty_hf_cache, files, cli):
    path = files.jsonl(tmp_path / "items.jsonl", good_rows())
    output = tmp_path / "judged.jsonl"
    env = {**cli.env(), "HF_HUB_CACHE": str(empty_hf_cache), "HF_HUB_OFFLINE": "1"}
    proc = cli.run("judge", "--input", path, "--output", output, "--model", HUB_ID,
                   timeout=120, env=env)
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = cli.error_lines(proc.stderr)
    assert HUB_ID in line and "local" in line
    assert "Traceback" not in proc.stderr
    assert_no_output(output)


def test_missing_gguf_and_folders_without_a_model(tmp_path):
    with pytest.raises(ModelError, match="nope.gguf"):
        resolve_model(tmp_path / "nope.gguf")
    empty = tmp_path / "empty_model"
    empty.mkdir()
    with pytest.raises(ModelError, match="config.json"):
        resolve_model(empty)
    not_gguf = tmp_path / "weights.bin"
    not_gguf.write_bytes(b"\0" * 16)
    with pytest.raises(ModelError, match="weights.bin"):
        resolve_model(not_gguf)


def test_cache_dir_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DISTJUDGE_CACHE", str(tmp_path / "cache"))
    assert cache_root() == tmp_path / "cache"
    monkeypatch.delenv("DISTJUDGE_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_root() == tmp_path / "home" / ".cache" / "distjudge"


def test_default_model_is_found_in_the_cache_given_by_the_environment(tmp_path, monkeypatch):
    """A converted model already in $DISTJUDGE_CACHE is reused (no conversion in this test)."""
    try:
        gguf = default_gguf()
    except ModelError as err:
        pytest.skip(str(err))
    sha = file_sha256(gguf)
    folder = tmp_path / "models" / f"{gguf.stem}-{sha[:16]}"
    folder.mkdir(parents=True)
    (folder / "distjudge_source.json").write_text(json.dumps({"gguf": str(gguf), "sha256": sha}))
    monkeypatch.setenv("DISTJUDGE_CACHE", str(tmp_path))
    assert resolve_model(None) == folder
    assert resolve_model("smollm2-135m") == folder


@pytest.mark.parametrize("preset, expected", [(None, "16"), ("64", "64")])
def test_import_caps_the_kernel_caches_unless_set(preset, expected):
    env = {k: v for k, v in os.environ.items()
           if k not in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY")}
    if preset:
        env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = env["LRU_CACHE_CAPACITY"] = preset
    code = ("import os, sys, distjudge; assert 'torch' not in sys.modules; print("
            "os.environ['ONEDNN_PRIMITIVE_CACHE_CAPACITY'], os.environ['LRU_CACHE_CAPACITY'])")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == [expected, expected]


def test_sigterm_cleans_up_like_ctrl_c(tmp_path):
    """`kill`/`timeout`/a scheduler's SIGTERM runs the cleanup a Ctrl-C would (temp files go)."""
    script = f"""
import sys, time
from pathlib import Path
from distjudge import cli

def hang(argv):
    tmp = Path({str(tmp_path)!r}) / ".half-written.tmp"
    tmp.write_text("partial")
    try:
        print("ready", flush=True)
        time.sleep(60)
    except BaseException:
        tmp.unlink()
        raise

cli.COMMANDS["hang"] = hang
sys.exit(cli.main(["hang"]))
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    proc.terminate()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "interrupted (rerun the same command to resume)" in err
    assert list(tmp_path.iterdir()) == []


def test_distjudges_own_warning_is_one_line(monkeypatch, capsys, tmp_path, files, tiny_model):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)  # bf16 emulated
    output = tmp_path / "judged.jsonl"
    rc = cli_main(["judge", "--input", str(write_input(tmp_path, "jsonl", good_rows(), files)),
                   "--output", str(output), "--model", str(tiny_model), "--task", "nli",
                   "--dtype", "bfloat16"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert len(output.read_text().splitlines()) == 3  # a warning, not a refusal
    warned = [line for line in err.splitlines() if "bf16 is emulated" in line]
    assert warned == ["distjudge: warning: bf16 is emulated on this cpu device "
                      "(a CPU without AMX): judging runs several times slower than in float32; "
                      "pass dtype='float32' (--dtype float32)"]
    assert "UserWarning" not in err


def test_a_librarys_warning_keeps_pythons_format():
    import io

    from distjudge.cli import show_warning

    out = io.StringIO()
    show_warning(UserWarning("deprecated"), UserWarning, "/site-packages/lib.py", 7, file=out)
    assert out.getvalue().startswith("/site-packages/lib.py:7: UserWarning: deprecated")
