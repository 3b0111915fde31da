"""ONNX export of a pinzi converter for the onnxruntime backend (:mod:`pinzi.backends`).

    pinzi export --format onnx --model runs/small --out runs/small   # beside the weights
    pinzi export --format onnx --model runs/small --out runs/small-int8 --quantize int8

The exported graph is :meth:`~pinzi.model.PinziForPinyin.score_candidates`: the encoder and
the conversion head, scoring only the candidates that decoding asks for. Inputs
``input_ids``/``attention_mask`` (B, T), ``slots`` (N,), ``candidates``/``owner`` (M,), all
int64 with dynamic sizes; output ``scores`` (M,) float32. The folder's other files (config,
vocabulary, n-gram tables, word list, decoding config) are checked and copied beside it, so
the output folder loads on its own; a folder with a model.onnx loads on onnxruntime by
default (``Converter.from_pretrained``, ``pinzi convert``, ``pinzi serve``). ``--quantize int8``
writes an onnxruntime dynamic-quantised graph (int8 weights, the embedding table included) as
model.onnx.
"""

from __future__ import annotations

import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pinzi.backends import INPUTS, ONNX_FILE, OnnxScorer, onnxruntime_available
from pinzi.converter import SIDE_FILES
from pinzi.decoding_config import DecodingConfig
from pinzi.errors import ModelLoadError, SettingsError
from pinzi.hub import resolve_model
from pinzi.model import PinziForPinyin, load_pretrained
from pinzi.ngram import CharNgram
from pinzi.words import WordModel

QUANTIZE = ("int8",)
OPSET = 17  # the first opset with a LayerNorm op; onnxruntime >= 1.14 runs it
MAX_EXPORT_DIFF = 1e-3  # largest |onnx - torch| logit accepted when the export checks itself


# ---- export -------------------------------------------------------------------------------------
class _CandidateScores(nn.Module):
    """The graph to export: the model's ``score_candidates``."""

    def __init__(self, model: PinziForPinyin):
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.model.score_candidates(*inputs)


def export_onnx(model: str | Path | None, out: str | Path, *, quantize: str | None = None) -> dict:
    """Export the converter in folder ``model`` (default: the shipped one) to ``out/model.onnx``.

    Args:
        model: a model folder or hub id (safetensors + config.json + vocab.json).
        out: the output folder (created; may be ``model`` itself).
        quantize: ``"int8"`` for onnxruntime dynamic quantisation, or None for float32.

    Returns:
        A summary: the graph's path, its size in bytes, and the largest difference between the
        float graph's logits and PyTorch's on a test batch.

    >>> export_onnx("runs/small", "runs/small-onnx")["path"]     # doctest: +SKIP
    'runs/small-onnx/model.onnx'
    """
    if quantize is not None and quantize not in QUANTIZE:
        raise SettingsError(f"unknown quantisation {quantize!r}; choose one of "
                            f"{', '.join(QUANTIZE)}")
    if not onnxruntime_available():
        raise ModelLoadError("exporting to ONNX needs onnx and onnxruntime: "
                             'pip install "pinzi[onnx]"')
    source = resolve_model(model)
    net, tokenizer = load_pretrained(PinziForPinyin, source)
    # The files copied beside the graph are read first: a damaged one is refused here, not
    # where the exported folder is loaded.
    DecodingConfig.load(source)
    CharNgram.load(source, tokenizer.n_chars)
    WordModel.load(source)
    graph = _CandidateScores(net).eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    # Traced on one row, as torch advises for LSTMs; _max_diff then runs a padded batch of
    # three rows and another length, which checks the dynamic axes.
    example = _example(net.config, rows=1, length=8)
    with tempfile.TemporaryDirectory() as tmp:
        float_path = Path(tmp, ONNX_FILE)
        with warnings.catch_warnings():
            # The TorchScript exporter is deprecated in favour of the torch.export one, but that
            # needs onnxscript, takes ten times longer and cannot export the LSTM encoder yet.
            warnings.simplefilter("ignore", DeprecationWarning)
            # Tracing an LSTM warns that the graph may not generalise over batch sizes and
            # shapes; _max_diff below runs it on another batch size and length to make sure.
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", "Exporting a model to ONNX with a batch_size")
            torch.onnx.export(
                graph, example, str(float_path), dynamo=False, opset_version=OPSET,
                input_names=list(INPUTS), output_names=["scores"],
                dynamic_axes={"input_ids": {0: "batch", 1: "tokens"},
                              "attention_mask": {0: "batch", 1: "tokens"},
                              "slots": {0: "positions"}, "candidates": {0: "candidates"},
                              "owner": {0: "candidates"}, "scores": {0: "candidates"}},
            )
        diff = _max_diff(graph, float_path)
        if diff > MAX_EXPORT_DIFF:
            raise RuntimeError(f"the exported graph's logits differ from PyTorch's by {diff:.2g}")
        if quantize == "int8":
            from onnxruntime.quantization import QuantType, quantize_dynamic
            from onnxruntime.quantization.shape_inference import quant_pre_process

            # Shape inference and graph fusion first, as onnxruntime recommends: the quantiser
            # then finds every MatMul's weight, and it stops warning that it should have.
            prepared = Path(tmp, "prepared.onnx")
            quant_pre_process(float_path, prepared)
            # Gather too: the embedding table is half the weights, and int8 keeps the shipped
            # graph small (a test checks that the conversions stay the same).
            quantize_dynamic(prepared, out / ONNX_FILE, weight_type=QuantType.QInt8,
                             op_types_to_quantize=["MatMul", "Gather"])
        else:
            shutil.copyfile(float_path, out / ONNX_FILE)
    for name in ("config.json", *SIDE_FILES):
        if (source / name).exists() and (out / name).resolve() != (source / name).resolve():
            shutil.copyfile(source / name, out / name)
    return {"path": str(out / ONNX_FILE), "bytes": (out / ONNX_FILE).stat().st_size,
            "quantize": quantize, "max_abs_diff_float": diff}


def _example(config, rows: int, length: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Inputs of ``score_candidates``: random tokens, the last row padded, a few candidates."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(5, config.vocab_size, (rows, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[-1, length // 2:] = 0
    slots = torch.arange(0, rows * length, 3)
    candidates = torch.randint(0, config.n_chars, (4 * len(slots),), generator=generator)
    owner = torch.arange(len(slots)).repeat_interleave(4)
    return input_ids, attention_mask, slots, candidates, owner


@torch.inference_mode()
def _max_diff(graph: _CandidateScores, path: Path) -> float:
    """Largest |onnx - torch| logit on a padded batch of another shape than the traced one."""
    inputs = _example(graph.model.config, rows=3, length=13, seed=1)
    expected = graph(*inputs).numpy()
    got = OnnxScorer(path)(*(t.numpy() for t in inputs))
    return float(np.abs(got - expected).max())
