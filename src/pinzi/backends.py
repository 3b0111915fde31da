"""The engines that score conversion candidates for the Converter: PyTorch and onnxruntime.

A scorer takes the model inputs of a few readings and the candidates of every pinyin position
(numpy arrays, see :meth:`pinzi.model.PinziForPinyin.score_candidates`) and returns their
logits. Both run the same graph; onnxruntime runs it several times faster on a CPU and needs
neither torch nor transformers, so a converter on it loads in a fraction of a second with a
fraction of the memory. PyTorch is needed for LoRA adapters and is the faster choice on a GPU.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Protocol

import numpy as np

from pinzi.errors import ModelLoadError, SettingsError
from pinzi.hub import damaged, read_config
from pinzi.tokenizer import PinziTokenizer

ONNX_FILE = "model.onnx"
BACKENDS = ("auto", "torch", "onnx")
INPUTS = ("input_ids", "attention_mask", "slots", "candidates", "owner")


class CandidateScorer(Protocol):
    name: str

    def __call__(self, input_ids: np.ndarray, attention_mask: np.ndarray, slots: np.ndarray,
                 candidates: np.ndarray, owner: np.ndarray) -> np.ndarray: ...


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


class TorchScorer:
    """A :class:`~pinzi.model.PinziForPinyin` (or one with a LoRA adapter) on PyTorch."""

    name = "torch"

    def __init__(self, model):
        self.model = model.eval()

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        import torch

        device = self.model.device
        with torch.inference_mode():
            tensors = [torch.from_numpy(a).to(device) for a in arrays]
            return self.model.score_candidates(*tensors).float().cpu().numpy()


class OnnxScorer:
    """The exported graph (``pinzi export --format onnx``) on an onnxruntime CPU session.

    One thread per call by default: a session is safe to call from several threads at once,
    which is how the server and the parallel benchmark use both cores.
    """

    name = "onnx"

    def __init__(self, path: str | Path, *, threads: int = 1):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        found = tuple(i.name for i in self.session.get_inputs())
        if found != INPUTS:
            raise ModelLoadError(f"{path} takes {', '.join(found)}, not the candidate-scoring "
                                 "graph of this pinzi version: export it again")

    def __call__(self, *arrays: np.ndarray) -> np.ndarray:
        return self.session.run(["scores"], dict(zip(INPUTS, arrays, strict=True)))[0]


def load_onnx(folder: Path, threads: int = 1) -> tuple[OnnxScorer, PinziTokenizer]:
    """The onnxruntime scorer and the tokenizer of an exported folder, checked against each
    other; :class:`ModelLoadError` with a reason otherwise."""
    onnx_file = folder / ONNX_FILE
    if not onnx_file.is_file():
        raise ModelLoadError(f"{folder} holds no {ONNX_FILE}; make one with "
                             f"`pinzi export --format onnx --model {folder} --out {folder}`")
    if not onnxruntime_available():
        raise ModelLoadError('the onnx backend needs onnxruntime: pip install onnxruntime')
    tokenizer = PinziTokenizer.load(folder)
    config = read_config(folder)
    if config.get("vocab_size") != tokenizer.vocab_size:
        raise damaged(folder, f"vocab.json has {tokenizer.vocab_size} tokens but config.json "
                      f"expects {config.get('vocab_size')}")
    try:
        scorer = OnnxScorer(onnx_file, threads=threads)
    except ModelLoadError:
        raise
    except Exception as err:  # onnxruntime raises its own types for truncated or foreign files
        raise damaged(folder, f"{ONNX_FILE} cannot be loaded: {err}") from err
    return scorer, tokenizer


def choose_backend(folder: Path, backend: str, adapter: object) -> str:
    """``torch`` or ``onnx`` for a model folder; ``auto`` prefers onnxruntime when it can."""
    if backend not in BACKENDS:
        raise SettingsError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    if backend == "auto":
        usable = adapter is None and (folder / ONNX_FILE).is_file() and onnxruntime_available()
        return "onnx" if usable else "torch"
    if backend == "onnx" and adapter is not None:
        raise SettingsError("a LoRA adapter needs the torch backend (or merge it first: "
                         "`pinzi merge`, then export the merged model)")
    return backend
