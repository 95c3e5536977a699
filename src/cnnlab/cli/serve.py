"""`cnnlab serve`: arguments, and glue from them to the web app and uvicorn."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cnnlab.errors import MissingExtra

SERVE_CONCURRENCY = 512  # open connections + tasks; beyond, uvicorn answers 503 instead of queueing without end


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", help="run folder or .safetensors file to serve first (default: the newest run), "
                   "or imagenet: the pretrained EfficientNet-Lite0's 1000 classes, no training")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s: this computer only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port to listen on (default %(default)s)")
    p.add_argument("--runs", default="runs", help="folder of run folders to list and train into (default %(default)s)")
    p.add_argument("--data", action="append", default=[], metavar="FOLDER",
                   help="an image folder to offer for training (repeatable)")


def run(args: argparse.Namespace) -> int:
    from cnnlab.backbones.zoo import is_zoo_name
    if args.run is not None and not Path(args.run).exists() and not is_zoo_name(args.run):
        raise FileNotFoundError(f"run {args.run!r} not found: give a run folder (runs/NAME), a .safetensors file "
                                "or imagenet")
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be 1..65535, got {args.port}")
    try:
        import uvicorn

        from cnnlab.web.app import create_app
        from cnnlab.web.guards import bind_warning
    except ImportError as exc:
        raise MissingExtra(f"cnnlab serve needs the web extra: pip install 'cnnlab[web]' ({exc})") from None
    app = create_app(args.run, args.runs, args.data, host=args.host)
    warning = bind_warning(args.host)
    if warning:
        print(f"cnnlab: warning: {warning}", file=sys.stderr)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"cnnlab: serving on http://{shown}:{args.port}/  (API docs at /docs; Ctrl-C stops)", flush=True)
    # An open event stream would otherwise hold Ctrl-C until training ends; after 3 s the app's
    # shutdown stops the job, which still saves its run folder.
    # Slow clients: an idle keep-alive connection closes after 5 s, request headers over 16 KiB are
    # refused, and the app's BodyRead guard cuts off a body still trickling in after 10 s. uvicorn has
    # no timeout for a request's headers themselves, so limit_concurrency bounds what such clients hold.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=3, timeout_keep_alive=5, h11_max_incomplete_event_size=16 * 1024,
                limit_concurrency=SERVE_CONCURRENCY, backlog=SERVE_CONCURRENCY)
    return 0
