"""The served backend against a real llama.cpp server (llama-cpp-python[server]) on 127.0.0.1.

The server runs the embedded default GGUF (quantized weights); the local backend runs the same
weights dequantized to fp32. ``.ci/run`` installs the ``server`` extra; without it these skip.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time

import numpy as np
import pytest
from conftest import DATASETS, read_chaosnli, write_jsonl

from distjudge.judge import Judge
from distjudge.metrics import kl_divergence
from distjudge.served import ServedJudge, ServerError, start_llama_server
from distjudge.task import load_task

pytest.importorskip("llama_cpp.server", reason="pip install -e '.[server]' (llama-cpp-python)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, log) -> subprocess.Popen:
    from distjudge.models import default_gguf

    return start_llama_server(default_gguf(), port, threads=1, log=log)


def stop(proc: subprocess.Popen) -> None:
    proc.kill()
    proc.wait(timeout=30)


def death_note(proc: subprocess.Popen, log_path) -> str:
    """Why the server is gone, for a failure message: exit status or signal, and its log's tail.

    A llama.cpp build with -march=native on a CPU with AMX (Sapphire Rapids) answers /v1/models,
    then dies on the first completion (ggml-org/llama.cpp#20824): hence GGML_NATIVE=OFF in the
    README's install command.
    """
    code = proc.returncode
    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
    return f"llama.cpp server died ({how}); its log ends:\n{log_path.read_text()[-1500:]}"


@pytest.fixture(scope="module")
def server_process(tmp_path_factory):
    port = free_port()
    log_path = tmp_path_factory.mktemp("llama") / "server.log"
    with open(log_path, "w") as log:
        proc = start_server(port, log)
        yield f"http://127.0.0.1:{port}/v1", proc, log_path
        stop(proc)


@pytest.fixture
def server(server_process):
    """The module's server; a test after which it has died errors with the reason."""
    url, proc, log_path = server_process
    yield url
    assert proc.poll() is None, death_note(proc, log_path)


def real_items(source: str, n: int) -> list[dict]:
    from distjudge.sources import load_source

    if not (DATASETS / "lewidi2023").is_dir():
        pytest.skip(f"real data absent: {DATASETS}")
    return load_source(source, root=DATASETS)[:n]


@pytest.mark.slow
def test_server_readout_agrees_with_the_local_backend(server, judge):
    """Where every label is in the top 20 (yes / no questions), the two readouts agree."""
    items = real_items("lewidi-armis", 12)
    local_judge = Judge(judge.model, judge.tokenizer, load_task("yes-no"))
    local = local_judge.predict(items)
    served = ServedJudge(server, "judge", "yes-no", concurrency=2).predict(items)
    assert served.estimator == "top_k" and served.scored.all()
    assert all(not d["absent_labels"] for d in served.details)
    kl = kl_divergence(local.probs, served.probs)
    # quantized weights (server) vs the same weights dequantized to fp32 (local): close
    assert kl.mean() < 0.02, kl
    np.testing.assert_allclose(served.label_mass, local.label_mass, rtol=0.25)
    for row in served.rows():
        assert row["estimator"] == "top_k" and row["top_k"] == 20


@pytest.mark.slow
def test_missing_mass_bound_holds_against_the_exact_readout(server, judge):
    """NLI, raw model: labels fall outside the top 20; the reported bound covers their mass."""
    items = read_chaosnli(12, start=300)
    local = judge.predict(items)
    served = ServedJudge(server, "judge", "nli", concurrency=2).predict(items)
    labels = served.labels
    assert any(d["absent_labels"] for d in served.details)
    for i, details in enumerate(served.details):
        absent = [labels.index(name) for name in details["absent_labels"]]
        exact_missing = local.label_mass[i] * local.probs[i, absent].sum()
        assert exact_missing <= details["missing_mass_bound"] * 1.1 + 1e-6
        # the server's Q4_1 weights with 8-bit activations vs fp32 here: the ~1% label mass of
        # these items lands within a factor 0.68-1.58 of the exact one (AVX2 llama.cpp build)
        assert served.label_mass[i] <= local.label_mass[i] * 2 + 1e-6


@pytest.mark.slow
def test_wrong_model_name_is_a_clear_error(server, tmp_path, cli):
    with pytest.raises(ServerError, match="model 'gpt-4o' is not served here"):
        ServedJudge(server, "gpt-4o", "nli")
    source = write_jsonl(tmp_path / "in.jsonl", read_chaosnli(2))
    out = tmp_path / "out.jsonl"
    result = cli.run("judge", "--backend", "openai", "--base-url", server, "--model", "gpt-4o",
                     "--input", source, "--output", out)
    assert result.returncode == 2
    assert "is not served here" in cli.error_lines(result.stderr)[0]
    assert not out.exists()


@pytest.mark.slow
def test_server_stopped_mid_run_then_resumed(tmp_path, cli):
    # yes / no: both labels sit in the top 20, so no item hovers at the top-k edge, where
    # llama.cpp's prompt-cache numerics could flip it between scored and unscored across runs
    items = real_items("lewidi-armis", 24)
    source = write_jsonl(tmp_path / "in.jsonl", items)
    out = tmp_path / "out.jsonl"
    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"
    log_path = tmp_path / "server.log"
    log = open(log_path, "w")
    proc = start_server(port, log)
    args = ["judge", "--backend", "openai", "--base-url", url, "--model", "judge",
            "--input", source, "--output", out, "--chunk_size", "8", "--concurrency", "1",
            "--max_retries", "1", "--task", "yes-no"]
    run = subprocess.Popen(cli.command(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=cli.env())
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and run.poll() is None:  # stop the server mid-run
        chunks = list(tmp_path.glob("out.jsonl.parts/chunk-*[0-9].jsonl"))
        journals = list(tmp_path.glob("out.jsonl.parts/*.journal.jsonl"))  # the open chunk's
        if chunks and journals and journals[0].read_text().count("\n") >= 3:
            stop(proc)
            break
        assert proc.poll() is None, death_note(proc, log_path)
        time.sleep(0.02)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 2, stderr
    assert "server unreachable" in " ".join(cli.error_lines(stderr)), stderr[-2000:]
    assert not out.exists()
    done = sum(1 for _ in tmp_path.glob("out.jsonl.parts/chunk-*[0-9].jsonl")) * 8 + sum(
        f.read_text().count("\n") for f in tmp_path.glob("out.jsonl.parts/*.journal.jsonl"))
    assert 8 < done < 24

    proc = start_server(port, log)
    try:
        result = cli.run(*args)
        assert result.returncode == 0, result.stderr
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        assert summary["requests_sent"] == 24 - done  # nothing already judged is asked again
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["id"] for r in rows] == [i["id"] for i in items]
        assert all(r["distribution"] for r in rows)  # every item scored
        again = ServedJudge(url, "judge", "yes-no").predict(items)
        got = np.array([[r["distribution"][k] for k in again.labels] for r in rows])
        np.testing.assert_allclose(got, again.probs, atol=1e-4)
    finally:
        stop(proc)
        log.close()
