"""The HTTP layer: OpenAI's audio transcription API over a Recognizer, and the web page.

    app = create_app(recognizer, options, ServeConfig(max_batch=16, api_key=None))    a Starlette (ASGI) app
    serve(recognizer, options, config, host="127.0.0.1", port=8000)                   runs it with uvicorn
    with running(app) as url: ...                                                      in a thread (tests)

    POST /v1/audio/transcriptions   multipart: file, model, language, prompt, temperature, response_format,
                                    timestamp_granularities[], and our `decoder` (e.g. "beam10:ctc_weight=0.5")
    GET  /v1/models, /v1/models/{id}   the loaded model
    GET  /health                     status, model, queue counters (no key needed)
    GET  /                           the page (asr/serve/index.html)

A request goes upload -> `load_audio` (any format soundfile reads) -> `Recognizer.cut` (pauses, like `asr
transcribe`) -> the batching queue (`Recognizer.decode_waveforms` on the chunks of all waiting requests) ->
`Recognizer.assemble` -> the response format. Reading and cutting run in a thread pool, decoding in the queue's one
worker thread, so the event loop only moves bytes. Every failure is an OpenAI-shaped error
`{"error": {"message", "type", "param", "code"}}` and touches no other request.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import re
import shutil
import socket
import tempfile
import time
import zlib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from torch import Tensor

from asr.audio import AudioError, audio_info, load_audio
from asr.decoding.options import DecodingOptions, OptionsError
from asr.recognizer import Recognizer
from asr.segment import Segment
from asr.serve.batching import BatchingQueue, QueueFull
from asr.transcript import Transcript, to_srt, to_vtt

log = logging.getLogger("asr.serve")

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("segment", "word")
# The form fields a request may carry; anything else is refused, so a misspelt option is never silently ignored.
FIELDS = (
    "file", "model", "language", "prompt", "temperature", "response_format", "timestamp_granularities[]",
    "timestamp_granularities", "stream", "decoder",
)  # fmt: skip


@dataclass
class ServeConfig:
    model_id: str = "asr"  # what GET /v1/models calls the model
    max_batch: int = 16  # chunks decoded in one batch (1: one at a time)
    max_wait_ms: float = 10.0  # how long the first waiting chunk waits for others
    max_queue: int = 256  # chunks waiting at most; a request that would overflow it gets 503
    max_upload_mb: float = 25.0  # request bodies above this get 413 (OpenAI's own limit is 25 MB)
    max_audio_seconds: float = 3600.0  # longer audio gets 400
    max_chunk_seconds: float | None = None  # longest chunk decoded at once (default: asr.segment's, 20 s)
    api_key: str | None = None  # when set, /v1/* needs "Authorization: Bearer <key>"


class APIError(Exception):
    """An HTTP error in OpenAI's shape; `param` names the request field at fault."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code

    def response(self) -> JSONResponse:
        kind = "server_error" if self.status >= 500 else "invalid_request_error"
        body = {"error": {"message": self.message, "type": kind, "param": self.param, "code": self.code}}
        headers = {"Retry-After": "1"} if self.status == 503 else None
        return JSONResponse(body, status_code=self.status, headers=headers)


@dataclass
class TranscriptionRequest:
    """A transcription request's validated parameters."""

    upload: UploadFile
    response_format: str
    granularities: tuple[str, ...]
    language: str
    options: DecodingOptions


class TranscriptionServer:
    """The state behind the routes: the recogniser, the server's decoding options, the queue, request ids."""

    def __init__(self, recognizer: Recognizer, options: DecodingOptions, config: ServeConfig):
        self.rec, self.options, self.config = recognizer, options, config
        self.queue = BatchingQueue(
            lambda chunks, opts: recognizer.decode_waveforms(chunks, opts, batch_size=config.max_batch),
            config.max_batch,
            config.max_wait_ms,
            config.max_queue,
        )
        self.ids = itertools.count(1)
        self.created = int(time.time())

    # --- routes ------------------------------------------------------------------------------------------------

    async def transcriptions(self, request: Request) -> Response:
        rid = f"req-{next(self.ids):06d}"
        start = time.perf_counter()
        audio_s, decode_ms, status = 0.0, 0.0, 200
        try:
            self.authorize(request)
            req = self.parse(await self.read_form(request))
            with self.queue.expecting():
                wav, cuts = await run_in_threadpool(self.load_and_cut, req.upload)
            audio_s = wav.numel() / self.rec.cfg.features.sample_rate
            t0 = time.perf_counter()
            try:
                hyps = await self.queue.decode(self.rec.chunks(wav, cuts), req.options)
            except QueueFull as e:
                raise APIError(503, str(e), code="queue_full") from None
            decode_ms = (time.perf_counter() - t0) * 1000
            return self.render(self.rec.assemble(wav, cuts, hyps), req)
        except APIError as e:
            status = e.status
            return e.response()
        except Exception as e:  # a bug must not take the server down: 500, logged with its traceback
            status = 500
            log.exception("%s failed", rid)
            return APIError(500, f"internal error: {type(e).__name__}: {e}", code="internal_error").response()
        finally:
            total_ms = (time.perf_counter() - start) * 1000
            log.info("%s %d audio %.2f s decode %.0f ms total %.0f ms", rid, status, audio_s, decode_ms, total_ms)

    async def models(self, request: Request) -> Response:
        try:
            self.authorize(request)
        except APIError as e:
            return e.response()
        return JSONResponse({"object": "list", "data": [self.model_card()]})

    async def model(self, request: Request) -> Response:
        try:
            self.authorize(request)
            if request.path_params["model"] != self.config.model_id:
                raise APIError(404, f"model {request.path_params['model']!r} is not served here", "model", "not_found")
        except APIError as e:
            return e.response()
        return JSONResponse(self.model_card())

    async def health(self, request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "model": self.config.model_id,
                "decoder": self.options.slug(),
                "api_key_required": self.config.api_key is not None,
                "queue": self.queue.stats.to_dict(),
            }
        )

    async def page(self, request: Request) -> Response:
        return HTMLResponse(PAGE)

    # --- steps -------------------------------------------------------------------------------------------------

    def model_card(self) -> dict:
        return {"id": self.config.model_id, "object": "model", "created": self.created, "owned_by": "asr"}

    def authorize(self, request: Request) -> None:
        key = self.config.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        if given != f"Bearer {key}":
            what = "no API key was given" if not given else "the API key is not valid"
            raise APIError(401, f"{what}: send Authorization: Bearer <key>", code="invalid_api_key")

    async def read_form(self, request: Request) -> FormData:
        """The multipart body, refused with 413 past the size limit (the rest of the body is still read, so the
        client gets the answer instead of a broken connection)."""
        ctype = request.headers.get("content-type", "")
        if not ctype.startswith("multipart/form-data"):
            raise APIError(
                400,
                f"send the audio as multipart/form-data with a 'file' field (got content type {ctype or 'none'!r})",
                "file",
                "invalid_content_type",
            )
        limit = int(self.config.max_upload_mb * 1024 * 1024)
        seen, over = 0, False

        async def body():
            nonlocal seen, over
            async for piece in request.stream():
                seen += len(piece)
                over = over or seen > limit
                if not over:
                    yield piece
                elif seen > 4 * limit:  # stop reading a runaway body; the connection closes
                    break

        too_big = APIError(
            413, f"the upload is larger than this server's limit of {self.config.max_upload_mb:g} MB", "file",
            "file_too_large",
        )  # fmt: skip
        try:
            form = await MultiPartParser(request.headers, body(), max_files=2, max_fields=32).parse()
        except MultiPartException as e:
            raise too_big if over else APIError(400, f"malformed multipart body: {e.message}", None, "invalid_body")
        if over:
            raise too_big
        return form

    def parse(self, form: FormData) -> TranscriptionRequest:
        unknown = sorted(set(form.keys()) - set(FIELDS))
        if unknown:
            raise APIError(
                400,
                f"unrecognized request argument {unknown[0]!r} (known: {', '.join(FIELDS)})",
                unknown[0],
                "unknown_parameter",
            )
        upload = form.get("file")
        if upload is None:
            raise APIError(400, "the request has no 'file' field (the audio to transcribe)", "file", "missing_file")
        if not isinstance(upload, UploadFile):
            raise APIError(400, "'file' must be a file upload, not a text field", "file", "invalid_file")
        fmt = str(form.get("response_format") or "json")
        if fmt not in RESPONSE_FORMATS:
            raise APIError(
                400,
                f"response_format {fmt!r} is not one of {', '.join(RESPONSE_FORMATS)}",
                "response_format",
                "invalid_value",
            )
        temperature = form.get("temperature")
        if temperature not in (None, ""):
            try:
                t = float(str(temperature))
            except ValueError:
                t = float("nan")
            if not 0.0 <= t <= 1.0:
                raise APIError(
                    400, f"temperature must be a number from 0 to 1, got {temperature!r}", "temperature",
                    "invalid_value",
                )  # fmt: skip
        granularities = tuple(
            str(g) for g in form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities")
        )
        for g in granularities:
            if g not in GRANULARITIES:
                raise APIError(
                    400, f"timestamp_granularities: {g!r} is not one of {', '.join(GRANULARITIES)}",
                    "timestamp_granularities", "invalid_value",
                )  # fmt: skip
        if granularities and fmt != "verbose_json":
            raise APIError(
                400, "timestamp_granularities needs response_format verbose_json", "timestamp_granularities",
                "invalid_value",
            )  # fmt: skip
        if str(form.get("stream") or "false").lower() not in ("false", "0"):
            raise APIError(
                400, "streaming transcription is not supported; leave stream unset", "stream", "invalid_value"
            )
        options = self.options
        if form.get("decoder"):
            try:
                options = self.rec.options(self.options, decoder=str(form.get("decoder")))
            except OptionsError as e:
                raise APIError(400, f"decoder: {e}", "decoder", "invalid_value") from None
        language = str(form.get("language") or "english")
        return TranscriptionRequest(upload, fmt, granularities, language, options)

    def load_and_cut(self, upload: UploadFile) -> tuple[Tensor, list[Segment]]:
        """The uploaded file -> (samples,) at the model's rate and its chunks. Runs in the thread pool, with one
        torch thread: the decoder owns the cores, and OpenMP teams of other threads competing for them slowed
        it down."""
        if torch.get_num_threads() != 1:  # per thread with OpenMP: the decoding thread keeps its own setting
            torch.set_num_threads(1)
        name = upload.filename or "upload"
        suffix = Path(name).suffix
        suffix = suffix.lower() if re.fullmatch(r"\.[A-Za-z0-9]{1,8}", suffix) else ""  # soundfile sniffs the rest
        f = upload.file
        f.seek(0, 2)
        if f.tell() == 0:
            raise APIError(400, f"{name}: the file is empty", "file", "empty_file")
        f.seek(0)
        sr = self.rec.cfg.features.sample_rate
        with tempfile.NamedTemporaryFile(suffix=suffix, prefix="asr-upload-") as tmp:
            shutil.copyfileobj(f, tmp)
            tmp.flush()
            try:
                frames, rate = audio_info(tmp.name)
                if frames / rate > self.config.max_audio_seconds:
                    raise APIError(
                        400, f"{name}: {frames / rate:.0f} s of audio is longer than this server's limit of "
                        f"{self.config.max_audio_seconds:g} s", "file", "audio_too_long",
                    )  # fmt: skip
                wav = load_audio(tmp.name, sr)
            except AudioError as e:
                raise APIError(400, str(e).replace(tmp.name, name), "file", "invalid_audio") from None
        return wav, self.rec.cut(wav, self.config.max_chunk_seconds)

    def render(self, t: Transcript, req: TranscriptionRequest) -> Response:
        fmt = req.response_format
        if fmt == "json":
            return JSONResponse({"text": t.text})
        if fmt == "text":
            return PlainTextResponse(t.text + "\n")
        if fmt == "srt":
            return PlainTextResponse(to_srt(t))
        if fmt == "vtt":
            return PlainTextResponse(to_vtt(t), media_type="text/vtt")
        return JSONResponse(verbose_json(t, req.language, req.granularities))


def verbose_json(t: Transcript, language: str, granularities: tuple[str, ...] = ()) -> dict:
    """OpenAI's verbose_json: segments (unless only words were asked for) and, with "word", the words with times
    (token times: from the CTC path for ctc and mask-ctc, by CTC forced alignment for the attention decoders; a
    model without a CTC head has none)."""
    out: dict[str, Any] = {"task": "transcribe", "language": language, "duration": round(t.duration, 3), "text": t.text}
    if not granularities or "segment" in granularities:
        out["segments"] = [
            {
                "id": i,
                "seek": round(s.start * 100),  # centiseconds, as whisper counts its 10 ms frames
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text,
                "tokens": list(s.tokens or []),
                "temperature": 0.0,
                "avg_logprob": s.score / (len(s.tokens or []) + 1),  # per token, <eos> included
                "compression_ratio": _compression_ratio(s.text),
                "no_speech_prob": 0.0,  # chunks are cut where there is speech; silence is never decoded
            }
            for i, s in enumerate(t.segments)
        ]
    if "word" in granularities:
        out["words"] = [
            {"word": w.text, "start": round(w.start, 3), "end": round(w.end, 3)}
            for s in t.segments
            for w in s.words or []
        ]
    return out


def _compression_ratio(text: str) -> float:
    raw = text.encode("utf-8")
    return round(len(raw) / len(zlib.compress(raw)), 3) if raw else 0.0


def _page() -> str:
    return resources.files("asr.serve").joinpath("index.html").read_text(encoding="utf-8")


PAGE = _page()


def create_app(
    recognizer: Recognizer,
    options: DecodingOptions,
    config: ServeConfig | None = None,
    decode_in_thread: bool = True,
) -> Starlette:
    """The ASGI app; its `state.server` is the TranscriptionServer (queue counters: `.queue.stats`). With
    `decode_in_thread` the app starts and stops its decoding worker thread itself; otherwise the caller runs
    `state.server.queue.run()` (`serve` does, in the main thread)."""
    server = TranscriptionServer(recognizer, options, config or ServeConfig())

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if decode_in_thread:
            server.queue.start()
        try:
            yield
        finally:
            if decode_in_thread:
                server.queue.stop()

    app = Starlette(
        routes=[
            Route("/v1/audio/transcriptions", server.transcriptions, methods=["POST"]),
            Route("/v1/models", server.models, methods=["GET"]),
            Route("/v1/models/{model}", server.model, methods=["GET"]),
            Route("/health", server.health, methods=["GET"]),
            Route("/", server.page, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.server = server
    return app


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: a free one), so the caller knows the port before the server starts."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # connections wait in the backlog until the server accepts them
    except OSError as e:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    return sock


def make_server(app: Starlette):
    """A uvicorn server for `app`: `.run(sockets=[bind(host, port)])`, in a thread for tests."""
    import uvicorn

    return uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on"))


@contextlib.contextmanager
def running(app: Starlette, host: str = "127.0.0.1", port: int = 0):
    """Serve `app` from a background thread (a notebook, a test): yields its base URL, stops on exit."""
    import threading

    sock = bind(host, port)
    server = make_server(app)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


def serve(
    recognizer: Recognizer, options: DecodingOptions, config: ServeConfig, host: str = "127.0.0.1", port: int = 8000
) -> None:
    """Run the server until Ctrl-C or SIGTERM: HTTP in a thread, decoding in the main thread (faster here, see
    BatchingQueue.run). On shutdown the requests in flight are answered first."""
    import signal
    import sys
    import threading

    # The decoder loop hands the GIL back at every torch op; with HTTP threads busy it waited up to the default 5 ms
    # switch interval to get it again each time. 0.5 ms: +14% throughput with 32 clients (scripts/bench_serve.py).
    sys.setswitchinterval(0.0005)
    sock = bind(host, port)
    app = create_app(recognizer, options, config, decode_in_thread=False)
    server = make_server(app)
    http = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="asr-http", daemon=True)

    def terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    http.start()
    shown = f"[{host}]" if ":" in host else host
    log.info(
        "serving %s (%s) on http://%s:%d  (max batch %d, max wait %g ms, queue %d)",
        config.model_id, options.slug(), shown, sock.getsockname()[1], config.max_batch, config.max_wait_ms,
        config.max_queue,
    )  # fmt: skip
    queue = app.state.server.queue
    try:
        queue.run(until=lambda: not http.is_alive())
    except KeyboardInterrupt:
        log.info("shutting down: answering the requests in flight")
        server.should_exit = True
        queue.run(until=lambda: not http.is_alive())
    finally:
        sock.close()
