"""Benchmarks that measure cnnlab against its peers (plain PyTorch, Keras) in one process."""
