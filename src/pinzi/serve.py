"""The pinzi HTTP server: pinyin -> hanzi for input methods, and a page to try it in a browser.

    pinzi serve --model runs/small                  # then open http://127.0.0.1:8000/
    curl -s localhost:8000/v1/candidates -H 'content-type: application/json' \\
         -d '{"pinyin": "woaibeijing", "context": "", "k": 5}'

Routes (interactive docs at /docs and /redoc, served offline):

    POST /v1/candidates  a pinyin buffer + committed left context -> a page of candidates, each
                         with how much of the buffer it covers: an IME's keystroke call
    POST /v1/predict     committed text -> likely next words (联想)
    POST /v1/learn       a pick (pinyin, hanzi) to learn; DELETE forgets all (--user-dir only)
    POST /v1/convert     a batch of pinyin buffers -> the best hanzi of each
    POST /v1/classify    texts -> (label, probability); only when the app is given a classifier
    GET  /healthz        liveness, the backend and the limits
    GET  /               the input-method page (static/index.html)

LoRA adapters loaded at start-up (``pinzi serve --adapter NAME=DIR``) are chosen per request
with ``"adapter": "NAME"``; without it the base model answers. :class:`Limits` bound every
request (413 or 422 with a message that names what was wrong: nothing a client sends can
produce a 500), and control characters are dropped before conversion. Conversions run on a few
threads (:class:`ConversionPool`), never on the event loop, with 503 past ``max_queue``;
`pinzi serve` runs :class:`GuardedHttp`, which closes connections that never finish a request.

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
from functools import partial
from importlib import resources

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request, Security
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from pinzi import __version__
from pinzi.converter import Converter
from pinzi.errors import OutputError, PinziError, SettingsError
from pinzi.guard import ConversionPool
from pinzi.schemas import (
    ERRORS,
    NO_LEARNING,
    Candidate,
    CandidatesResponse,
    Classifier,
    ClassifyResponse,
    ConvertResponse,
    Error,
    ForgetResponse,
    Health,
    Label,
    LearnResponse,
    Limits,
    NextWord,
    PredictResponse,
    request_models,
)
from pinzi.text import normalise

STATIC = resources.files("pinzi") / "static"


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
            if message["type"] == "http.disconnect":  # gone (or cut off by GuardedHttp)
                return
            messages.append(message)
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return await self._refuse(scope, receive, send, f"over {self.max_bytes} bytes")
            if not message.get("more_body"):
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


def _why_unparsable(cause: BaseException) -> str:
    if isinstance(cause, UnicodeDecodeError):
        return f"not UTF-8 ({cause.reason})"
    if isinstance(cause, RecursionError):
        return "nested too deeply"
    # e.g. "Exceeds the limit (4300 digits) for integer string conversion: value has 5000
    # digits", without the advice to the server's programmer that follows
    return str(cause).split(";")[0] or type(cause).__name__


async def _http_error(request: Request, error: Exception) -> Response:
    # FastAPI answers a body its JSON parser raises on (not UTF-8, nested ~1,000 levels, a
    # number of thousands of digits) with a bare 400 "error parsing the body": it is malformed
    # JSON like any other, so it gets the same 422 and says why.
    assert isinstance(error, StarletteHTTPException)
    if error.status_code == 400 and error.__cause__ is not None:
        detail = f"body: malformed JSON: {_why_unparsable(error.__cause__)}"
        return JSONResponse({"detail": detail}, status_code=422)
    return await http_exception_handler(request, error)


async def _user_error(request: Request, error: Exception) -> JSONResponse:
    # e.g. the converter's own ceiling (MAX_INPUT_CHARS), reached when Limits are set above it,
    # or a pick /v1/learn refuses; 507 when what was learned cannot be saved (a full disk)
    status = 507 if isinstance(error, OutputError) else 422
    return JSONResponse({"detail": str(error)}, status_code=status)


def _bearer(api_key: str):
    # Header values reach the app as Latin-1 and browsers send nothing else: a key outside
    # printable ASCII could never match what a client sends, so it is refused at start-up.
    if not all("!" <= char <= "~" for char in api_key):
        raise SettingsError("the API key must be printable ASCII without spaces or control "
                            "characters (e.g. `python -c 'import secrets; "
                            "print(secrets.token_urlsafe())'`)")
    scheme = HTTPBearer(auto_error=False,
                        description="The key given to `pinzi serve` in PINZI_API_KEY.")

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
    traditional: bool = False  # answers in traditional characters unless a request says not
    scheme: str | None = None  # how a request without a "scheme" is typed; None: pinyin
    user_dir: str | None = None  # where /v1/learn keeps what it learns; None: learning is off


def build_app(config: ServeConfig) -> FastAPI:
    """Load the model (and classifier) of ``config`` and build the app around them.

    Raises a :class:`~pinzi.errors.PinziError` with a message for the user.
    """
    defaults = dict(threads=config.threads, traditional=config.traditional, scheme=config.scheme)
    converter = Converter.from_pretrained(config.model, backend=config.backend,
                                          user_dir=config.user_dir, **defaults)
    # Each adapter is merged into its own copy of the base on PyTorch (the base's 5M weights
    # are small); all of them share the base's n-gram tables and what it learns.
    adapters = {name: Converter.from_pretrained(config.model, adapter=path, backend="torch",
                                                ngram=converter.ngram, words=converter.words,
                                                learned=converter.learned, **defaults)
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
               cors_origins: Sequence[str] = (), limits: Limits = Limits(),
               conversion_threads: int = 2) -> FastAPI:
    """The pinzi app around a loaded ``converter`` (and optionally a ``classifier``).

    ``adapters``: converters of the same base with a LoRA adapter each, by the name a request
    gives in its ``adapter`` field. ``conversion_threads``: keystrokes converted at once (batches
    get one thread of their own); past ``limits.max_queue`` waiting, 503.
    Raises :class:`~pinzi.errors.SettingsError` for an API key no client could send.

    >>> from fastapi.testclient import TestClient                          # doctest: +SKIP
    >>> client = TestClient(create_app(Converter.from_pretrained()))       # doctest: +SKIP
    >>> client.post("/v1/convert", json={"pinyin": ["nihao"]}).json()      # doctest: +SKIP
    {'hanzi': ['你好']}
    """
    adapters = dict(adapters or {})
    requests = request_models(limits, list(adapters))
    CandidatesRequest, ConvertRequest = requests.candidates, requests.convert
    PredictRequest, LearnRequest, ClassifyRequest = (requests.predict, requests.learn,
                                                     requests.classify)
    backend = converter.scorer.name
    learning = converter.learned.directory is not None
    guard = [Depends(_bearer(api_key))] if api_key else []
    keystrokes = ConversionPool(conversion_threads, limits.max_queue)
    # A batch can take most of a minute: batches get a thread of their own, never the keys'.
    batches = ConversionPool(1, limits.max_queue)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # The first call fills lazy caches (normalise's table of control characters, OpenCC's):
        # pay for it here rather than on a user's keystroke.
        for each in (converter, *adapters.values()):
            await keystrokes.run(partial(each.candidates, normalise("\0nihao"), traditional=True))
        yield
        for pool in (keystrokes, batches):
            pool.close()

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
                           allow_methods=["GET", "POST", "DELETE"],
                           allow_headers=["Authorization", "Content-Type"])

    v1 = APIRouter(prefix="/v1", responses=ERRORS, dependencies=guard)

    def options(body) -> dict:
        return dict(context=normalise(body.context), fuzzy=body.fuzzy, punct=body.punct,
                    traditional=body.traditional, scheme=body.scheme)

    def converter_for(body) -> Converter:
        if body.adapter is None:
            return converter
        if body.adapter not in adapters:
            loaded = ", ".join(adapters) or "none (start the server with --adapter NAME=DIR)"
            raise HTTPException(422, f"adapter: unknown adapter {body.adapter!r}; loaded: "
                                     f"{loaded}")
        return adapters[body.adapter]

    @v1.post("/candidates", response_model=CandidatesResponse)
    async def candidates(body: CandidatesRequest) -> CandidatesResponse:  # type: ignore[valid-type]
        """A page of candidates for one pinyin buffer: what an IME asks on each keystroke.
        Each says how many characters of the buffer it covers (``consumed``): the best whole
        conversion first, then the words the buffer starts with; commit one and keep
        ``pinyin[consumed:]``."""
        found = await keystrokes.run(partial(
            converter_for(body).candidates, normalise(body.pinyin), k=body.k + 1,
            offset=body.offset, **options(body)))
        return CandidatesResponse(pinyin=body.pinyin, offset=body.offset,
                                  more=len(found) > body.k, candidates=[
            Candidate(hanzi=c.hanzi, score=round(c.score, 4), consumed=c.consumed)
            for c in found[:body.k]])

    @v1.post("/predict", response_model=PredictResponse)
    async def predict(body: PredictRequest) -> PredictResponse:  # type: ignore[valid-type]
        """Likely next words after the committed text (联想), best first."""
        context = normalise(body.context)
        found = await keystrokes.run(partial(converter_for(body).predict, context, k=body.k,
                                             traditional=body.traditional))
        return PredictResponse(context=body.context, predictions=[
            NextWord(hanzi=p.hanzi, score=round(p.score, 4)) for p in found])

    @v1.post("/learn", response_model=LearnResponse,
             responses={404: {"model": Error}, 507: {"model": Error}})
    async def learn(body: LearnRequest) -> LearnResponse:  # type: ignore[valid-type]
        """Learn a pick: later conversions prefer ``hanzi`` where its pinyin fits, and a new
        word becomes a candidate, by its initials too. Kept in the server's --user-dir."""
        if not learning:
            raise HTTPException(404, NO_LEARNING)
        await keystrokes.run(partial(converter.learn, normalise(body.pinyin),
                                     normalise(body.hanzi), fuzzy=body.fuzzy,
                                     scheme=body.scheme))
        return LearnResponse(learned=len(converter.learned))

    @v1.delete("/learn", response_model=ForgetResponse,
               responses={404: {"model": Error}, 507: {"model": Error}})
    async def forget() -> ForgetResponse:
        """Forget everything learned."""
        if not learning:
            raise HTTPException(404, NO_LEARNING)
        return ForgetResponse(forgotten=await keystrokes.run(converter.forget))

    @v1.post("/convert", response_model=ConvertResponse)
    async def convert(body: ConvertRequest) -> ConvertResponse:  # type: ignore[valid-type]
        """The best conversion of each line; every line gets the same left context."""
        pinyin = [normalise(line) for line in body.pinyin]
        return ConvertResponse(hanzi=await batches.run(partial(
            converter_for(body).convert_batch, pinyin, **options(body))))

    if classifier is not None:
        @v1.post("/classify", response_model=ClassifyResponse)
        async def classify(body: ClassifyRequest) -> ClassifyResponse:  # type: ignore[valid-type]
            """A label and its probability for each text."""
            predicted = await batches.run(partial(classifier.predict, list(body.texts)))
            return ClassifyResponse(results=[Label(label=p.label, prob=p.prob) for p in predicted])
    else:
        @v1.post("/classify", include_in_schema=False)
        async def no_classifier() -> None:
            raise HTTPException(404, "no classifier is loaded: start the server with "
                                     "--classifier DIR (a folder from `pinzi classify train`)")

    app.include_router(v1)

    # async: answered on the event loop, so a probe never queues behind busy inference threads
    @app.get("/healthz", response_model=Health)
    async def healthz() -> Health:
        return Health(status="ok", version=__version__, backend=backend, adapters=list(adapters),
                      classifier=classifier is not None, learning=learning,
                      limits=asdict(limits))

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(str(STATIC / "index.html"))

    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    return app
