"""Stage 9: the whole pipeline, from a model and a task to shipped models (prune.py)."""
