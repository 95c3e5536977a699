"""Run folders and model files: train into a run, read it back, predict with it, export it."""
