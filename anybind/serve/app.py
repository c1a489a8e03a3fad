"""The HTTP layer: a FastAPI app over a :class:`~anybind.serve.service.SearchService`.

``create_app(index, model)`` returns an ASGI app (run it with uvicorn, or ``anybind-serve``)::

    POST /search               JSON {"queries": [{"text": ...} | {"id": ...}], "k": 10, "modalities": [...]}
                               or multipart: files in field "file", optional fields "queries" (JSON), "text", "k",
                               "modalities"
    GET  /items/{item}         the item's media (only items in the index: no path from a request is ever opened)
    GET  /items/{item}/preview a small PNG/JPEG preview (cached)
    GET  /info, GET /health, the page at /, OpenAPI at /docs
"""

# no "from __future__ import annotations": FastAPI reads the endpoints' annotations (Request) at run time
import contextlib
import hmac
import json
import logging
import mimetypes
from importlib import resources
from ..errors import InputError
from .queries import RequestError, ServeSettings, Upload, safe_name
from .service import SearchService

log = logging.getLogger("anybind.serve")

TOKEN_COOKIE = "anybind_token"
MAX_JSON_BYTES = 1 << 20
PAGE_CSP = ("default-src 'self'; img-src 'self' blob: data:; media-src 'self' blob:; style-src 'self' 'unsafe-inline'; "
            "script-src 'self' 'unsafe-inline'; connect-src 'self'; object-src 'none'; base-uri 'none'; "
            "frame-ancestors 'none'")


class BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body past ``max_bytes`` is refused (413) before or while it is read."""

    def __init__(self, app, max_bytes: int):
        self.app, self.max_bytes = app, int(max_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            body = json.dumps({"detail": f"request body of {int(length)} bytes is over the limit of {self.max_bytes} "
                                         "bytes", "error": "too_large"}).encode()
            await send({"type": "http.response.start", "status": 413,
                        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                    (b"connection", b"close")]})
            await send({"type": "http.response.body", "body": body})
            return
        seen = 0

        async def limited():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge()
            return message

        await self.app(scope, limited, send)


def page_html() -> str:
    return resources.files("anybind.serve").joinpath("static/index.html").read_text(encoding="utf-8")


def create_app(index, model, settings: ServeSettings | None = None, *, token: str | None = None,
               checkpoint: str | None = None, title: str = "anybind-serve"):
    """A FastAPI app searching ``index`` with ``model`` (both loaded once, by the caller).

    ``token``: every request except ``/``, ``/health`` and the OpenAPI pages needs ``Authorization: Bearer <token>``
    (or the page's ``anybind_token`` cookie). ``settings``: limits, batching, previews (:class:`ServeSettings`).
    """
    from fastapi import FastAPI, Request
    from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse, Response
    from pydantic import BaseModel, Field
    from starlette.datastructures import UploadFile

    settings = settings or ServeSettings()
    service = SearchService(index, model, settings, checkpoint=checkpoint)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await service.start()
        try:
            yield
        finally:
            await service.close()

    app = FastAPI(title=title, version="1", lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Any-to-any search over an anybind index: text, uploaded files of any modality, or items "
                              "of the index, combined as weighted sums.")
    app.state.service = service

    class Query(BaseModel):
        text: str | None = Field(None, description="a text query")
        id: str | None = Field(None, description="an item of the index ('modality:id'): more like this")
        file: int | str | None = Field(None, description="multipart only: the number (or name) of an uploaded file")
        modality: str | None = Field(None, description="an upload's modality, when its extension does not say")
        weight: float = 1.0

    class SearchBody(BaseModel):
        queries: list[Query]
        k: int = settings.default_k
        modalities: list[str] | None = Field(None, description="only hits of these modalities")

    search_doc = {
        "requestBody": {"required": True, "content": {
            "application/json": {"schema": SearchBody.model_json_schema(),
                                 "example": {"queries": [{"text": "a dog barking"}, {"id": "image:dog-3", "weight": 0.5}],
                                             "k": 10, "modalities": ["image", "video"]}},
            "multipart/form-data": {"schema": {"type": "object", "properties": {
                "file": {"type": "array", "items": {"type": "string", "format": "binary"}},
                "queries": {"type": "string", "description": "JSON list of queries; {\"file\": n} is the n-th upload "
                                                             "(default: every upload and text, weight 1)"},
                "text": {"type": "string"}, "k": {"type": "integer"},
                "modalities": {"type": "string", "description": "comma-separated"}}}}}},
        "responses": {"400": {"description": "malformed request"}, "401": {"description": "token missing or wrong"},
                      "404": {"description": "unknown item"}, "413": {"description": "upload too large"},
                      "415": {"description": "file type not accepted"},
                      "422": {"description": "the upload could not be decoded (the InputError message)"},
                      "504": {"description": "past the request time limit"}},
    }

    def error(status: int, message: str, kind: str):
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse({"detail": message, "error": kind}, status_code=status, headers=headers)

    @app.exception_handler(RequestError)
    async def _request_error(request, exc: RequestError):
        return error(exc.status, exc.message, exc.kind)

    @app.exception_handler(InputError)
    async def _input_error(request, exc: InputError):
        return error(422, str(exc), "InputError")

    @app.exception_handler(BodyTooLarge)
    async def _too_large(request, exc):
        return error(413, f"request body is over the limit of {settings.max_body_bytes} bytes", "too_large")

    @app.exception_handler(Exception)
    async def _unexpected(request, exc: Exception):  # logged with its traceback by the server; the body stays short
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
        return error(500, f"internal error ({type(exc).__name__}); the server log has the details", "internal")

    def authorize(request: Request) -> None:
        if token is None:
            return
        header = request.headers.get("authorization", "")
        given = header[7:].strip() if header[:7].lower() == "bearer " else request.cookies.get(TOKEN_COOKIE)
        if not given or not hmac.compare_digest(given.encode(), token.encode()):
            raise RequestError(401, "this service needs a token: send 'Authorization: Bearer <token>'"
                               if not given else "wrong token", "unauthorized")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def page():
        return HTMLResponse(page_html(), headers={"Content-Security-Policy": PAGE_CSP, "Cache-Control": "no-cache",
                                                  "X-Content-Type-Options": "nosniff"})

    @app.get("/docs", response_class=HTMLResponse, include_in_schema=False)
    async def api_docs():  # FastAPI's own pages load their scripts from a CDN; this one reads /openapi.json itself
        html = resources.files("anybind.serve").joinpath("static/api.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"Content-Security-Policy": PAGE_CSP, "X-Content-Type-Options": "nosniff"})

    @app.get("/health", summary="Liveness: ok while the service answers")
    async def health():
        return {"status": "ok", "items": len(index), "decode_workers_alive": service.decoder.alive(),
                "pending": service.stats()["pending"]}

    @app.get("/info", summary="Model, index (kinds and sizes per modality), upload limits, batching counters")
    async def info(request: Request):
        authorize(request)
        return {**service.info(), "stats": service.stats(), "token_required": token is not None}

    @app.post("/search", summary="Search with one or more weighted queries", openapi_extra=search_doc)
    async def search(request: Request):
        authorize(request)
        ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
        uploads: list[Upload] = []
        form = None
        try:
            if ctype == "application/json":
                body = await _read_json(request)
                specs = service.parse_queries(body.get("queries"))
                k, modalities = service.parse_target(body.get("k"), body.get("modalities"))
                unknown = sorted(set(body) - {"queries", "k", "modalities"})
                if unknown:
                    raise RequestError(400, f"unknown field(s) {unknown}; a search has queries, k and modalities")
            elif ctype == "multipart/form-data":
                form = await request.form(max_files=settings.max_queries, max_fields=4 * settings.max_queries + 8)
                specs, k, modalities = await _multipart(form, uploads)
            else:
                raise RequestError(415, f"POST /search takes application/json or multipart/form-data, not "
                                        f"{ctype or 'a body without a content type'!r}", "unsupported_type")
            return await service.search(specs, k, modalities)
        finally:
            if form is not None:
                await form.close()
            for up in uploads:
                up.path.unlink(missing_ok=True)

    async def _read_json(request) -> dict:
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > MAX_JSON_BYTES:
                raise RequestError(413, f"JSON body over the limit of {MAX_JSON_BYTES} bytes", "too_large")
        try:
            body = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise RequestError(400, f"the body is not valid JSON: {exc}") from None
        if not isinstance(body, dict):
            raise RequestError(400, "the body must be a JSON object such as {\"queries\": [{\"text\": \"a dog\"}], \"k\": 10}")
        return body

    async def _multipart(form, uploads: list[Upload]):
        files = form.getlist("file")
        strays = [key for key, value in form.multi_items() if isinstance(value, UploadFile) and key != "file"]
        if strays:
            raise RequestError(400, f"files go in the multipart field 'file', not {sorted(set(strays))}")
        if any(not isinstance(f, UploadFile) for f in files):
            raise RequestError(400, "multipart field 'file' must hold files, not plain values")
        raw = form.get("queries")
        if raw is not None:
            try:
                queries = json.loads(raw)
            except ValueError as exc:
                raise RequestError(400, f"multipart field 'queries' is not valid JSON: {exc}") from None
            if form.getlist("text"):
                raise RequestError(400, "give texts either in 'queries' or in 'text' fields, not both")
        else:
            queries = [{"file": n} for n in range(len(files))] + [{"text": t} for t in form.getlist("text")]
        overrides = {q.get("file"): q.get("modality") for q in queries if isinstance(q, dict) and q.get("modality")
                     and isinstance(q.get("file"), int)} if isinstance(queries, list) else {}
        for n, f in enumerate(files):
            name = safe_name(f.filename)
            modality, suffix = service.upload_modality(name, overrides.get(n))
            uploads.append(await _save(f, name, modality, suffix))
        specs = service.parse_queries(queries, uploads)
        k, modalities = service.parse_target(form.get("k"), form.getlist("modalities") and
                                             ",".join(form.getlist("modalities")))
        return specs, k, modalities

    async def _save(f, name: str, modality: str, suffix: str) -> Upload:
        path = service.upload_path(suffix)
        up = Upload(path, name, modality)
        with open(path, "wb") as out:
            while chunk := await f.read(1 << 20):
                up.size += len(chunk)
                if up.size > settings.max_upload_bytes:
                    out.close()
                    path.unlink(missing_ok=True)
                    raise RequestError(413, f"upload {name!r} is over the limit of {settings.max_upload_bytes} bytes",
                                       "too_large")
                out.write(chunk)
        if up.size == 0:
            path.unlink(missing_ok=True)
            raise RequestError(422, str(InputError(name, modality, "file is empty (0 bytes)")), "InputError")
        return up

    @app.get("/items/{item:path}/preview", summary="A small preview of an indexed item (PNG or JPEG; cached)")
    async def item_preview(item: str, request: Request):
        authorize(request)
        data, media = await service.preview(service.resolve(item))
        return Response(data, media_type=media, headers={"Cache-Control": "private, max-age=3600",
                                                         "X-Content-Type-Options": "nosniff"})

    @app.get("/items/{item:path}", summary="The media of an indexed item (only items the index lists)")
    async def item_media(item: str, request: Request):
        authorize(request)
        kind, value = service.item_media(service.resolve(item))
        headers = {"X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600"}
        if kind == "text":
            return PlainTextResponse(value, headers=headers)
        media = mimetypes.guess_type(value.name)[0] or "application/octet-stream"
        if media in ("text/html", "image/svg+xml", "application/xhtml+xml", "application/javascript"):
            media = "application/octet-stream"
        return FileResponse(value, media_type=media, headers=headers, content_disposition_type="inline",
                            filename=value.name)

    if settings.max_body_bytes:
        app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app
