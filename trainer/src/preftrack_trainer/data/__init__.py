"""Datasets: the synthetic drifting shop and MovieLens-100k, both as preftrack events."""
