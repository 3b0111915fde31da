"""ONNX export of a pinzi converter, and the onnxruntime backend that runs it.

    pinzi export --format onnx --model runs/small --out runs/small   # beside the weights
    pinzi export --format onnx --model runs/small --out runs/small-int8 --quantize int8

The exported graph is the encoder and the conversion head in one: ``input_ids`` and
``attention_mask`` (B, T) int64 -> ``logits`` (B, T, C) float32, with dynamic batch and length
axes. config.json and vocab.json are copied beside it, so the output folder loads on its own.
``--quantize int8`` writes an onnxruntime dynamic-quantised graph (int8 weights) as model.onnx.

:func:`load_converter` is how the CLI and the server load a model: it runs the folder's
model.onnx with onnxruntime when there is one and onnxruntime is installed
(``pip install "pinzi[onnx]"``), and PyTorch otherwise. The onnxruntime backend is for CPU
serving; on a GPU, PyTorch is the faster choice (``--backend torch``).

>>> converter = load_converter("runs/small-int8")        # doctest: +SKIP
>>> converter.convert("nihao")                           # doctest: +SKIP
'你好'
"""

from __future__ import annotations

import importlib.util
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pinzi.converter import Converter, shipped_model_path
from pinzi.model import ModelLoadError, PinziForPinyin, load_pretrained
from pinzi.ngram import NGRAM_FILE, CharNgram
from pinzi.tokenizer import VOCAB_FILE, PinziTokenizer

ONNX_FILE = "model.onnx"
BACKENDS = ("auto", "torch", "onnx")
QUANTIZE = ("int8",)
OPSET = 17  # the first opset with a LayerNorm op; onnxruntime >= 1.14 runs it
MAX_EXPORT_DIFF = 1e-3  # largest |onnx - torch| logit accepted when the export checks itself


def onnxruntime_available() -> bool:
    return importlib.util.find_spec("onnxruntime") is not None


# ---- export -------------------------------------------------------------------------------------
class _PinyinLogits(nn.Module):
    """The graph to export: (input_ids, attention_mask) -> char logits at every position."""

    def __init__(self, model: PinziForPinyin):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model.char_logits(self.model.encode(input_ids, attention_mask))  # (B, T, C)


def export_onnx(model: str | Path | None, out: str | Path, *, quantize: str | None = None) -> dict:
    """Export the converter in folder ``model`` (default: the shipped one) to ``out/model.onnx``.

    Args:
        model: a local model folder (safetensors + config.json + vocab.json).
        out: the output folder (created; may be ``model`` itself).
        quantize: ``"int8"`` for onnxruntime dynamic quantisation, or None for float32.

    Returns:
        A summary: the graph's path, its size in bytes, and the largest difference between the
        float graph's logits and PyTorch's on a test batch.

    >>> export_onnx("runs/small", "runs/small-onnx")["path"]     # doctest: +SKIP
    'runs/small-onnx/model.onnx'
    """
    if quantize is not None and quantize not in QUANTIZE:
        raise ValueError(f"unknown quantisation {quantize!r}; choose one of {', '.join(QUANTIZE)}")
    if not onnxruntime_available():
        raise ModelLoadError("exporting to ONNX needs onnx and onnxruntime: "
                             'pip install "pinzi[onnx]"')
    source = Path(model) if model else shipped_model_path()
    if not source.is_dir():
        raise ModelLoadError(f"no model folder {str(source)!r}: export needs a local folder")
    net, _ = load_pretrained(PinziForPinyin, str(source))
    graph = _PinyinLogits(net).eval()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    # Traced on one row, as torch advises for LSTMs; _max_diff then runs a padded batch of
    # three rows and another length, which checks the dynamic axes.
    example = (torch.full((1, 8), 5, dtype=torch.long), torch.ones((1, 8), dtype=torch.long))
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
                input_names=["input_ids", "attention_mask"], output_names=["logits"],
                dynamic_axes={name: {0: "batch", 1: "tokens"}
                              for name in ("input_ids", "attention_mask", "logits")},
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
            quantize_dynamic(prepared, out / ONNX_FILE, weight_type=QuantType.QInt8)
        else:
            shutil.copyfile(float_path, out / ONNX_FILE)
    for name in ("config.json", VOCAB_FILE, NGRAM_FILE):
        if (source / name).exists() and (out / name).resolve() != (source / name).resolve():
            shutil.copyfile(source / name, out / name)
    return {"path": str(out / ONNX_FILE), "bytes": (out / ONNX_FILE).stat().st_size,
            "quantize": quantize, "max_abs_diff_float": diff}


@torch.inference_mode()
def _max_diff(graph: _PinyinLogits, path: Path) -> float:
    """Largest |onnx - torch| logit on a padded batch of another shape than the traced one."""
    vocab = graph.model.config.vocab_size
    input_ids = torch.randint(5, vocab, (3, 13), generator=torch.Generator().manual_seed(0))
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 7:] = 0
    expected = graph(input_ids, attention_mask).numpy()
    got = OnnxPinyinModel(path).encode(input_ids, attention_mask).numpy()
    return float(np.abs(got - expected).max())


# ---- the onnxruntime backend --------------------------------------------------------------------
class OnnxPinyinModel:
    """The inference surface of :class:`~pinzi.model.PinziForPinyin` over an onnxruntime session.

    The Converter calls ``encode`` on a batch, then ``char_logits`` on the positions it scores.
    The exported graph already ends in the conversion head, so here ``encode`` returns the
    (B, T, C) char logits and ``char_logits`` passes them through: the Converter runs unchanged.
    """

    def __init__(self, path: str | Path, *, threads: int | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.n_chars = self.session.get_outputs()[0].shape[-1]

    def eval(self) -> OnnxPinyinModel:  # the Converter puts its model in eval mode
        return self

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        (logits,) = self.session.run(["logits"], {"input_ids": input_ids.numpy(),
                                                  "attention_mask": attention_mask.numpy()})
        return torch.from_numpy(logits)  # (B, T, C)

    def char_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return logits


def load_converter(name_or_path: str | Path | None = None, *, backend: str = "auto",
                   threads: int | None = None, **options) -> Converter:
    """A :class:`Converter` on the chosen backend: ``torch``, ``onnx``, or ``auto``.

    ``auto`` picks onnx when the folder holds a model.onnx and onnxruntime is installed.
    ``threads`` sets onnxruntime's threads per call (PyTorch's are process-wide: see
    ``torch.set_num_threads``). Other keyword arguments go to the Converter. Raises
    :class:`ModelLoadError` with a reason.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
    folder = Path(name_or_path) if name_or_path else shipped_model_path()
    onnx_file = folder / ONNX_FILE
    if backend == "auto":
        backend = "onnx" if onnx_file.is_file() and onnxruntime_available() else "torch"
    if backend == "torch":
        return Converter.from_pretrained(name_or_path, **options)
    if not onnx_file.is_file():
        raise ModelLoadError(f"{folder} holds no {ONNX_FILE}; make one with "
                             f"`pinzi export --format onnx --model {folder} --out {folder}`")
    if not onnxruntime_available():
        raise ModelLoadError('the onnx backend needs onnxruntime: pip install "pinzi[onnx]"')
    tokenizer = PinziTokenizer.load(folder)
    try:
        model = OnnxPinyinModel(onnx_file, threads=threads)
    except Exception as err:  # onnxruntime raises its own types for truncated or foreign files
        raise ModelLoadError(f"{onnx_file} cannot be loaded: {err}") from err
    if model.n_chars != tokenizer.n_chars:
        raise ModelLoadError(f"{folder}: vocab.json has {tokenizer.n_chars} characters but "
                             f"{ONNX_FILE} scores {model.n_chars}")
    options.setdefault("ngram", CharNgram.load(folder))
    return Converter(model, tokenizer, **options)  # type: ignore[arg-type]  # duck-typed model
