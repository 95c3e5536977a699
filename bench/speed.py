"""Time to 99% MNIST test accuracy: cnnlab vs plain PyTorch vs Keras in one process (`cnnlab bench` runs the same).

    python bench/speed.py [--device cpu|cuda] [--repeat 2] [--peers pytorch,keras]
"""
import sys

from cnnlab.bench.mnist_speed import main

if __name__ == "__main__":
    sys.exit(main())
