"""The Images API app: OpenAI-compatible /v1/images/{generations,edits,variations} over one UnCLIPPipeline.

    app = create_app(ServerConfig(pipeline_dir=...))        # the pipeline loads in the lifespan
    uvicorn.run(app, host=..., port=...)

Request path: size limit (middleware) -> API key -> fields -> uploads (size, PNG signature, header,
decode) -> prompt moderation -> bounded queue -> the worker thread -> resize + PNG encode off the event
loop -> {"created", "data": [{"url"} | {"b64_json"}]}. Every error has the API's shape (errors.py).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect

from .auth import KeyChecker, load_keys
from .config import ServerConfig
from .errors import APIError, install_error_handlers, invalid
from .images import decode_png, edit_mask, encode_png, resize_to
from .middleware import LimitAndLogMiddleware
from .params import FIELDS, ImageRequest, accepted_sizes, parse, size_name, source_size
from .store import ImageStore
from .worker import Job, QueueFull, Worker

log = logging.getLogger("unclip.server")
DALL_E_2 = "dall-e-2"


def load_pipeline(config: ServerConfig):
    import torch

    from unclip.pipeline import UnCLIPPipeline

    return UnCLIPPipeline.load(config.pipeline_dir, device=config.device, dtype=getattr(torch, config.dtype),
                               settings=config.settings, moderation=config.moderation)


class ServerState:
    """What the routes share: the config, the pipeline's worker, the URL store, the key checker."""

    def __init__(self, config: ServerConfig, pipeline: Any) -> None:
        self.config, self.pipeline = config, pipeline
        self.sizes = tuple(int(s) for s in pipeline.sizes)
        self.default_size = config.default_size or size_name(max(self.sizes))  # made, not resized up
        if config.default_size and int(config.default_size.split("x")[0]) not in accepted_sizes(self.sizes):
            log.warning("default size %s is not one this pipeline makes (%s): requests without a size will get 400",
                        config.default_size, [size_name(s) for s in accepted_sizes(self.sizes)])
        self.model_name = config.model_name or config.pipeline_dir.resolve().name
        self.model_names = (DALL_E_2, self.model_name)
        self.keys = KeyChecker(load_keys(config.api_keys_file, config.api_keys_env), config.allow_no_auth)
        self.store = ImageStore(config.url_ttl_s, config.url_store_max_bytes)
        self.worker = Worker(pipeline, config.queue_size, config.max_batch_images, config.queue_images,
                             config.max_requests_per_key)
        self.started = int(time.time())


def create_app(config: ServerConfig, pipeline: Any = None) -> FastAPI:
    """The app; the pipeline is loaded from `config.pipeline_dir` at startup unless one is given."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        if config.torch_threads:
            import torch
            torch.set_num_threads(config.torch_threads)
        pipe = pipeline if pipeline is not None else await asyncio.to_thread(load_pipeline, config)
        state = ServerState(config, pipe)
        state.worker.start()
        app.state.unclip = state
        log.info("serving %s (sizes %s) from %s; queue %d, auth %s", state.model_name,
                 accepted_sizes(state.sizes), config.pipeline_dir, config.queue_size,
                 "off" if state.keys.open else "on")
        try:
            yield
        finally:
            await asyncio.to_thread(state.worker.stop)

    app = FastAPI(title="unclip Images API", version="1", lifespan=lifespan, docs_url=None, redoc_url=None)
    install_error_handlers(app)
    app.add_middleware(LimitAndLogMiddleware, max_request_bytes=config.max_request_bytes,
                       body_timeout_s=config.body_timeout_s)

    def server(request: Request) -> ServerState:
        return request.app.state.unclip

    def authorize(request: Request) -> ServerState:
        st = server(request)
        st.keys.check(request.headers.get("authorization"))
        return st

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health(request: Request):
        st = server(request)
        stats = st.worker.stats()
        moderator = getattr(st.pipeline, "moderator", None)
        return {"status": "ok" if stats["alive"] else "worker_down", "model": st.model_name,
                "sizes": [size_name(s) for s in accepted_sizes(st.sizes)], "queue": stats,
                "stored_images": len(st.store),
                "moderation": {"prompts": "on" if moderator else "off",
                               "images": moderator.image_status if moderator else "off"}}

    @app.get("/v1/models")
    async def models(request: Request):
        st = authorize(request)
        return {"object": "list", "data": [{"id": name, "object": "model", "created": st.started, "owned_by": "unclip"}
                                           for name in st.model_names]}

    @app.get("/v1/images/files/{key}")
    async def image_file(key: str, request: Request):
        png = server(request).store.get(key.removesuffix(".png"))
        if png is None:
            raise APIError(404, "This image URL has expired or never existed.", code="image_not_found")
        ttl = int(server(request).config.url_ttl_s)
        return Response(png, media_type="image/png", headers={"Cache-Control": f"private, max-age={ttl}"})

    @app.post("/v1/images/generations")
    async def generations(request: Request):
        st = authorize(request)
        body = await _json_body(request)
        req = parse(body, "generate", from_form=False, producible=st.sizes, default_size=st.default_size,
                    model_names=st.model_names)
        request.state.user = req.user  # the API's end-user id: logged for abuse monitoring
        await _moderate_prompt(request, st, req.prompt)
        with _admitted(request, st, req.n) as ticket:
            job = Job("generate", req.n, source_size(req.size, st.sizes), prompt=req.prompt)
            return await _serve(request, st, req, job, ticket)

    @app.post("/v1/images/edits")
    async def edits(request: Request):
        st = authorize(request)
        fields, uploads = await _read_form(request, "edit", st.config.max_upload_bytes)
        req = parse(fields, "edit", from_form=True, producible=st.sizes, default_size=st.default_size,
                    model_names=st.model_names)
        request.state.user = req.user  # the API's end-user id: logged for abuse monitoring
        await _moderate_prompt(request, st, req.prompt)
        with _admitted(request, st, req.n) as ticket:  # before decoding: a refused upload costs no memory
            image, mask = await asyncio.to_thread(_edit_inputs, st.config, uploads)
            job = Job("edit", req.n, source_size(req.size, st.sizes), prompt=req.prompt, image=image, mask=mask)
            return await _serve(request, st, req, job, ticket)

    @app.post("/v1/images/variations")
    async def variations(request: Request):
        st = authorize(request)
        fields, uploads = await _read_form(request, "variation", st.config.max_upload_bytes)
        req = parse(fields, "variation", from_form=True, producible=st.sizes, default_size=st.default_size,
                    model_names=st.model_names)
        request.state.user = req.user  # the API's end-user id: logged for abuse monitoring
        with _admitted(request, st, req.n) as ticket:  # before decoding: a refused upload costs no memory
            image = await asyncio.to_thread(lambda: _decode_upload(st.config, uploads, "image").convert("RGB"))
            job = Job("variation", req.n, source_size(req.size, st.sizes), image=image)
            return await _serve(request, st, req, job, ticket)

    return app


async def _json_body(request: Request) -> dict:
    ctype = request.headers.get("content-type", "application/json").split(";")[0].strip().lower()
    if ctype != "application/json":
        raise invalid(f"Invalid Content-Type header ({ctype}), expected application/json.", None,
                      "invalid_content_type")
    raw = await request.body()
    try:
        body = json.loads(raw) if raw else None
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # ValueError: also integers over 4,300 digits
        what = "it is nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise invalid(f"We could not parse the JSON body of your request ({what}).", None, "invalid_json") from None
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.", None, "invalid_json")
    return body


Upload = tuple[bytes, int]  # (at most max_upload_bytes of the file, the file's full size)


async def _read_form(request: Request, kind: str, max_upload: int) -> tuple[dict[str, str], dict[str, Upload]]:
    """The multipart body's text fields, and the bytes of its files (read only up to the upload limit:
    the part was counted while it streamed in, so an oversized file is never read whole)."""
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "multipart/form-data":
        raise invalid(f"Invalid Content-Type header ({ctype or 'none'}), expected multipart/form-data.", None,
                      "invalid_content_type")
    fields: dict[str, str] = {}
    uploads: dict[str, Upload] = {}
    try:
        async with request.form(max_files=4, max_fields=32, max_part_size=64 * 1024) as form:
            for name, value in form.multi_items():
                base = name.removesuffix("[]")  # the client names a list of files image[]
                if isinstance(value, UploadFile):
                    if base not in ("image", "mask") or base not in FIELDS[kind]:
                        raise invalid(f"Unrecognized file field supplied: {name}", name, "unknown_parameter")
                    if base in uploads:
                        raise invalid(f"Only one '{base}' file is accepted.", base, "invalid_value")
                    uploads[base] = (await value.read(max_upload), value.size or 0)
                else:
                    if base in ("image", "mask"):
                        raise invalid(f"'{base}' must be an uploaded PNG file, not a text field.", base,
                                      "invalid_type")
                    if name in fields:
                        raise invalid(f"The field '{name}' was given more than once.", name, "invalid_value")
                    fields[name] = value
    except StarletteHTTPException as e:  # python-multipart's parse errors
        raise invalid(f"Invalid multipart body: {e.detail}", None, "invalid_multipart") from None
    if "image" not in uploads:  # reported before any other field's problem, as a missing prompt is
        raise invalid("Missing required parameter: 'image'.", "image", "missing_required_parameter")
    return fields, uploads


def _decode_upload(config: ServerConfig, uploads: dict[str, Upload], name: str):
    data, size = uploads[name]
    if size >= config.max_upload_bytes:
        raise invalid(f"Uploaded {name} must be a PNG and less than {config.max_upload_bytes / 2**20:g} MB "
                      f"(got {size} bytes).", name, "image_too_large")
    return decode_png(data, name, max_bytes=config.max_upload_bytes, max_side=config.max_image_side,
                      max_pixels=config.max_image_pixels)


def _edit_inputs(config: ServerConfig, uploads: dict[str, Upload]):
    """(RGB image, RGBA mask whose alpha is 0 exactly on the area to edit) — the API's own convention,
    which the pipeline shares; the alpha rules are checked here so their errors name the right field."""
    image = _decode_upload(config, uploads, "image")
    mask = _decode_upload(config, uploads, "mask") if "mask" in uploads else None
    keep = edit_mask(image, mask)
    image = image.convert("RGB")
    mask = image.convert("RGBA")
    mask.putalpha(keep)
    return image, mask


def _client_id(request: Request) -> str:
    """Who a per-client limit counts: a digest of the API key, else the client's address (no-auth servers)."""
    auth = request.headers.get("authorization")
    if auth:
        return hashlib.sha256(auth.encode("utf-8", "replace")).hexdigest()[:16]
    return request.client.host if request.client else ""


@contextlib.contextmanager
def _admitted(request: Request, st: ServerState, n: int):
    """A queue ticket for `n` images (429 with Retry-After when a limit is reached); released if the request
    fails before its job is submitted (afterwards the job's end releases it)."""
    try:
        ticket = st.worker.admit(n, _client_id(request))
    except QueueFull as e:
        retry = st.config.retry_after_s
        raise APIError(429, f"The server is busy: {e}. Please retry after {retry} s.", type="requests",
                       code="rate_limit_exceeded", headers={"Retry-After": str(retry)}) from None
    try:
        yield ticket
    except BaseException:
        if not ticket.submitted:
            ticket.release()
        raise


async def _moderate_prompt(request: Request, st: ServerState, prompt: str | None) -> None:
    if st.config.log_prompts and prompt is not None:
        request.state.prompt = prompt
    await asyncio.to_thread(_moderate, st.pipeline, prompt)


async def _serve(request: Request, st: ServerState, req: ImageRequest, job: Job, ticket) -> JSONResponse:
    future = st.worker.submit(job, ticket)
    waiting = asyncio.wrap_future(future)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        done, _ = await asyncio.wait({waiting, watcher}, timeout=st.config.request_timeout_s,
                                     return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    if waiting not in done:  # timed out, or the client went away: free the slot, stop the sampling
        job.abandon()
        waiting.add_done_callback(lambda f: f.cancelled() or f.exception())  # nobody else will read its outcome
        if watcher in done:
            raise ClientDisconnect()  # the middleware logs it in one line; there is no one to answer
        raise APIError(504, f"The request did not finish within {st.config.request_timeout_s:g} s.",
                       type="server_error", code="timeout")
    try:
        output = waiting.result()
    except Exception as e:
        raise _pipeline_error(e) from None
    images, blocked = withhold_flagged(output.images, output.flagged)
    pngs = await asyncio.to_thread(lambda: [encode_png(resize_to(img, req.size)) for img in images])
    request.state.images = len(pngs)
    if req.response_format == "b64_json":
        data = [{"b64_json": base64.b64encode(p).decode("ascii")} for p in pngs]
    else:
        base = (st.config.public_url or str(request.base_url)).rstrip("/")
        data = [{"url": f"{base}/v1/images/files/{st.store.put(p)}.png"} for p in pngs]
    body = {"created": int(time.time()), "data": data}
    if blocked:
        body["blocked"] = blocked  # an extra field: the official client keeps it (model_extra)
    return JSONResponse(body)


def withhold_flagged(images: list, flagged: list[str | None]) -> tuple[list, list[dict[str, Any]]]:
    """Images the output filter flagged are withheld, never sent blacked out: (the others, [{"index",
    "category"}] of the withheld). When every image is flagged the request fails with the API's
    content_policy_violation, naming the categories."""
    blocked = [{"index": i, "category": c} for i, c in enumerate(flagged) if c]
    if blocked and len(blocked) == len(images):
        cats = sorted({b["category"] for b in blocked})
        raise invalid(f"Your request was rejected as a result of our safety system: every generated image was "
                      f"flagged by the output filter (categories {cats}).", None, "content_policy_violation")
    return [im for im, c in zip(images, flagged) if not c], blocked


async def _disconnected(request: Request, every_s: float = 0.25) -> None:
    """Return once the client has closed its connection (polled: the request body is already read)."""
    while not await request.is_disconnected():
        await asyncio.sleep(every_s)


def _moderate(pipeline: Any, prompt: str | None) -> None:
    """Prompt moderation before the request takes a queue slot (term lists only: safe off the worker thread).
    Uploaded images are moderated by the pipeline itself, on the worker (it needs CLIP)."""
    moderator = getattr(pipeline, "moderator", None)
    if prompt is not None and moderator is not None:
        try:
            moderator.require_prompt_ok(prompt)
        except Exception as e:
            raise _pipeline_error(e) from None


def _pipeline_error(e: Exception) -> APIError:
    from unclip.moderation import ModerationError
    from unclip.pipeline import InputError

    if isinstance(e, ModerationError):
        source = e.source
        return invalid(f"Your request was rejected as a result of our safety system: the {source} was flagged "
                       f"(category {e.category!r}).", e.param, "content_policy_violation")
    if isinstance(e, InputError):
        return invalid(f"Invalid '{e.param}': {e.message}", e.param, "invalid_value")
    log.exception("pipeline failure", exc_info=e)
    return APIError(500, "The server had an error while processing your request.", type="server_error")
