"""The Data tab's API: audit an image folder given to `cnnlab serve --data`, look at its photos, relabel or
remove one (moves, with undo, journalled in the folder), and find photos similar to one.

Every change goes through `cnnlab.datasets.folders.curate`, so nothing is ever deleted; paths are checked to
stay inside the folder before any file is read or moved.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from cnnlab.datasets.folders import curate
from cnnlab.web.stores import NotFound

# status codes beyond 200 each route can answer (app.py adds the guards' and documents them)
ROUTE_ERRORS: dict[tuple[str, str], tuple[int, ...]] = {
    ("GET", "/api/data/audit"): (404, 422), ("GET", "/api/data/file"): (404, 422),
    ("GET", "/api/data/journal"): (404,), ("GET", "/api/data/similar"): (404, 422),
    ("POST", "/api/data/relabel"): (404, 409, 422), ("POST", "/api/data/remove"): (404, 409, 422),
    ("POST", "/api/data/undo"): (404, 409, 422)}


class FileRequest(BaseModel):
    folder: str = Field(..., max_length=200, description="a folder name from GET /api/data/folders")
    path: str = Field(..., min_length=1, max_length=1000, description="the photo's path inside the folder")


class RelabelRequest(FileRequest):
    label: str = Field(..., min_length=1, max_length=200, description="the class folder to move the photo to")


class UndoRequest(BaseModel):
    folder: str = Field(..., max_length=200)
    id: int = Field(..., ge=1, description="the journal entry to undo")


def router(folders: dict[str, Path], responses: Callable[[str, str], dict[Any, Any]]) -> APIRouter:
    """The /api/data routes over `folders` (name -> folder, as `DataStore.folders` holds them)."""
    api = APIRouter()

    def root(name: str) -> Path:
        if name not in folders:
            raise NotFound(f"unknown data folder {name!r}; this server has {', '.join(folders) or 'none'} "
                           "(start it with cnnlab serve --data FOLDER)")
        return folders[name]

    def moved(change: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        try:
            return change()
        except FileExistsError as exc:
            raise HTTPException(409, str(exc)) from None

    @api.get("/api/data/folders", responses=responses("GET", "/api/data/folders"), summary="the image folders of --data")
    def list_folders() -> dict[str, Any]:
        return {"folders": list(folders)}

    @api.get("/api/data/audit", responses=responses("GET", "/api/data/audit"),
             summary="near-duplicate groups and likely label errors of a folder (embeds its photos; slow the first time)")
    async def audit(folder: str = Query(..., max_length=200)) -> dict[str, Any]:
        from cnnlab.runs.audit import audit_folder
        return await run_in_threadpool(audit_folder, root(folder), None, False)

    @api.get("/api/data/file", responses=responses("GET", "/api/data/file"), summary="one photo of the folder")
    def photo(folder: str = Query(..., max_length=200), path: str = Query(..., max_length=1000)) -> FileResponse:
        file = curate.inside(root(folder), path)
        if not file.is_file():
            raise NotFound(f"{path} is not in {folder}")
        return FileResponse(file)

    @api.get("/api/data/journal", responses=responses("GET", "/api/data/journal"), summary="every change made so far")
    def journal(folder: str = Query(..., max_length=200)) -> dict[str, Any]:
        return {"changes": curate.journal(root(folder))}

    @api.get("/api/data/similar", responses=responses("GET", "/api/data/similar"),
             summary="the photos of the folder nearest to one of them")
    async def similar(folder: str = Query(..., max_length=200), path: str = Query(..., max_length=1000),
                      k: int = Query(8, ge=1, le=100)) -> dict[str, Any]:
        from cnnlab.runs.similar import similar_images
        base = root(folder)
        matches, _ = await run_in_threadpool(similar_images, "imagenet", curate.inside(base, path), base, k, False)
        return {"matches": [{"path": m.path.relative_to(base).as_posix(), "similarity": round(m.similarity, 4)}
                            for m in matches]}

    @api.post("/api/data/relabel", responses=responses("POST", "/api/data/relabel"),
              summary="move a photo to another class folder (undo with /api/data/undo)")
    def relabel(req: RelabelRequest) -> dict[str, Any]:
        return moved(lambda: curate.relabel(root(req.folder), req.path, req.label))

    @api.post("/api/data/remove", responses=responses("POST", "/api/data/remove"),
              summary="move a photo to the folder's trash (nothing is deleted; undo with /api/data/undo)")
    def remove(req: FileRequest) -> dict[str, Any]:
        return moved(lambda: curate.remove(root(req.folder), req.path))

    @api.post("/api/data/undo", responses=responses("POST", "/api/data/undo"), summary="undo one change")
    def undo(req: UndoRequest) -> dict[str, Any]:
        return moved(lambda: curate.undo(root(req.folder), req.id))

    return api
