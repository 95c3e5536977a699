"""POST /api/predict, the hot path: a plain Starlette endpoint, its query checked here, its OpenAPI entry written out.

FastAPI's per-route machinery (dependency solving, two exit stacks, telemetry) took ~1/6 of the server's CPU per
prediction of a 28x28 digit (about 0.6 -> 0.5 ms a request, wrk at 50 connections), so this one route does without it;
the guards and the JSON error handlers of the app still apply, and the rest of the API keeps FastAPI's declarations.
"""
from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, Mapping, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse

from cnnlab.web.batch import Batcher
from cnnlab.web.decode_budget import DecodeBudget
from cnnlab.web.served import Served
from cnnlab.web.uploads import UploadError, image_from_json

PATH = "/api/predict"
TOP_K_MAX = 1000
_TRUE, _FALSE = {"1", "true", "t", "yes", "y", "on"}, {"0", "false", "f", "no", "n", "off"}  # what FastAPI accepts


class State(Protocol):
    @property
    def served(self) -> Served: ...
    batcher: Batcher
    decodes: DecodeBudget


def query_options(query: Mapping[str, str]) -> tuple[int, bool]:
    """(top_k, echo) from the query string, bounded as the schema says; UploadError 422 names a bad value."""
    text = query.get("top_k", "5")
    if not (text.isascii() and text.isdigit() and len(text) <= 6 and 1 <= int(text) <= TOP_K_MAX):
        raise UploadError(422, f"top_k must be a whole number 1..{TOP_K_MAX}, got {text[:40]!r}")
    echo = query.get("echo", "false").lower()
    if echo not in _TRUE | _FALSE:
        raise UploadError(422, f"echo must be true or false, got {echo[:40]!r}")
    return int(text), echo in _TRUE


def endpoint(state: State) -> Callable[[Request], Awaitable[JSONResponse]]:
    """The route's handler over the app's state (its served model and batcher)."""
    async def predict(request: Request) -> JSONResponse:
        started = time.perf_counter()
        top_k, echo = query_options(request.query_params)
        raw = await image_bytes(request)
        served = state.served
        x = await state.decodes.run(served.decode_cost(raw), served.prepare, raw)  # 503 when memory is short
        probs, image_id = await state.batcher.submit(served, x)
        body = served.answer(x, probs, image_id, top_k, echo)
        body["milliseconds"] = round((time.perf_counter() - started) * 1000, 2)
        return JSONResponse(body)
    return predict


async def image_bytes(request: Request) -> bytes:
    """The uploaded image's bytes from a multipart form (field 'file'), a JSON body or an image/* body."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        form = await request.form(max_files=1, max_fields=4)
        file = form.get("file")
        if file is None or isinstance(file, str):
            raise UploadError(422, "send the image as a file in the multipart field 'file'")
        return await file.read()
    if kind == "application/json":
        return image_from_json(await request.body())
    if kind.startswith("image/"):  # the file itself as the body: the cheapest form for scripts
        return await request.body()
    raise UploadError(415, f"send multipart/form-data, application/json or image/*, not {kind or 'no content type'}")


def operation(errors: dict[int, str], error_schema: str) -> dict[str, Any]:
    """The route's OpenAPI operation; `errors` maps each status it can answer to its description."""
    def query(name: str, schema: dict[str, Any], description: str) -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}

    as_json = {"application/json": {"schema": {"$ref": error_schema}}}
    reply = {"type": "object", "required": ["image_id", "classes", "probabilities", "top", "input_shape"],
             "properties": {"image_id": {"type": "string", "description": "names this input for GET /api/explain/maps"},
                            "classes": {"type": "array", "items": {"type": "string"}},
                            "probabilities": {"type": "array", "items": {"type": "number"}},
                            "top": {"type": "array", "items": {"type": "object"}},
                            "input_shape": {"type": "array", "items": {"type": "integer"}},
                            "input": {"type": "string", "description": "with echo: the model's input as a PNG data URL"},
                            "milliseconds": {"type": "number"}}}
    return {
        "summary": "classify an image (multipart 'file', JSON base64, or the image itself as the body)",
        "operationId": "predict_api_predict_post",
        "parameters": [
            query("top_k", {"type": "integer", "minimum": 1, "maximum": TOP_K_MAX, "default": 5},
                  "how many classes to list, most probable first"),
            query("echo", {"type": "boolean", "default": False}, "also return the input the model received, as a PNG")],
        "requestBody": {"required": True, "content": {
            "multipart/form-data": {"schema": {"type": "object", "required": ["file"],
                                               "properties": {"file": {"type": "string", "format": "binary"}}}},
            "application/json": {"schema": {"type": "object", "required": ["image"],
                                            "properties": {"image": {"type": "string",
                                                                     "description": "base64 PNG/JPEG, or a data: URL"}}}},
            "image/*": {"schema": {"type": "string", "format": "binary"}}}},
        "responses": {"200": {"description": "the classes, most probable first", "content": {"application/json": {"schema": reply}}},
                      **{str(code): {"description": text, "content": as_json} for code, text in sorted(errors.items())}},
    }
