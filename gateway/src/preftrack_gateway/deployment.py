"""A deployment's feature and label settings: one copy, in the event store, read by every process.

A model version is trained with one :class:`FeatureSpec` (what a positive signal is, the windows...) and one
:class:`LabelSpec`; served with other feature definitions it scores garbage without an error. So the settings
of a deployment live in one place, the event store's settings table (key :data:`SETTINGS_KEY`), and:

- the first process to open an empty store writes them (first writer wins, atomically): the gateway from
  the newest version's ``metadata.json`` when it knows the model repository, else from its ``PREFTRACK_*``
  settings; the continual trainer from its own configuration (``--ratings``);
- from then on the store's settings win: the trainer takes them (and logs it) whatever it was started with;
  a gateway whose ``PREFTRACK_POSITIVE_TYPES`` / ``PREFTRACK_RATING_THRESHOLD`` / ``PREFTRACK_EXAMPLE_TYPES``
  / ``PREFTRACK_ATTRIBUTION_WINDOW_S`` are set explicitly and disagree refuses to start;
- every model version's feature-schema hash (from its registry record, else its ``metadata.json``) must be the
  deployment's before the gateway serves it (:class:`VersionCheck`).

TensorFlow-free: the gateway and the trainer both use it.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from pathlib import Path

from preftrack_gateway.config import ConfigError, GatewayConfig
from preftrack_gateway.features import FeatureSpec, LabelSpec
from preftrack_gateway.store import EventStore

_LOGGER = logging.getLogger(__name__)

SETTINGS_KEY = "deployment.settings"
METADATA_FILE = "metadata.json"


@dataclasses.dataclass(frozen=True)
class DeploymentSettings:
    """The feature definitions and labelling of one deployment."""

    features: FeatureSpec
    labels: LabelSpec

    def to_json(self) -> str:
        """The stored form: ``{"features": ..., "labels": ...}``."""
        return json.dumps({"features": self.features.to_dict(), "labels": self.labels.to_dict()}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> DeploymentSettings:
        """Inverse of :meth:`to_json`."""
        data = json.loads(text)
        return cls(FeatureSpec.from_dict(data["features"]), LabelSpec.from_dict(data["labels"]))

    def describe(self) -> str:
        """A short human-readable form for logs and errors."""
        f, labels = self.features, self.labels
        return (
            f"positive_types={','.join(f.positive_types) or '(none)'} rating_threshold={f.rating_threshold:g} "
            f"example_types={','.join(labels.example_types)} attribution_window_s={labels.attribution_window_s:g} "
            f"(feature schema {f.schema_hash()})"
        )


async def read_settings(store: EventStore) -> DeploymentSettings | None:
    """The store's settings, or None when it holds none yet."""
    text = await store.get_setting(SETTINGS_KEY)
    return None if text is None else DeploymentSettings.from_json(text)


async def settle(store: EventStore, proposed: DeploymentSettings) -> tuple[DeploymentSettings, bool]:
    """The store's settings; when it holds none, ``proposed`` is written first. Returns (settings, written here)."""
    stored = await read_settings(store)
    if stored is not None:
        return stored, False
    text = await store.put_setting_if_absent(SETTINGS_KEY, proposed.to_json())
    return DeploymentSettings.from_json(text), text == proposed.to_json()


def environment(settings: DeploymentSettings) -> dict[str, str]:
    """``PREFTRACK_*`` variables that give a new gateway these settings.

    Raises ValueError for settings the variables cannot express (feature windows or priors off their defaults).
    """
    features = settings.features
    expressible = FeatureSpec(positive_types=features.positive_types, rating_threshold=features.rating_threshold)
    if features != expressible:
        raise ValueError(f"feature settings other than positive types and rating threshold: {features}")
    return {
        "PREFTRACK_POSITIVE_TYPES": ",".join(features.positive_types),
        "PREFTRACK_RATING_THRESHOLD": repr(features.rating_threshold),
        "PREFTRACK_EXAMPLE_TYPES": ",".join(settings.labels.example_types),
        "PREFTRACK_ATTRIBUTION_WINDOW_S": repr(settings.labels.attribution_window_s),
    }


# --- model versions' metadata ---------------------------------------------------------------------------


def read_metadata(repository: Path, model_name: str, version: int) -> dict[str, object] | None:
    """A version's ``metadata.json``, or None when it cannot be read."""
    try:
        data = json.loads((repository / model_name / str(version) / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def metadata_schema(metadata: Mapping[str, object]) -> str | None:
    """The feature-schema hash a version's metadata states (or implies by its feature spec), or None."""
    schema = metadata.get("feature_schema_hash")
    if isinstance(schema, str):
        return schema
    spec = metadata.get("feature_spec")
    if isinstance(spec, dict):
        try:
            return FeatureSpec.from_dict(spec).schema_hash()
        except (TypeError, ValueError):
            return None
    return None


def newest_version_settings(
    repository: Path, model_name: str, default_labels: LabelSpec
) -> tuple[int, DeploymentSettings] | None:
    """The settings in the newest version's ``metadata.json`` that states its feature spec, with its number."""
    folder = repository / model_name
    if not folder.is_dir():
        return None
    versions = sorted((int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()), reverse=True)
    for version in versions:
        metadata = read_metadata(repository, model_name, version) or {}
        spec, labels = metadata.get("feature_spec"), metadata.get("labels")
        if isinstance(spec, dict):
            return version, DeploymentSettings(
                FeatureSpec.from_dict(spec),
                LabelSpec.from_dict(labels) if isinstance(labels, dict) else default_labels,
            )
    return None


# --- the gateway ----------------------------------------------------------------------------------------


def _disagreements(config: GatewayConfig, settings: DeploymentSettings) -> list[str]:
    """The explicitly set ``PREFTRACK_*`` settings that differ from ``settings``."""
    held: dict[str, object] = {
        "positive_types": settings.features.positive_types,
        "rating_threshold": settings.features.rating_threshold,
        "example_types": settings.labels.example_types,
        "attribution_window_s": settings.labels.attribution_window_s,
    }
    problems = []
    for name, value in config.explicit_settings().items():
        tuples = isinstance(value, tuple)
        if (tuple(value) != held[name]) if tuples else (float(value) != held[name]):  # type: ignore[arg-type]
            problems.append(f"PREFTRACK_{name.upper()} is {value!r}, the deployment's is {held[name]!r}")
    return problems


async def gateway_settings(store: EventStore, config: GatewayConfig) -> DeploymentSettings:
    """The settings a gateway serves with (see the module's rules); raises ConfigError on a disagreement."""
    stored = await read_settings(store)
    source = "the event store"
    if stored is None:
        found = None
        if config.model_repository:
            found = newest_version_settings(Path(config.model_repository), config.model_name, config.label_spec())
        if found is not None:
            proposed, source = found[1], f"version {found[0]}'s {METADATA_FILE}"
        else:
            proposed, source = DeploymentSettings(config.feature_spec(), config.label_spec()), "PREFTRACK_* settings"
        problems = _disagreements(config, proposed)
        if problems:
            raise ConfigError(
                f"the feature settings disagree with {source}: {'; '.join(problems)}. Unset them, or use another "
                "model repository"
            )
        stored, written = await settle(store, proposed)
        source = f"{source}, written to the event store" if written else "the event store"
    problems = _disagreements(config, stored)
    if problems:
        raise ConfigError(
            f"the feature settings disagree with this deployment's, held in the event store ({SETTINGS_KEY}): "
            f"{'; '.join(problems)}. Unset them to use the deployment's, or use another event store"
        )
    _LOGGER.info("deployment settings from %s: %s", source, stored.describe())
    return stored


class VersionCheck:
    """Whether a model version may serve: its feature-schema hash must be the deployment's.

    The hash comes from the version's registry metrics, else from its ``metadata.json`` in the repository (when
    known). A version whose hash cannot be found is served, with one warning (deployments without a shared
    repository keep working).
    """

    def __init__(self, expected: str, repository: str | None, model_name: str) -> None:
        self.expected = expected
        self._repository = Path(repository) if repository else None
        self._model_name = model_name
        self._schemas: dict[int, str] = {}
        self._warned: set[int] = set()

    def schema(self, version: int, metrics: Mapping[str, object] | None) -> str | None:
        """The version's feature-schema hash, or None when unknown."""
        recorded = (metrics or {}).get("feature_schema_hash")
        if isinstance(recorded, str):
            return recorded
        if version not in self._schemas and self._repository is not None:
            metadata = read_metadata(self._repository, self._model_name, version)
            schema = metadata_schema(metadata) if metadata is not None else None
            if schema is not None:
                self._schemas[version] = schema
        return self._schemas.get(version)

    def refusal(self, version: int, metrics: Mapping[str, object] | None) -> str | None:
        """Why the version must not serve, or None."""
        schema = self.schema(version, metrics)
        if schema is None:
            if version not in self._warned:
                self._warned.add(version)
                where = (
                    f"nor in {self._repository / self._model_name / str(version) / METADATA_FILE}"
                    if self._repository is not None
                    else "and no model repository is known (PREFTRACK_MODEL_REPOSITORY)"
                )
                _LOGGER.warning(
                    "version %d: feature schema neither in the registry %s; serving it unchecked", version, where
                )
            return None
        if schema != self.expected:
            return (
                f"feature schema {schema} differs from this deployment's {self.expected}: the version was trained "
                f"on other feature definitions (the deployment's are in the event store's {SETTINGS_KEY})"
            )
        return None
