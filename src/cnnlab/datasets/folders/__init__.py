"""Image folders: find classes and splits, decode once into arrays (cached), stream big ones, check, export."""
