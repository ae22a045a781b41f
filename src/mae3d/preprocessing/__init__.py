"""Preprocessing of a corpus for pre-training: fingerprint, plan, per-image processing, blosc2 store."""
