"""The bodies of the HTTP API (requests and answers) and the limits every request is held to.

The request bodies are built per app (:func:`request_models`), so that /docs shows the limits
and the adapters of the running server; :mod:`pinzi.serve` answers them.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from pinzi.pinyin import FUZZY_PAIRS
from pinzi.shuangpin import SCHEME_NAMES


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; the defaults suit an input method and small batch jobs."""

    max_body_bytes: int = 64 * 1024  # the whole request body
    max_chars: int = 256  # one pinyin buffer, line, context or text (an IME buffer is ~30)
    max_batch: int = 256  # lines per /v1/convert, texts per /v1/classify
    max_k: int = 50  # candidates per /v1/candidates (a page)
    max_offset: int = 1000  # how deep /v1/candidates pages
    max_queue: int = 64  # conversions waiting for a thread (~1 s of keystrokes); more get 503


class Prediction(Protocol):
    label: str
    prob: float


class Classifier(Protocol):
    """What /v1/classify needs: one prediction (label, probability) per text, in order."""

    def predict(self, texts: list[str]) -> Sequence[Prediction]: ...


FuzzyName = Literal[("all", *FUZZY_PAIRS)]  # type: ignore[valid-type]


@dataclass(frozen=True)
class Requests:
    """The request bodies of one app (see :func:`request_models`)."""

    candidates: type[BaseModel]
    convert: type[BaseModel]
    predict: type[BaseModel]
    learn: type[BaseModel]
    classify: type[BaseModel]


def request_models(limits: Limits, adapters: Sequence[str] = ()) -> Requests:
    """The request bodies under ``limits``: built per app so that /docs shows the real limits
    and the adapters loaded."""
    adapter_help = ("A LoRA adapter loaded at start-up: "
                    + (", ".join(adapters) if adapters else "none are (pinzi serve --adapter)")
                    + ". Default: the base model.")
    Text = Annotated[str, Field(max_length=limits.max_chars)]
    Batch = Annotated[list[Text], Field(max_length=limits.max_batch)]
    Scheme = Literal[SCHEME_NAMES] | None  # type: ignore[valid-type]
    scheme_help = "pinyin or a shuangpin (双拼) scheme; default: the server's."
    traditional_help = ("Answer in traditional characters (OpenCC s2t). Default: pinzi serve "
                        "--traditional.")

    class Strict(BaseModel):
        model_config = ConfigDict(extra="forbid")  # a misspelt option is an error, not ignored

    class Options(Strict):
        context: Text = Field("", description="Hanzi already committed to the left (its tail).")
        fuzzy: list[FuzzyName] = Field([], description="Fuzzy pinyin pairs, or ['all'].")
        punct: bool = Field(False, description="Map ASCII punctuation to Chinese punctuation.")
        traditional: bool | None = Field(None, description=traditional_help)
        scheme: Scheme = Field(None, description=scheme_help)
        adapter: str | None = Field(None, description=adapter_help)

    class CandidatesRequest(Options):
        pinyin: Text = Field(examples=["woaibeijing"])
        k: int = Field(5, ge=1, le=limits.max_k, description="How many candidates (a page).")
        offset: int = Field(0, ge=0, le=limits.max_offset,
                            description="Candidates to skip: the next page is offset + k.")

    class ConvertRequest(Options):
        pinyin: Batch = Field(examples=[["woaibeijingtiananmen", "nihao"]])

    class PredictRequest(Strict):
        context: Text = Field(examples=["我爱北京"], description="The text committed so far.")
        k: int = Field(5, ge=1, le=limits.max_k, description="How many next words.")
        traditional: bool | None = Field(None, description=traditional_help)
        adapter: str | None = Field(None, description=adapter_help)

    class LearnRequest(Strict):
        pinyin: Text = Field(examples=["yinhang"], description="What was typed for the pick.")
        hanzi: Text = Field(examples=["银行"], description="What was picked for all of it.")
        fuzzy: list[FuzzyName] = Field([], description="Fuzzy pinyin pairs, or ['all'].")
        scheme: Scheme = Field(None, description=scheme_help)

    class ClassifyRequest(Strict):
        texts: Batch = Field(examples=[["今天天气很好"]])

    return Requests(CandidatesRequest, ConvertRequest, PredictRequest, LearnRequest,
                    ClassifyRequest)


class Candidate(BaseModel):
    hanzi: str
    score: float  # log-score of what it covers: higher is better, 0 is certain
    consumed: int  # characters of the pinyin it covers: commit it, keep pinyin[consumed:]


class CandidatesResponse(BaseModel):
    pinyin: str  # echoed, so a client can drop answers to buffers it no longer shows
    offset: int
    more: bool  # whether the next page (offset + k) has candidates
    candidates: list[Candidate]


class NextWord(BaseModel):
    hanzi: str
    score: float  # log-score: higher is better


class PredictResponse(BaseModel):
    context: str  # echoed, as pinyin is by /v1/candidates
    predictions: list[NextWord]


class LearnResponse(BaseModel):
    learned: int  # words learned so far


class ForgetResponse(BaseModel):
    forgotten: int


class ConvertResponse(BaseModel):
    hanzi: list[str]  # the best conversion of each pinyin buffer, in order


class Label(BaseModel):
    label: str
    prob: float


class ClassifyResponse(BaseModel):
    results: list[Label]


class Health(BaseModel):
    status: str
    version: str
    backend: str
    adapters: list[str]
    classifier: bool
    learning: bool  # whether /v1/learn learns (pinzi serve --user-dir)
    limits: dict[str, int]


class Error(BaseModel):
    detail: str
    errors: list[dict] | None = None  # per field, for 422


ERRORS = {code: {"model": Error} for code in (401, 413, 422, 503)}
NO_LEARNING = ("learning is off: start the server with --user-dir DIR to learn from picks "
               "(kept in DIR)")
