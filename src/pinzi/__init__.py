"""pinzi (拼字): a Chinese language model built from scratch; pinyin -> hanzi and classification.

>>> from pinzi import Converter                      # doctest: +SKIP
>>> Converter.from_pretrained().convert("nihao")     # doctest: +SKIP
'你好'

The Hugging Face Auto classes learn pinzi's folders (config, models, tokenizer) when
:mod:`pinzi.model` is imported; ``import pinzi`` alone does not register them, so that it and
``pinzi convert`` stay free of torch and transformers:

>>> import pinzi.model                                        # doctest: +SKIP
>>> from transformers import AutoModel, AutoTokenizer         # doctest: +SKIP
>>> AutoModel.from_pretrained("runs/base")                    # doctest: +SKIP
PinziModel(...)
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pinzi")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ["Converter", "__version__"]


def __getattr__(name: str):
    # Importing torch takes a second: only pay for it when the converter is used.
    if name == "Converter":
        from pinzi.converter import Converter

        return Converter
    raise AttributeError(f"module 'pinzi' has no attribute {name!r}")
