"""The FastAPI app behind `cnnlab serve`: JSON API over the core, the static page, and offline API docs."""
from __future__ import annotations

import asyncio
import json
import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Literal

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from cnnlab.runs import model_file
from cnnlab.spec import zoo
from cnnlab.spec.layers import ModelSpec
from cnnlab.spec.summary import summary_dict
from cnnlab.train.config import TrainConfig
from cnnlab.train.optim import OPTIMIZERS
from cnnlab.train.plan import TrainChoices, TrainPlan, plan_training
from cnnlab.web import data_routes, predict_route
from cnnlab.web.batch import Batcher, Overloaded
from cnnlab.web.decode_budget import DecodeBudget
from cnnlab.web.guards import BodyLimit, BodyRead, HostCheck, OriginCheck, SecurityHeaders, allowed_hosts
from cnnlab.web.jobs import FINAL, Busy, NotRunning, Trainer
from cnnlab.web.served import Served
from cnnlab.web.stores import DataStore, NotFound, RunStore
from cnnlab.web.uploads import MAX_BODY_BYTES, UploadError

STATIC = Path(__file__).resolve().parent / "static"
MAX_TRAIN_PARAMS = 50_000_000  # a typo like conv50000k3 should be an error message, not a frozen laptop


class ServeRequest(BaseModel):
    run: str = Field(description="name of a run folder, as GET /api/runs lists it")


class SpecRequest(BaseModel):
    model: str = Field(min_length=1, max_length=20_000, description="zoo name, JSON layer list or compact spec")
    data: str = Field("mnist", description="dataset name from GET /api/train/options (gives the input shape)")


class PlanRequest(BaseModel):
    """A training request's choices; a value left out (null) is not given, so the plan decides it as
    `cnnlab train` does without the flag (`cnnlab.train.plan`)."""
    data: str = Field("mnist", description="dataset name from GET /api/train/options")
    model: str | None = Field(None, min_length=1, max_length=20_000,
                              description="zoo name, JSON layer list or compact spec; none: the plan's (seed CNN, "
                                          "or the pretrained backbone for a folder of photos)")
    epochs: int | None = Field(None, ge=1, le=1000)
    batch_size: int | None = Field(None, ge=1, le=4096)  # until cnnlab.spec.memory can budget a request
    optimizer: Literal[OPTIMIZERS] | None = None  # type: ignore[valid-type]
    lr: float | None = Field(None, gt=0, le=10, description="constant learning rate; none: the recipe's schedule")
    limit_train: int | None = Field(None, ge=1, description="train on the first N training images only")
    limit_test: int | None = Field(None, ge=1, description="evaluate on the first N test images only")
    seed: int = Field(0, ge=0)


class TrainRequest(PlanRequest):
    pass


class ErrorReply(BaseModel):
    error: str = Field(description="one line saying what was wrong and what was expected")
    detail: list[dict[str, Any]] | None = Field(None, description="422 from schema checks: each problem")


# Status codes beyond 200 each route can answer; the guards add theirs to every route (see _document).
ROUTE_ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("POST", "/api/predict"): (404, 413, 415, 422, 503), ("GET", "/api/explain/maps"): (404, 422),
    ("GET", "/api/explain/gradcam"): (404, 422),
    ("GET", "/api/model"): (404,), ("POST", "/api/model"): (404, 422),
    ("GET", "/api/model/examples"): (404, 422, 501), ("POST", "/api/spec"): (404, 422, 501),
    ("POST", "/api/train"): (404, 409, 422, 501), ("POST", "/api/train/plan"): (404, 422, 501),
    ("POST", "/api/train/stop"): (409,), **data_routes.ROUTE_ERRORS}
GUARD_ERRORS = {"GET": (400,), "POST": (400, 403, 408, 411, 413)}  # Host; Origin, body time, length, size
STATUS_TEXT = {400: "bad request (Host header, malformed or too deeply nested body)", 403: "request from another site's page",
               404: "no such run, dataset or image; or no model served", 408: "the body took over 10 s to arrive",
               409: "a training job is (not) running", 411: "no Content-Length", 413: "body or image too large",
               415: "not an image type this server reads", 422: "a value out of range or an invalid spec",
               501: "an optional part of cnnlab is not installed", 503: "busy: retry after Retry-After seconds"}


class ServerState:
    """What the routes share: the configured folders, the served model and the training job."""

    def __init__(self, run: str | Path | None, runs_dir: str | Path, data_dirs: list[str | Path]):
        self.runs = RunStore(runs_dir, run)
        self.data = DataStore(data_dirs)
        self.trainer = Trainer()
        self.batcher = Batcher()
        self.decodes = DecodeBudget()
        self._served: Served | None = None
        self._switch = threading.Lock()
        if run is not None:
            self.serve(Path(run).name)
        else:
            newest = next((r["name"] for r in self.runs.list() if "error" not in r), None)
            if newest is not None:
                self.serve(newest)

    def serve(self, name: str) -> Served:
        served = Served(self.runs.path(name), name)  # load outside the lock: predictions go on meanwhile
        with self._switch:
            self._served = served
        return served

    @property
    def served_name(self) -> str | None:
        return self._served.name if self._served is not None else None

    @property
    def served(self) -> Served:
        if self._served is None:
            raise NotFound("no model is being served: train one on the Train tab, or start `cnnlab serve RUN`")
        return self._served

    def plan(self, req: PlanRequest) -> TrainPlan:
        """The request's training plan, made by the rule `cnnlab train` uses (`cnnlab.train.plan`)."""
        folder = self.data.folders.get(req.data)
        if folder is None:
            self.data.check(req.data)
        choices = TrainChoices(data=str(folder) if folder is not None else req.data, model=req.model,
                               model_is_text=True, seed=req.seed, epochs=req.epochs, batch_size=req.batch_size,
                               optimizer=req.optimizer, lr=req.lr, subset=req.limit_train, limit_test=req.limit_test)
        plan = plan_training(choices, load=lambda _: self.data.load(req.data))
        if plan.spec is not None and (total := summary_dict(plan.spec)["total_params"]) > MAX_TRAIN_PARAMS:
            raise ValueError(f"{total:,} parameters is over this server's limit of {MAX_TRAIN_PARAMS:,}")
        return plan

    def spec(self, req: SpecRequest) -> tuple[ModelSpec, dict[str, Any]]:
        """The request's model for its dataset, or SpecError/ValueError saying what is wrong."""
        data = self.data.load(req.data)
        spec, recipe = zoo.resolve_text(req.model, data.input_shape, len(data.class_names))
        total = summary_dict(spec)["total_params"]
        if total > MAX_TRAIN_PARAMS:
            raise ValueError(f"{total:,} parameters is over this server's limit of {MAX_TRAIN_PARAMS:,}")
        return spec, recipe


def create_app(run: str | Path | None = None, runs_dir: str | Path = "runs", data_dirs: list[str | Path] | None = None,
               host: str = "127.0.0.1") -> FastAPI:
    """The web app for `cnnlab serve`; `run` is served first (default: the newest run in `runs_dir`); it may be
    `imagenet`, the pretrained classifier (see `cnnlab.runs.open_model`)."""
    state = ServerState(run, runs_dir, list(data_dirs or []))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await state.batcher.close()
        state.decodes.close()
        await run_in_threadpool(state.trainer.shutdown)

    app = FastAPI(title="cnnlab", version=_version(), lifespan=lifespan, docs_url=None, redoc_url=None,
                  description="Draw a digit or upload a photo, see what every layer of a CNN saw and where it "
                              "looked; train and watch live.")
    app.state.cnnlab = state
    app.add_middleware(SecurityHeaders)  # the last added runs first: size, Host, Origin, then the body is read
    app.add_middleware(BodyRead)
    app.add_middleware(OriginCheck)
    app.add_middleware(HostCheck, allowed=allowed_hosts(host))
    app.add_middleware(BodyLimit, max_bytes=MAX_BODY_BYTES)
    _errors(app)
    _docs(app)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    # --- try the model ---------------------------------------------------------------------
    app.add_route(predict_route.PATH, predict_route.endpoint(state), methods=["POST"], include_in_schema=False)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    app.include_router(data_routes.router(state.data.folders, _responses))  # the Data tab

    @app.get("/api/explain/maps", responses=_responses("GET", "/api/explain/maps"), summary="response maps of every conv/pool layer for an image predicted before")
    def maps(image: str = Query(..., max_length=64, description="image_id from POST /api/predict")) -> dict[str, Any]:
        return state.served.maps(image)

    @app.get("/api/explain/gradcam", responses=_responses("GET", "/api/explain/gradcam"),
             summary="Grad-CAM heat map (a PNG the input's size) of an image predicted before, for a class")
    def gradcam(image: str = Query(..., max_length=64, description="image_id from POST /api/predict"),
                class_index: int | None = Query(None, ge=0, description="the class to explain; default: the predicted one")
                ) -> dict[str, Any]:
        return state.served.grad_cam(image, class_index)

    # --- the model and the runs --------------------------------------------------------------
    @app.get("/api/model", responses=_responses("GET", "/api/model"), summary="the served model: summary, metrics, history, confusion matrix")
    def model() -> dict[str, Any]:
        return state.served.describe()

    @app.post("/api/model", responses=_responses("POST", "/api/model"), summary="serve another run")
    def switch(req: ServeRequest) -> dict[str, Any]:
        return state.serve(req.run).describe()

    @app.get("/api/model/examples", responses=_responses("GET", "/api/model/examples"), summary="test images of one confusion-matrix cell")
    def examples(true: int = Query(..., ge=0), predicted: int = Query(..., ge=0),
                 limit: int = Query(48, ge=1, le=500)) -> dict[str, Any]:
        return state.served.examples(state.data, true, predicted, limit)

    @app.get("/api/runs", responses=_responses("GET", "/api/runs"), summary="run folders with their key metrics")
    def run_list() -> dict[str, Any]:
        return {"runs": state.runs.list(), "served": state.served_name}

    # --- train ----------------------------------------------------------------------------------
    @app.get("/api/train/options", responses=_responses("GET", "/api/train/options"), summary="datasets, zoo models and optimisers to choose from")
    def options() -> dict[str, Any]:
        return {"datasets": state.data.options(), "optimizers": list(OPTIMIZERS),
                "zoo": [{"name": name, "description": entry.description} for name, entry in zoo.ZOO.items()],
                "defaults": {k: v for k, v in TrainConfig().to_dict().items()
                             if k in ("epochs", "batch_size", "optimizer", "lr")}}

    @app.post("/api/spec", responses=_responses("POST", "/api/spec"), summary="check a model spec against a dataset; its summary, or the error")
    def check_spec(req: SpecRequest) -> dict[str, Any]:
        from cnnlab.spec import compact
        spec, _ = state.spec(req)
        return {"summary": summary_dict(spec), "json": spec.to_dict(), "compact": compact.format(spec)}

    @app.post("/api/train/plan", responses=_responses("POST", "/api/train/plan"),
              summary="what a training request would do (transfer or from scratch, recipe, length) and why")
    def plan(req: PlanRequest) -> dict[str, Any]:
        return state.plan(req).to_dict()

    @app.post("/api/train", responses=_responses("POST", "/api/train"), status_code=202, summary="start training (one job at a time; 409 when busy)")
    def train(req: TrainRequest) -> dict[str, Any]:
        if state.trainer.job is not None and state.trainer.job.state == "running":
            raise Busy(f"busy: run {state.trainer.job.run.name} is training; stop it or wait until it finishes")
        plan = state.plan(req)
        job = state.trainer.start(plan, state.runs.new_folder(*plan.run_name()))
        return {"job": job.id, "run": job.run.name, "events": "/api/train/events"}

    @app.get("/api/train", responses=_responses("GET", "/api/train"), summary="the current (or last) training job and its events so far")
    def train_status() -> dict[str, Any]:
        job = state.trainer.job
        return {"state": "idle"} if job is None else {"state": job.state, "job": job.id, "run": job.run.name,
                                                       "events": job.since(0)}

    @app.get("/api/train/events", responses=_responses("GET", "/api/train/events"), summary="server-sent events of the current training job",
             response_class=StreamingResponse)
    async def train_events(request: Request) -> StreamingResponse:
        start = request.headers.get("last-event-id", "")
        return StreamingResponse(_stream(state.trainer, int(start) + 1 if start.isdigit() else 0),
                                 media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    @app.post("/api/train/stop", responses=_responses("POST", "/api/train/stop"), summary="stop the running job after its current step; the run is still saved")
    def stop() -> dict[str, Any]:
        job = state.trainer.stop()
        return {"stopping": True, "job": job.id, "run": job.run.name}

    return app


async def _stream(trainer: Trainer, start: int) -> AsyncIterator[str]:
    """SSE lines for the job's events from `start`; ends after its last event (the page closes it then)."""
    job = trainer.job
    if job is None:
        yield _sse({"event": "idle", "id": 0})
        return
    sent, quiet = start, 0.0
    while True:
        finished = job.state in FINAL  # read before the events, so a final event emitted in between is sent
        events = job.since(sent)
        for event in events:
            yield _sse(event)
        sent += len(events)
        if (events and events[-1]["event"] in FINAL) or (finished and not events):
            return  # the last event sent now, or before: a Last-Event-ID at or past it has nothing to wait for
        await asyncio.sleep(0.1)
        quiet = 0.0 if events else quiet + 0.1
        if quiet >= 15:  # a comment line keeps proxies and browsers from closing an idle stream
            yield ": keep-alive\n\n"
            quiet = 0.0


def _sse(event: dict[str, Any]) -> str:
    return f"id: {event['id']}\nevent: {event['event']}\ndata: {json.dumps(event)}\n\n"


def _errors(app: FastAPI) -> None:
    """Every error is JSON {"error": message} with a 4xx status; no traceback leaves the server."""
    statuses: list[tuple[type[BaseException], int]] = [
        (NotFound, 404), (FileNotFoundError, 404), (Busy, 409), (NotRunning, 409), (model_file.ModelFileError, 422),
        (ValueError, 422), (ImportError, 501)]  # 501: an optional part of cnnlab (e.g. image folders) is missing

    def reply(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    async def on_upload(_: Request, exc: Exception) -> JSONResponse:
        return reply(exc.status, str(exc))  # type: ignore[attr-defined]

    async def on_http(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": str(exc.detail)}, status_code=exc.status_code,  # type: ignore[attr-defined]
                            headers=getattr(exc, "headers", None))

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        problems = exc.errors()  # type: ignore[attr-defined]
        text = "; ".join(f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: {e['msg']}"
                         for e in problems[:3])
        return JSONResponse({"error": text, "detail": json.loads(json.dumps(problems, default=str))}, status_code=422)

    async def on_overload(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=503,
                            headers={"Retry-After": str(exc.retry_after)})  # type: ignore[attr-defined]

    app.add_exception_handler(Overloaded, on_overload)
    app.add_exception_handler(UploadError, on_upload)
    app.add_exception_handler(HTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)
    for kind, status in statuses:
        app.add_exception_handler(kind, lambda _, exc, status=status: _first_line(reply, status, exc))

    async def on_crash(_: Request, exc: Exception) -> JSONResponse:
        return reply(500, f"internal error ({type(exc).__name__}); the server log has the details")
    app.add_exception_handler(Exception, on_crash)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's schema of the declared routes, plus the hand-written entry of the plain POST /api/predict."""
    if app.openapi_schema is None:
        schema = FastAPI.openapi(app)
        codes = sorted({*GUARD_ERRORS["POST"], *ROUTE_ERRORS[("POST", predict_route.PATH)]})
        schema["paths"][predict_route.PATH] = {"post": predict_route.operation(
            {code: STATUS_TEXT[code] for code in codes}, "#/components/schemas/ErrorReply")}
    return app.openapi_schema


def _responses(method: str, path: str) -> dict[int | str, dict[str, Any]]:
    """Every error status a route can answer (its own and the guards'), all with the ErrorReply body."""
    codes = sorted({*GUARD_ERRORS[method], *ROUTE_ERRORS.get((method, path), ())})
    return {code: {"model": ErrorReply, "description": STATUS_TEXT[code]} for code in codes}


def _first_line(reply: Any, status: int, exc: BaseException) -> JSONResponse:
    text = str(exc).strip()
    return reply(status, text.splitlines()[0] if text else type(exc).__name__)


def _docs(app: FastAPI) -> None:
    """/docs with Swagger UI files from the swagger-ui-bundle package, so the docs work offline too."""
    try:
        from swagger_ui_bundle import swagger_ui_path
    except ImportError:  # without the package the page would load Swagger UI from a CDN: say so instead
        @app.get("/docs", include_in_schema=False)
        def no_docs() -> HTMLResponse:
            return HTMLResponse("<p>Install swagger-ui-bundle-v2 for these docs; the API schema is at "
                                "<a href='/openapi.json'>/openapi.json</a>.</p>")
        return
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="cnnlab API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/static/favicon.svg",
                                   swagger_ui_parameters={"validatorUrl": None})


def _version() -> str:
    from cnnlab import __version__
    return __version__
