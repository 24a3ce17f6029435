"""Datasets: the synthetic drifting shop, the re-buy shop and MovieLens-100k, all as preftrack events.

``DATASETS`` names them once for every command line (kept here, free of TensorFlow, so a parser can import it).
"""

DATASETS = ("synthetic", "movielens", "rebuy")
