"""`cnnlab serve`: arguments, and glue from them to the web app and uvicorn."""
from __future__ import annotations

import argparse
import sys

from cnnlab.errors import MissingExtra


def add_serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", nargs="?", help="run folder, .safetensors or .keras file to serve first (default: the newest run), "
                   "or imagenet: the pretrained EfficientNet-Lite0's 1000 classes, no training")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s: this computer only)")
    p.add_argument("--port", type=int, default=8000, help="TCP port to listen on (default %(default)s)")
    p.add_argument("--runs", default="runs", help="folder of run folders to list and train into (default %(default)s)")
    p.add_argument("--data", action="append", default=[], metavar="FOLDER",
                   help="an image folder to offer for training (repeatable)")


def run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be 1..65535, got {args.port}")
    try:
        from cnnlab.web import server
        from cnnlab.web.app import create_app
        from cnnlab.web.guards import bind_warning
    except ImportError as exc:
        raise MissingExtra(f"cnnlab serve needs the web extra: pip install 'cnnlab[web]' ({exc})") from None
    sock = server.bind(args.host, args.port)  # a busy port is an error before "serving on"
    app = create_app(args.run, args.runs, args.data, host=args.host)
    warning = bind_warning(args.host)
    if warning:
        print(f"cnnlab: warning: {warning}", file=sys.stderr)
    shown = f"[{args.host}]" if ":" in args.host else args.host
    print(f"cnnlab: serving on http://{shown}:{args.port}/  (API docs at /docs; Ctrl-C stops)", flush=True)
    server.serve(app, args.host, args.port, on_stop=app.state.cnnlab.decodes.stop, sock=sock)
    return 0
