"""The pinzi HTTP server: pinyin -> hanzi for input methods, and a page to try it in a browser.

    pinzi serve --model runs/small                  # then open http://127.0.0.1:8000/
    curl -s localhost:8000/v1/candidates -H 'content-type: application/json' \\
         -d '{"pinyin": "woaibeijing", "context": "", "k": 5}'

Routes (interactive docs at /docs and /redoc, served offline):

    POST /v1/candidates  a pinyin buffer + committed left context -> n-best: an IME's keystroke call
    POST /v1/convert     a batch of pinyin lines -> hanzi lines
    POST /v1/classify    texts -> (label, probability); only when the app is given a classifier
    GET  /healthz        liveness, the backend and the limits
    GET  /               the input-method page (static/index.html)

LoRA adapters loaded at start-up (``pinzi serve --adapter NAME=DIR``) are chosen per request
with ``"adapter": "NAME"`` on /v1/candidates and /v1/convert; without it the base model answers.

Every request is bounded by :class:`Limits`: a body over ``max_body_bytes`` gets 413, a text
over ``max_chars``, a batch over ``max_batch`` or a bad field gets 422, each with a message
that names what was wrong. Nothing a client sends can produce a 500.

With an API key every /v1 route wants ``Authorization: Bearer KEY`` (401 otherwise). /healthz,
the page and the docs stay open: they reveal nothing, a load balancer's probe carries no key,
and the page asks for the key once a /v1 call answers 401. CORS is off unless origins are given.
"""

import json
import os
import secrets
from collections.abc import Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Annotated, Literal, Protocol

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from pinzi import __version__
from pinzi.converter import Converter
from pinzi.errors import PinziError
from pinzi.pinyin import FUZZY_PAIRS

STATIC = resources.files("pinzi") / "static"


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; the defaults suit an input method and small batch jobs."""

    max_body_bytes: int = 64 * 1024  # the whole request body
    max_chars: int = 256  # one pinyin buffer, line, context or text (an IME buffer is ~30)
    max_batch: int = 256  # lines per /v1/convert, texts per /v1/classify
    max_k: int = 20  # candidates per /v1/candidates


class Prediction(Protocol):
    label: str
    prob: float


class Classifier(Protocol):
    """What /v1/classify needs: one prediction (label, probability) per text, in order."""

    def predict(self, texts: list[str]) -> Sequence[Prediction]: ...


# ---- request and response bodies ----------------------------------------------------------------
FuzzyName = Literal[("all", *FUZZY_PAIRS)]  # type: ignore[valid-type]


def request_models(limits: Limits, adapters: Sequence[str] = ()
                   ) -> tuple[type[BaseModel], type[BaseModel], type[BaseModel]]:
    """The request bodies under ``limits``: built per app so that /docs shows the real limits
    and the adapters loaded."""
    adapter_help = ("A LoRA adapter loaded at start-up: "
                    + (", ".join(adapters) if adapters else "none are (pinzi serve --adapter)")
                    + ". Default: the base model.")
    Text = Annotated[str, Field(max_length=limits.max_chars)]
    Batch = Annotated[list[Text], Field(max_length=limits.max_batch)]

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")  # a misspelt option is an error, not ignored
        context: Text = Field("", description="Hanzi already committed to the left (its tail).")
        fuzzy: list[FuzzyName] = Field([], description="Fuzzy pinyin pairs, or ['all'].")
        punct: bool = Field(False, description="Map ASCII punctuation to Chinese punctuation.")
        adapter: str | None = Field(None, description=adapter_help)

    class CandidatesRequest(Options):
        pinyin: Text = Field(examples=["woaibeijing"])
        k: int = Field(5, ge=1, le=limits.max_k, description="How many candidates.")

    class ConvertRequest(Options):
        lines: Batch = Field(examples=[["woaibeijingtiananmen", "nihao"]])

    class ClassifyRequest(BaseModel):
        model_config = ConfigDict(extra="forbid")
        texts: Batch = Field(examples=[["今天天气很好"]])

    return CandidatesRequest, ConvertRequest, ClassifyRequest


class Candidate(BaseModel):
    hanzi: str
    score: float  # log-score of the whole conversion: higher is better, 0 is certain


class CandidatesResponse(BaseModel):
    pinyin: str  # echoed, so a client can drop answers to buffers it no longer shows
    candidates: list[Candidate]


class ConvertResponse(BaseModel):
    lines: list[str]


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
    limits: dict[str, int]


class Error(BaseModel):
    detail: str
    errors: list[dict] | None = None  # per field, for 422


ERRORS = {code: {"model": Error} for code in (401, 413, 422)}


# ---- middleware and handlers --------------------------------------------------------------------
class BodyLimit:
    """Answers 413 to a request body over ``max_bytes``, announced or streamed, before the app
    reads it. Bodies under the limit (a few KiB) are buffered and replayed to the app."""

    def __init__(self, app: ASGIApp, max_bytes: int):
        self.app, self.max_bytes = app, max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_bytes:
            return await self._refuse(scope, receive, send, f"{int(length)} bytes")
        messages, size = [], 0
        while True:
            message = await receive()
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await self._refuse(scope, receive, send, f"over {self.max_bytes} bytes")
            if message["type"] != "http.request" or not message.get("more_body"):
                break

        async def replay() -> dict:
            return messages.pop(0) if messages else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, size: str) -> None:
        detail = (f"request body too large: {size}; the limit is {self.max_bytes} bytes "
                  f"({self.max_bytes // 1024} KiB)")
        await JSONResponse({"detail": detail}, status_code=413)(scope, receive, send)


async def _validation_error(request: Request, error: Exception) -> JSONResponse:
    """422 with one readable line (``lines.3: String should have at most 256 characters``)."""
    assert isinstance(error, RequestValidationError)
    errors = []
    for e in error.errors():  # the offending input is left out: it may be large or unprintable
        where = ".".join(str(part) for part in e["loc"] if part != "body") or "body"
        message = e["msg"]
        if e["type"] == "json_invalid":
            where, message = "body", f"malformed JSON: {e.get('ctx', {}).get('error', message)}"
        elif where == "body" and e["type"] == "model_attributes_type":
            message = "expected a JSON object (and Content-Type: application/json)"
        errors.append({"loc": where, "msg": message, "type": e["type"]})
    detail = "; ".join(f"{e['loc']}: {e['msg']}" for e in errors[:5])
    return JSONResponse({"detail": detail, "errors": errors}, status_code=422)


async def _http_error(request: Request, error: Exception) -> Response:
    # FastAPI answers a body that is not UTF-8 with a bare 400 "error parsing the body": it is
    # malformed JSON like any other, so it gets the same 422 and says why.
    assert isinstance(error, StarletteHTTPException)
    if error.status_code == 400 and isinstance(error.__cause__, UnicodeDecodeError):
        detail = f"body: malformed JSON: not UTF-8 ({error.__cause__.reason})"
        return JSONResponse({"detail": detail}, status_code=422)
    return await http_exception_handler(request, error)


async def _user_error(request: Request, error: Exception) -> JSONResponse:
    # A problem with what the client asked, e.g. the converter's own ceiling (MAX_INPUT_CHARS),
    # reached only when Limits are set above it.
    return JSONResponse({"detail": str(error)}, status_code=422)


def _bearer(api_key: str):
    scheme = HTTPBearer(auto_error=False, description="The key given to `pinzi serve --api-key`.")

    def check(credentials: HTTPAuthorizationCredentials | None = Security(scheme)) -> None:
        given = credentials.credentials.encode() if credentials else b""
        if not secrets.compare_digest(given, api_key.encode()):  # constant time: no key oracle
            raise HTTPException(401, "missing or wrong API key: send 'Authorization: Bearer KEY'",
                                headers={"WWW-Authenticate": "Bearer"})

    return check


# ---- the app -------------------------------------------------------------------------------------
WORKER_CONFIG = "PINZI_SERVE_WORKER"  # how `pinzi serve --workers N` hands its options to workers


@dataclass(frozen=True)
class ServeConfig:
    """What `pinzi serve` loads: JSON-able, so that worker processes can load the same."""

    model: str | None = None  # a folder or hub id; None: the shipped model
    backend: str = "auto"
    threads: int = 1
    api_key: str | None = None
    cors_origins: tuple[str, ...] = ()
    classifier: str | None = None  # a folder from `pinzi classify train`
    adapters: dict[str, str] = field(default_factory=dict)  # name -> `pinzi finetune --lora` dir


def build_app(config: ServeConfig) -> FastAPI:
    """Load the model (and classifier) of ``config`` and build the app around them.

    Raises a :class:`~pinzi.errors.PinziError` with a message for the user.
    """
    converter = Converter.from_pretrained(config.model, backend=config.backend,
                                          threads=config.threads)
    # Each adapter is merged into its own copy of the base on PyTorch (the base's 5M weights
    # are small); all of them share the base's n-gram tables.
    adapters = {name: Converter.from_pretrained(config.model, adapter=path, backend="torch",
                                                threads=config.threads, ngram=converter.ngram)
                for name, path in config.adapters.items()}
    classifier = None
    if config.classifier is not None:
        from pinzi.classifier import TextClassifier  # torch: only with --classifier

        classifier = TextClassifier.load(config.classifier, device="cpu")
    return create_app(converter, adapters=adapters, classifier=classifier,
                      api_key=config.api_key or None, cors_origins=config.cors_origins)


def worker_app() -> FastAPI:
    """The app factory uvicorn calls in each worker process of `pinzi serve --workers N`."""
    return build_app(ServeConfig(**json.loads(os.environ[WORKER_CONFIG])))


def create_app(converter: Converter, *, adapters: Mapping[str, Converter] | None = None,
               classifier: Classifier | None = None, api_key: str | None = None,
               cors_origins: Sequence[str] = (), limits: Limits = Limits()) -> FastAPI:
    """The pinzi app around a loaded ``converter`` (and optionally a ``classifier``).

    ``adapters``: converters of the same base with a LoRA adapter each, by the name a request
    gives in its ``adapter`` field.

    >>> from fastapi.testclient import TestClient                          # doctest: +SKIP
    >>> client = TestClient(create_app(Converter.from_pretrained()))       # doctest: +SKIP
    >>> client.post("/v1/convert", json={"lines": ["nihao"]}).json()       # doctest: +SKIP
    {'lines': ['你好']}
    """
    adapters = dict(adapters or {})
    CandidatesRequest, ConvertRequest, ClassifyRequest = request_models(limits, list(adapters))
    backend = converter.scorer.name

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # The first call fills lazy caches: pay for it here rather than on a user's keystroke.
        for each in (converter, *adapters.values()):
            await run_in_threadpool(each.candidates, "nihao")
        yield

    # FastAPI's own /docs and /redoc load their scripts from a CDN; FastAPIOffline serves
    # packaged copies, so the docs work offline like the page does.
    app = FastAPIOffline(title="pinzi", version=__version__, lifespan=lifespan,
                  description="Pinyin to hanzi conversion (拼字). Limits: "
                              + ", ".join(f"{k}={v}" for k, v in asdict(limits).items()))
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(PinziError, _user_error)
    app.add_middleware(BodyLimit, max_bytes=limits.max_body_bytes)
    if cors_origins:  # added last, so outermost: errors from BodyLimit carry CORS headers too
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins),
                           allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])

    v1 = APIRouter(prefix="/v1", responses=ERRORS,
                   dependencies=[Depends(_bearer(api_key))] if api_key else [])

    def options(body) -> dict:
        fuzzy = frozenset(FUZZY_PAIRS) if "all" in body.fuzzy else frozenset(body.fuzzy)
        return dict(context=body.context, fuzzy=fuzzy, chinese_punct=body.punct)

    def converter_for(body) -> Converter:
        if body.adapter is None:
            return converter
        if body.adapter not in adapters:
            loaded = ", ".join(adapters) or "none (start the server with --adapter NAME=DIR)"
            raise HTTPException(422, f"adapter: unknown adapter {body.adapter!r}; loaded: "
                                     f"{loaded}")
        return adapters[body.adapter]

    # A keystroke on onnxruntime takes a few milliseconds, little more than a hop to the
    # threadpool and back costs under load: run on the event loop it served 30% more requests a
    # second (bench/serve_load.py, 50 clients flat out, 2 workers, before the word list). A
    # scorer that is not that cheap
    # (PyTorch, which adapters run on) goes to the threadpool, so that it never holds up the
    # loop and /healthz. Batches can take seconds, so /v1/convert and /v1/classify are plain
    # `def` routes, which FastAPI runs in its threadpool.
    @v1.post("/candidates", response_model=CandidatesResponse)
    async def candidates(body: CandidatesRequest) -> CandidatesResponse:  # type: ignore[valid-type]
        """The n-best conversions of one pinyin buffer: what an IME asks on each keystroke."""
        chosen = converter_for(body)
        if chosen.scorer.cheap:
            best = chosen.candidates(body.pinyin, k=body.k, **options(body))
        else:
            best = await run_in_threadpool(chosen.candidates, body.pinyin, k=body.k,
                                           **options(body))
        return CandidatesResponse(pinyin=body.pinyin, candidates=[
            Candidate(hanzi=hanzi, score=round(score, 4)) for hanzi, score in best])

    @v1.post("/convert", response_model=ConvertResponse)
    def convert(body: ConvertRequest) -> ConvertResponse:  # type: ignore[valid-type]
        """The best conversion of each line; every line gets the same left context."""
        return ConvertResponse(lines=converter_for(body).convert_batch(body.lines,
                                                                       **options(body)))

    if classifier is not None:
        @v1.post("/classify", response_model=ClassifyResponse)
        def classify(body: ClassifyRequest) -> ClassifyResponse:  # type: ignore[valid-type]
            """A label and its probability for each text."""
            predictions = classifier.predict(list(body.texts))
            return ClassifyResponse(results=[Label(label=p.label, prob=p.prob)
                                             for p in predictions])

    app.include_router(v1)

    # async: answered on the event loop, so a probe never queues behind busy inference threads
    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health(status="ok", version=__version__, backend=backend,
                      adapters=list(adapters), classifier=classifier is not None,
                      limits=asdict(limits))

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"))

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app
