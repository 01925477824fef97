"""The served backend (OpenAI-compatible): readout from top-k logprobs and the HTTP client.

The client is tested here against a small in-process fake server (retries, missing logprobs,
wrong model, resume after a failure); tests/test_llama_server.py runs a real llama.cpp server.
"""

from __future__ import annotations

import json
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from distjudge.cli import main as cli_main
from distjudge.evaluation import evaluate_file
from distjudge.served import ServedJudge, ServerError, label_words, read_top_logprobs, token_label
from distjudge.task import load_task

NLI = load_task("nli")


def test_token_matching_rules():
    words = label_words(NLI)
    assert token_label(" Ent", words) == 0
    assert token_label("entailment", words) == 0
    assert token_label("NEUTRAL", words) == 1
    assert token_label("contr", words) == 2
    assert token_label("\n", words) is None
    assert token_label("The", words) is None
    rating = label_words(load_task("rating"))
    assert [token_label(t, rating) for t in ("1", " 5", "6")] == [0, 4, None]
    ambiguous = [["yes"], ["yellow"]]
    assert token_label("ye", ambiguous) is None
    assert token_label("yes", ambiguous) == 0


def top(pairs):
    return [{"token": t, "logprob": math.log(p)} for t, p in pairs]


def test_top_k_readout_mass_bound_and_unscored():
    words = label_words(NLI)
    probs, covered, info = read_top_logprobs(
        top([("The", 0.5), ("ent", 0.2), (" Ent", 0.1), ("neutral", 0.1), ("x", 0.05)]), words)
    assert covered == pytest.approx(0.4)
    np.testing.assert_allclose(probs, [0.75, 0.25, 0.0])
    assert info["missing_mass_bound"] == pytest.approx(0.05)
    assert info["kth_prob"] == pytest.approx(0.05)
    assert info["absent_labels"] == [2]
    probs, covered, info = read_top_logprobs(top([("The", 0.9), ("A", 0.05)]), words)
    assert covered == 0 and np.isnan(probs).all()
    assert info["missing_mass_bound"] == pytest.approx(0.05)


# -- a fake OpenAI-compatible server ------------------------------------------------------------

def fake_top(text: str) -> list[dict]:
    """Deterministic top logprobs from the prompt text; 'NOLABEL' gives no label at all."""
    if "NOLABEL" in text:
        return top([("The", 0.7), ("I", 0.2)])
    r = (sum(map(ord, text)) % 97) / 97
    return top([("ent", 0.1 + 0.5 * r), ("neutral", 0.2), (" contr", 0.1), ("The", 0.05)])


class FakeServer:
    def __init__(self):
        self.requests = 0
        self.fail_after: int | None = None  # answer 503 once this many completions were served
        self.throttle_first = 0  # answer 429 to the first N completion requests
        self.logprobs = True
        self.delay = 0.0  # seconds before answering a completion
        self.models = ["judge"]
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status, payload, headers=()):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers:
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self):
                self.reply(200, {"data": [{"id": m} for m in server.models]})

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.requests += 1
                    n = server.requests
                time.sleep(server.delay)
                if n <= server.throttle_first:
                    return self.reply(429, {"error": "slow down"}, [("Retry-After", "0")])
                if server.fail_after is not None and n > server.fail_after:
                    return self.reply(503, {"error": "down"})
                text = " ".join(m["content"] for m in body["messages"])
                choice = {"message": {"content": "x"}}
                if server.logprobs:
                    choice["logprobs"] = {"content": [{"token": "x", "logprob": 0.0,
                                                       "top_logprobs": fake_top(text)}]}
                self.reply(200, {"choices": [choice]})

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture
def fake():
    server = FakeServer()
    yield server
    server.httpd.shutdown()


def items(n, extra=""):
    return [{"premise": f"A man number {i} walks.{extra}", "hypothesis": "Someone moves.",
             "annotations": ["entailment", "neutral"]} for i in range(n)]


def write_items(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_predict_matches_readout_and_retries_429(fake):
    fake.throttle_first = 2
    judge = ServedJudge(fake.url, "judge", NLI, backoff=0.01, concurrency=1)
    data = items(3)
    result = judge.predict(data)
    assert judge.requests_sent == 5 and fake.requests == 5  # 2 throttled + 3 answered
    for row, item in zip(result.probs, data):
        text = " ".join(m["content"] for m in NLI.render(item))
        expected, _, _ = read_top_logprobs(fake_top(text), label_words(NLI))
        np.testing.assert_allclose(row, expected)
    rows = list(result.rows())
    assert all(r["estimator"] == "top_k" and "missing_mass_bound" in r for r in rows)


def test_unscored_items_are_marked_counted_and_skipped_by_evaluate(fake, tmp_path):
    source = write_items(tmp_path / "in.jsonl", items(3) + items(2, extra=" NOLABEL"))
    judge = ServedJudge(fake.url, "judge", NLI)
    summary = judge.judge_file(source, tmp_path / "out.jsonl", progress=False)
    assert summary["unscored"] == 2
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r.get("scored", True) for r in rows] == [True] * 3 + [False] * 2
    assert all(r["distribution"] is None for r in rows[3:])
    report = evaluate_file(tmp_path / "out.jsonl", "nli", n_boot=10)
    assert report["n"] == 3 and report["unscored"] == 2


def test_clear_errors_wrong_model_and_no_logprobs(fake):
    with pytest.raises(ServerError, match="model 'other' is not served here"):
        ServedJudge(fake.url, "other", NLI)
    fake.logprobs = False
    with pytest.raises(ServerError, match="no logprobs"):
        ServedJudge(fake.url, "judge", NLI).predict(items(1))


def test_unreachable_server_fails_cleanly(tmp_path, capsys):
    source = write_items(tmp_path / "in.jsonl", items(2))
    code = cli_main(["judge", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1",
                     "--model", "judge", "--input", str(source), "--output",
                     str(tmp_path / "out.jsonl")])
    assert code == 2
    assert "server unreachable" in capsys.readouterr().err
    assert not (tmp_path / "out.jsonl").exists()


def test_resume_after_failure_sends_no_request_twice(fake, tmp_path):
    source = write_items(tmp_path / "in.jsonl", items(10))
    reference = ServedJudge(fake.url, "judge", NLI).judge_file(
        source, tmp_path / "ref.jsonl", chunk_size=4, progress=False)
    assert reference["requests_sent"] == 10
    fake.requests, fake.fail_after = 0, 6  # the server dies after 6 answers
    out = tmp_path / "out.jsonl"
    judge = ServedJudge(fake.url, "judge", NLI, max_retries=1, backoff=0.01, concurrency=1)
    with pytest.raises(ServerError, match="HTTP 503 after 2 attempts"):
        judge.judge_file(source, out, chunk_size=4, progress=False)
    assert not out.exists()
    fake.requests, fake.fail_after = 0, None  # back up
    summary = ServedJudge(fake.url, "judge", NLI).judge_file(source, out, chunk_size=4,
                                                             progress=False)
    assert summary["requests_sent"] == 4 and fake.requests == 4
    assert out.read_text() == (tmp_path / "ref.jsonl").read_text()


def test_timeouts_are_retried_then_reported(fake):
    fake.delay = 0.5
    judge = ServedJudge(fake.url, "judge", NLI, timeout=0.1, max_retries=2, backoff=0.01)
    with pytest.raises(ServerError, match="ReadTimeout.*after 3 attempts"):
        judge.predict(items(1))
    assert judge.requests_sent == 3


def test_output_format_it_cannot_write_is_refused_before_any_request(fake, tmp_path, capsys):
    source = write_items(tmp_path / "in.jsonl", items(2))
    code = cli_main(["judge", "--backend", "openai", "--base-url", fake.url, "--model", "judge",
                     "--input", str(source), "--output", str(tmp_path / "out.parquet")])
    assert code == 2 and "writes JSONL" in capsys.readouterr().err
    assert fake.requests == 0 and not (tmp_path / "out.parquet").exists()
