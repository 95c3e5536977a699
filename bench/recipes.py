"""Time and test accuracy of the zoo's speed and accuracy recipes: `fast` (time to 99.0%) and `best` (final accuracy).

    python bench/recipes.py [--device cpu|cuda] [--models fast,best]
"""
import argparse
import sys

import torch

from cnnlab.bench.mnist_speed import cnnlab_run
from cnnlab.datasets.registry import load
from cnnlab.train.fit import resolve_device

TARGETS = {"fast": 0.99, "best": 1.01}  # best trains its whole recipe: no early stop at a target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--models", default="fast,best")
    args = parser.parse_args()
    dev = resolve_device(args.device)
    print(f"device: {dev} ({torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'CPU'}), torch {torch.__version__}")
    data = load("mnist")
    for name in args.models.split(","):
        r = cnnlab_run(data, model=name, target=TARGETS.get(name, 0.99), device=str(dev))
        to_target = f"{r['time_to_target_s']:.2f} s to 99.0%" if name == "fast" and r["reached"] else ""
        print(f"{name}: final test accuracy {r['test_acc'][-1]:.4f} after {r['epochs']} epochs, "
              f"{r['train_seconds']:.2f} s in all {to_target} ({r['recipe']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
