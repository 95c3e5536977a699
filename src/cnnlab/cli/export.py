"""`cnnlab export`: write a trained model as ONNX or TorchScript for deployment."""
from __future__ import annotations

import argparse


def add_export_arguments(p: argparse.ArgumentParser) -> None:
    from cnnlab.runs.export import FORMATS, OPSET
    p.add_argument("run", help="run folder or .safetensors model file")
    p.add_argument("--format", choices=FORMATS, default="onnx", help="onnx (default; runs anywhere with onnxruntime) or torchscript (libtorch, C++)")
    p.add_argument("--out", help="file to write (default: model.onnx / model.torchscript.pt in the run folder)")
    p.add_argument("--opset", type=int, default=OPSET, help="ONNX opset (default %(default)s)")
    p.add_argument("--check", metavar="FOLDER", help="then run the exported file over FOLDER's images and report its "
                   "top-1 agreement and largest probability difference with cnnlab's own predictions")


def cmd_export(args: argparse.Namespace) -> int:
    from cnnlab.runs.export import INPUT_DOC, export
    out = export(args.run, args.format, args.out, args.opset)
    print(f"wrote {out} ({args.format}{f', opset {args.opset}' if args.format == 'onnx' else ''}); "
          f"input: {INPUT_DOC}; outputs: logits, probabilities")
    if args.check:
        from cnnlab.models import load_model
        from cnnlab.runs.export_check import check_export
        print(check_export(load_model(args.run), out, args.check).text(out))
    return 0
