"""Scoring a model: images to logits (TTA, sliding windows), one pass over a split with one confusion
matrix, evaluating a checkpoint, and the files ``evaluate --save-dir`` writes."""
