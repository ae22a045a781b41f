"""Evaluation of segmentations: Dice / NSD / HD95 metrics and folder-level evaluation."""
