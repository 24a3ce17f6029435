"""The MLP preference model: [user emb, item emb, category emb, user attributes' mean emb, item attributes' mean
emb, normalised behaviour features] → P(like).

The model takes *raw* inputs — 63-bit id hashes and raw feature values — and does its own bucketing and
normalisation inside the graph, so an exported version carries its transforms and no caller can apply
stale statistics.
"""

from __future__ import annotations

import dataclasses
import logging

import keras
import numpy as np
import tensorflow as tf
from tqdm import tqdm

from preftrack_gateway.contract import ATTRIBUTE_SLOTS
from preftrack_gateway.features import NUM_FEATURES
from preftrack_trainer.preprocess import Examples

_LOGGER = logging.getLogger(__name__)

INPUT_NAMES = ("user_id", "item_id", "category_id", "features", "attributes")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Shape and training hyper-parameters of the MLP."""

    hidden_units: tuple[int, ...] = (64, 32)
    embedding_dim: int = 16
    user_buckets: int = 1 << 16
    item_buckets: int = 1 << 16
    category_buckets: int = 1 << 10
    attribute_buckets: int = 1 << 14
    learning_rate: float = 1e-3
    batch_size: int = 256
    epochs: int = 3
    l2: float = 1e-6
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.hidden_units or any(u < 1 for u in self.hidden_units):
            raise ValueError("hidden_units must be a non-empty tuple of positive sizes")
        if (
            min(self.embedding_dim, self.user_buckets, self.item_buckets, self.category_buckets, self.attribute_buckets)
            < 1
        ):
            raise ValueError("embedding_dim and bucket counts must be >= 1")
        if self.learning_rate <= 0 or self.batch_size < 1 or self.epochs < 0:
            raise ValueError("learning_rate must be > 0, batch_size >= 1 and epochs >= 0")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form for version metadata."""
        return {**dataclasses.asdict(self), "hidden_units": list(self.hidden_units)}


@keras.saving.register_keras_serializable(package="preftrack")
class Bucketize(keras.layers.Layer):
    """Maps a non-negative 63-bit id hash to one of ``num_buckets`` embedding rows."""

    def __init__(self, num_buckets: int, **kwargs):
        super().__init__(**kwargs)
        self.num_buckets = num_buckets

    def call(self, ids):
        return tf.math.floormod(tf.cast(ids, tf.int64), self.num_buckets)

    def get_config(self):
        return {**super().get_config(), "num_buckets": self.num_buckets}


@keras.saving.register_keras_serializable(package="preftrack")
class Standardize(keras.layers.Layer):
    """(x - mean) / std with statistics fitted on training data and frozen into the graph."""

    def __init__(self, mean, std, **kwargs):
        super().__init__(**kwargs)
        self.mean_values = [float(v) for v in mean]
        self.std_values = [float(v) for v in std]
        self._mean = tf.constant(self.mean_values, dtype=tf.float32)
        self._std = tf.constant(self.std_values, dtype=tf.float32)

    def call(self, x):
        return (tf.cast(x, tf.float32) - self._mean) / self._std

    def get_config(self):
        return {**super().get_config(), "mean": self.mean_values, "std": self.std_values}


@keras.saving.register_keras_serializable(package="preftrack")
class MeanOfPresent(keras.layers.Layer):
    """The mean of the embeddings of the attribute slots ``start:start + ATTRIBUTE_SLOTS`` that hold an id (0 pads;
    no id: zeros): the user's attributes (start 0) or the item's (start ATTRIBUTE_SLOTS)."""

    def __init__(self, start: int, **kwargs):
        super().__init__(**kwargs)
        self.start = start

    def call(self, embedded, ids):
        embedded = embedded[:, self.start : self.start + ATTRIBUTE_SLOTS]
        present = tf.cast(tf.not_equal(ids[:, self.start : self.start + ATTRIBUTE_SLOTS], 0), tf.float32)[..., None]
        return tf.reduce_sum(embedded * present, axis=1) / tf.maximum(tf.reduce_sum(present, axis=1), 1.0)

    def get_config(self):
        return {**super().get_config(), "start": self.start}


def fit_normalisation(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and standard deviation (constant features get std 1)."""
    mean = features.mean(axis=0)
    std = features.std(axis=0)
    return mean, np.where(std < 1e-6, 1.0, std)


def build_model(config: ModelConfig, mean: np.ndarray, std: np.ndarray) -> keras.Model:
    """A fresh, untrained model whose normalisation uses ``mean`` and ``std``."""
    keras.utils.set_random_seed(config.seed)
    user = keras.Input(shape=(), dtype="int64", name="user_id")
    item = keras.Input(shape=(), dtype="int64", name="item_id")
    category = keras.Input(shape=(), dtype="int64", name="category_id")
    features = keras.Input(shape=(NUM_FEATURES,), dtype="float32", name="features")
    attributes = keras.Input(shape=(2 * ATTRIBUTE_SLOTS,), dtype="int64", name="attributes")
    reg = keras.regularizers.L2(config.l2) if config.l2 > 0 else None

    def embed(ids, buckets: int, name: str, initializer: str = "uniform"):
        bucketed = Bucketize(buckets, name=f"{name}_bucket")(ids)
        return keras.layers.Embedding(
            buckets,
            config.embedding_dim,
            embeddings_initializer=initializer,
            embeddings_regularizer=reg,
            name=f"{name}_emb",
        )(bucketed)

    # The user's attributes and the item's, each the mean of its slots' embeddings (no attributes: zeros).
    user_attributes, item_attributes = (
        MeanOfPresent(start, name=f"{side}_attribute_mean")(
            # From zeros: a token no training row had (a new value) moves nothing.
            embed(attributes, config.attribute_buckets, f"{side}_attribute", "zeros"),
            attributes,
        )
        for side, start in (("user", 0), ("item", ATTRIBUTE_SLOTS))
    )
    x = keras.layers.Concatenate(name="concat")(
        [
            embed(user, config.user_buckets, "user"),
            embed(item, config.item_buckets, "item"),
            embed(category, config.category_buckets, "category"),
            user_attributes,
            item_attributes,
            Standardize(mean, std, name="standardize")(features),
        ]
    )
    for n, units in enumerate(config.hidden_units):
        x = keras.layers.Dense(units, activation="relu", name=f"hidden_{n}")(x)
    score = keras.layers.Dense(1, activation="sigmoid", name="score")(x)
    model = keras.Model(inputs=[user, item, category, features, attributes], outputs=score, name="preftrack_mlp")
    model.compile(
        optimizer=keras.optimizers.Adam(config.learning_rate),
        loss="binary_crossentropy",
    )
    return model


def as_inputs(examples: Examples) -> list[np.ndarray]:
    """Positional model inputs in :data:`INPUT_NAMES` order."""
    return [examples.user_id, examples.item_id, examples.category_id, examples.features, examples.attributes]


class _TqdmCallback(keras.callbacks.Callback):
    def __init__(self, total_steps: int, enabled: bool) -> None:
        super().__init__()
        self._bar = tqdm(total=total_steps, desc="training", unit="batch", disable=not enabled, mininterval=0.5)

    def on_train_batch_end(self, batch, logs=None):
        self._bar.update(1)
        if logs and "loss" in logs:
            self._bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)

    def on_train_end(self, logs=None):
        self._bar.close()


def train(
    model: keras.Model, examples: Examples, config: ModelConfig, *, epochs: int | None = None, progress: bool = False
) -> float:
    """Fit ``model`` on ``examples`` (shuffled each epoch), each weighted by its influence (those with none left
    out: a few hyperactive ids teach the model no more than a few people), and return the last epoch's mean loss."""
    n_epochs = config.epochs if epochs is None else epochs
    weights = examples.weights()
    if (weights < 1.0).any():
        examples = examples.take(weights > 0.0)
        weights = examples.weights()
    if n_epochs == 0 or len(examples) == 0:
        return float("nan")
    steps = n_epochs * int(np.ceil(len(examples) / config.batch_size))
    history = model.fit(
        as_inputs(examples),
        examples.label,
        sample_weight=weights if (weights < 1.0).any() else None,  # none: the same fit as before weights existed
        batch_size=config.batch_size,
        epochs=n_epochs,
        shuffle=True,
        verbose=0,
        callbacks=[_TqdmCallback(steps, progress)],
    )
    return float(history.history["loss"][-1])


def predict(model: keras.Model, examples: Examples, batch_size: int = 4096) -> np.ndarray:
    """Scores in [0, 1] for ``examples``, shape (n,)."""
    if len(examples) == 0:
        return np.zeros(0, dtype=np.float32)
    return model.predict(as_inputs(examples), batch_size=batch_size, verbose=0).reshape(-1)
