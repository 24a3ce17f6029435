"""Gateway configuration: one frozen dataclass, validated on creation, buildable from ``PREFTRACK_*``."""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
from collections.abc import Mapping

from preftrack_gateway.features import FeatureSpec, LabelSpec
from preftrack_gateway.lists import MAX_EXPLORATION
from preftrack_gateway.online import OnlineConfig
from preftrack_gateway.policy import RolloutPolicy

_ONLINE = OnlineConfig()
_POLICY = RolloutPolicy()


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the setting."""


#: Settings whose value ``auto`` means None (chosen by the code, per shop).
_AUTO_FIELDS = ("online_calibration", "online_alpha", "online_behaviour_buckets")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GatewayConfig:
    """Everything the gateway needs.

    Attributes:
        host / port: where the gRPC server listens (port 0 picks a free one).
        triton_url: Triton's KServe v2 gRPC endpoint, ``host:port``.
        model_name: the Triton model to call.
        store_url: ``sqlite:///path/to/events.db`` or ``postgresql://user:pass@host/db``.
        pseudonym_key: secret key of the keyed hash applied to user ids before anything is stored or logged.
            ``PREFTRACK_PSEUDONYM_KEY_FILE`` names a file holding it instead (a mounted secret); keep it away from
            the database it protects, or a copy of both re-identifies every user.
        event_retention_days: delete raw events and served lists older than this many days (checked hourly;
            0 keeps them for ever). The features already folded from them stay, decaying as usual.
        api_keys: when non-empty, callers must send ``authorization: Bearer <key>`` with one of these.
        catalog_keys: keys that may write the catalogue and users' attributes (UpsertItems, UpsertUsers), beside
            admin keys. With any key configured,
            a client key gets PERMISSION_DENIED there. Any key may be given as ``sha256:<hex digest>`` instead of
            the key itself, so the configuration need not hold it.
        tls_cert_file / tls_key_file: serve TLS with this certificate chain and private key (PEM); both or neither.
        store_context: keep each event's free-form ``context`` (checked for size either way); false drops it
            before anything is stored, for deployments that must not keep what clients put there.
        tls_client_ca_file: with TLS, require client certificates signed by this CA (mutual TLS).
        admin_keys: keys of the admin API (``preftrack.admin.v1``), sent the same way. A client key is refused
            there (PERMISSION_DENIED). With neither kind of key set (a local dev stack) the admin API is open;
            with client keys but no admin keys it is closed.
        analyst_keys: keys of the insights API (``preftrack.insights.v1``: profiles, audiences, trends), beside
            admin keys; other keys are refused there (PERMISSION_DENIED). With no key of any kind set it is open.
        max_audience_users: most users one RankAudience call may rank.
        metrics_port: Prometheus metrics over HTTP (0: disabled).
        health_port: a second port answering only ``grpc.health.v1`` (the main port's statuses) from threads of
            its own, so that probes are answered while the event loop is busy: point liveness probes here.
            Plaintext and without keys, like health on the main port (it tells only whether each service is
            SERVING); same host as ``port``; with ``--workers``, every worker listens on it (SO_REUSEPORT). 0 (the
            default): not served. No fixed default: every gateway on a host would bind it (SO_REUSEPORT lets
            them), and a probe would reach any of them. The image sets 50060.
        metrics_keys: when set, ``/metrics`` answers only ``Authorization: Bearer <key>`` with one of these
            (plain or ``sha256:``), and 401 otherwise.
        reflection: serve gRPC server reflection (v1 and v1alpha); off hides the API's shape from anyone who can
            reach the port.
        max_items_per_call: most items one Score/Recommend may carry.
        retrieval_candidates: how many candidates a Recommend without candidates retrieves from the catalogue and
            scores (more: better recall, a longer call; Triton scores 300 in a few ms).
        exploration: the share of Recommend lists the exploration policy reorders (the first item trades places
            with another returned one), in [0, 0.5]; each served list logs its propensities, so the trainer can
            judge new versions on them before any user sees one. 0: lists are never reordered.
        max_events_per_call: most events one SendFeedback may carry.
        max_stream_events: most events one StreamFeedback stream may carry.
        key_rate_limit: calls per second each key may make (bursts of twice that); beyond, RESOURCE_EXHAUSTED with
            a retry hint. 0: no limit. Applies to callers with a key (it needs keys configured).
        max_streams: most StreamFeedback streams open at once; more are refused (RESOURCE_EXHAUSTED with a retry
            hint) before any of their events is read. An admitted stream waits for room instead of failing.
        max_message_bytes: largest request message accepted.
        max_pending_events: events waiting for commit before new ones are refused (RESOURCE_EXHAUSTED).
        max_future_skew_s: how far in the future an event's timestamp may be.
        commit_batch_events: most events committed in one transaction.
        triton_timeout_s: deadline for a Triton call when the caller sets none.
        health_interval_s: how often model readiness is probed.
        snapshot_dir: where the gateway writes a snapshot of its real-time state when it stops, and reads it when
            it starts (then only the log after it is folded: restart time stops growing with the log). Unset: every
            start folds the whole log. Keep it private to the gateway's user (the file is a pickle).
        follow_interval_s: how often the shared event log is read for events committed through other replicas
            (they reach this replica's features within about this long; its own are in before they are acked).
        shutdown_grace_s: how long in-flight calls may finish on shutdown.
        positive_types / rating_threshold / example_types / attribution_window_s: the deployment's feature and
            label settings, used
            only to create them when the event store holds none yet (``None``: not set, the default is used). The
            store's settings win; set explicitly and different from them, the gateway refuses to start. See
            :mod:`preftrack_gateway.deployment`.
        model_repository: the Triton model repository, when this process can read it: its versions'
            ``metadata.json`` give the settings of a new deployment and the feature schema of a version the
            registry does not know, and its config lets a Triton that has not loaded the model load exactly the
            versions wanted.
        triton_model_config: the config Triton was started with (its ``--model-config-name``: ``gpu`` is
            ``configs/gpu.pbtxt``); None: ``config.pbtxt``.
        online_learning: learn per labelled event on top of the serving version (the per-event layer,
            :mod:`preftrack_gateway.online`); off serves the version's scores as they are.
        online_alpha / online_l2: the per-event layer's FTRL learning rate (``auto``, None, the default: two
            rates side by side, mixed; see :class:`preftrack_gateway.online.Correction`) and L2 regularisation.
        online_calibration: also learn weights that re-calibrate the serving version (on its logit, and on the
            item's own behaviour features); ``auto`` (None, the default) where every label is final at once, see
            :class:`preftrack_gateway.online.OnlineConfig`.
        online_behaviour_buckets: also learn a weight per bucket of each behaviour feature (helps a shop whose
            signals change meaning, e.g. repeat purchases after a move to consumables; costs a little elsewhere);
            ``auto`` (None): a member of the layer's mixture learns them and the shop's own feedback weighs it;
            off by default, see :class:`preftrack_gateway.online.OnlineConfig`.
        rollout_mode / rollout_fraction / rollout_shadow_sample / rollout_window_s / rollout_min_outcomes /
            rollout_margin / rollout_alpha / rollout_check_s / rollout_max_error_rate / rollout_max_p99_ms /
            rollout_auto: how an exported version is rolled out and decided, see
            :class:`preftrack_gateway.rollout.RolloutPolicy` (``rollout_mode=direct`` ships without a live test).
    """

    host: str = "127.0.0.1"
    port: int = 50051
    triton_url: str = "127.0.0.1:8001"
    model_name: str = "preftrack"
    store_url: str = "sqlite:///var/preftrack.db"
    pseudonym_key: str = ""
    api_keys: tuple[str, ...] = ()
    admin_keys: tuple[str, ...] = ()
    catalog_keys: tuple[str, ...] = ()
    analyst_keys: tuple[str, ...] = ()
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_client_ca_file: str | None = None
    store_context: bool = True
    event_retention_days: float = 0.0
    metrics_port: int = 0
    health_port: int = 0
    metrics_keys: tuple[str, ...] = ()
    reflection: bool = True
    max_items_per_call: int = 1000
    retrieval_candidates: int = 300
    exploration: float = 0.0
    max_audience_users: int = 100_000
    max_events_per_call: int = 10_000
    max_stream_events: int = 1_000_000
    max_streams: int = 256
    key_rate_limit: float = 0.0
    max_message_bytes: int = 16 * 1024 * 1024
    max_pending_events: int = 50_000
    max_future_skew_s: float = 300.0
    commit_batch_events: int = 20_000
    triton_timeout_s: float = 5.0
    health_interval_s: float = 1.0
    follow_interval_s: float = 0.05
    snapshot_dir: str | None = None
    shutdown_grace_s: float = 10.0
    positive_types: tuple[str, ...] | None = None
    rating_threshold: float | None = None
    example_types: tuple[str, ...] | None = None
    attribution_window_s: float | None = None
    # Defaults of the per-event layer and the rollout are theirs (OnlineConfig, RolloutPolicy), not restated.
    online_learning: bool = _ONLINE.enabled
    online_alpha: float | None = _ONLINE.alpha
    online_l2: float = _ONLINE.l2
    online_calibration: bool | None = _ONLINE.calibration
    online_behaviour_buckets: bool | None = _ONLINE.behaviour_buckets
    model_repository: str | None = None
    triton_model_config: str | None = None
    rollout_mode: str = _POLICY.mode
    rollout_fraction: float = _POLICY.fraction
    rollout_shadow_sample: float = _POLICY.shadow_sample
    rollout_window_s: float = _POLICY.window_s
    rollout_min_outcomes: int = _POLICY.min_outcomes
    rollout_margin: float = _POLICY.margin
    rollout_alpha: float = _POLICY.alpha
    rollout_check_s: float = _POLICY.check_interval_s
    rollout_max_error_rate: float = _POLICY.max_error_rate
    rollout_max_p99_ms: float = _POLICY.max_p99_ms
    rollout_auto: bool = _POLICY.auto

    def __post_init__(self) -> None:
        if len(self.pseudonym_key) < 16:
            raise ConfigError("pseudonym_key (PREFTRACK_PSEUDONYM_KEY) must be set to a secret of >= 16 characters")
        if not (self.store_url.startswith("sqlite:///") or self.store_url.startswith("postgresql://")):
            raise ConfigError("store_url must start with sqlite:/// or postgresql://")
        if not (math.isfinite(self.exploration) and 0.0 <= self.exploration <= MAX_EXPLORATION):
            raise ConfigError(f"exploration (PREFTRACK_EXPLORATION) must lie in [0, {MAX_EXPLORATION}]")
        if not all(0 <= p < 65536 for p in (self.port, self.metrics_port, self.health_port)):
            raise ConfigError("port, metrics_port and health_port must lie in [0, 65535]")
        if self.health_port and self.health_port in (self.port, self.metrics_port):
            raise ConfigError("health_port must differ from port and metrics_port")
        for name in (
            "max_items_per_call",
            "retrieval_candidates",
            "max_audience_users",
            "max_events_per_call",
            "max_stream_events",
            "max_streams",
            "max_message_bytes",
            "max_pending_events",
            "commit_batch_events",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1")
        try:
            self.feature_spec()
            self.label_spec()
        except ValueError as exc:
            raise ConfigError(
                f"positive_types / rating_threshold / example_types / attribution_window_s: {exc}"
            ) from exc
        try:
            self.online_config()
            self.rollout_policy()
        except ValueError as exc:
            raise ConfigError(str(exc)) from exc
        roles = (self.api_keys, self.admin_keys, self.catalog_keys, self.analyst_keys)
        if sum(len(set(keys)) for keys in roles) != len(set().union(*roles)):
            raise ConfigError(
                "a key can have one role only: client (api_keys), catalogue (catalog_keys), analyst (analyst_keys) "
                "or admin"
            )
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigError(
                "set both tls_cert_file and tls_key_file (PREFTRACK_TLS_CERT_FILE / _KEY_FILE), or neither"
            )
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            raise ConfigError("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
            path = getattr(self, name)
            if path is not None and not os.access(path, os.R_OK):
                raise ConfigError(f"{name} {path!r} is not a readable file")
        if not 0 <= self.key_rate_limit < 1e9:
            raise ConfigError("key_rate_limit must be >= 0 calls per second (0: no limit)")
        if not 0 <= self.event_retention_days < 1e6:
            raise ConfigError("event_retention_days must be >= 0 (0: keep events for ever)")
        if min(self.triton_timeout_s, self.health_interval_s, self.follow_interval_s) <= 0 or self.shutdown_grace_s < 0:
            raise ConfigError(
                "triton_timeout_s, health_interval_s and follow_interval_s must be > 0, shutdown_grace_s >= 0"
            )

    def feature_spec(self) -> FeatureSpec:
        """The feature definitions these settings describe (defaults where not set)."""
        spec = FeatureSpec()
        if self.positive_types is not None:
            spec = dataclasses.replace(spec, positive_types=self.positive_types)
        if self.rating_threshold is not None:
            spec = dataclasses.replace(spec, rating_threshold=self.rating_threshold)
        return spec

    def online_config(self) -> OnlineConfig:
        """The per-event layer's settings."""
        return OnlineConfig(
            enabled=self.online_learning,
            alpha=self.online_alpha,
            l2=self.online_l2,
            calibration=self.online_calibration,
            behaviour_buckets=self.online_behaviour_buckets,
        )

    def rollout_policy(self) -> RolloutPolicy:
        """How exported versions are rolled out and decided."""
        return RolloutPolicy(
            mode=self.rollout_mode,
            fraction=self.rollout_fraction,
            shadow_sample=self.rollout_shadow_sample,
            window_s=self.rollout_window_s,
            min_outcomes=self.rollout_min_outcomes,
            margin=self.rollout_margin,
            alpha=self.rollout_alpha,
            check_interval_s=self.rollout_check_s,
            max_error_rate=self.rollout_max_error_rate,
            max_p99_ms=self.rollout_max_p99_ms,
            auto=self.rollout_auto,
        )

    def label_spec(self) -> LabelSpec:
        """The labelling these settings describe (defaults where not set)."""
        labels = LabelSpec()
        if self.example_types is not None:
            labels = dataclasses.replace(labels, example_types=self.example_types)
        if self.attribution_window_s is not None:
            labels = dataclasses.replace(labels, attribution_window_s=self.attribution_window_s)
        return labels

    def explicit_settings(self) -> dict[str, object]:
        """The feature and label settings that were set (``PREFTRACK_POSITIVE_TYPES`` ...), by name."""
        names = ("positive_types", "rating_threshold", "example_types", "attribution_window_s")
        return {name: getattr(self, name) for name in names if getattr(self, name) is not None}

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: object) -> GatewayConfig:
        """Defaults, overridden by ``PREFTRACK_<FIELD>`` variables, overridden by ``overrides``."""
        source = os.environ if env is None else env
        values: dict[str, object] = {}
        for field in dataclasses.fields(cls):
            raw = source.get(f"PREFTRACK_{field.name.upper()}")
            if raw is None:
                continue
            try:
                if field.name in (
                    "api_keys",
                    "admin_keys",
                    "catalog_keys",
                    "analyst_keys",
                    "metrics_keys",
                    "positive_types",
                    "example_types",
                ):
                    values[field.name] = tuple(k for k in raw.split(",") if k)
                elif (
                    field.name in ("online_calibration", "online_alpha", "online_behaviour_buckets")
                    and raw.lower() == "auto"
                ):
                    values[field.name] = None
                elif field.type in ("bool", bool, "bool | None"):
                    if raw.lower() not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                        raise ValueError("expected true or false" + (" or auto" if field.type == "bool | None" else ""))
                    values[field.name] = raw.lower() in ("1", "true", "yes", "on")
                elif field.type in ("int", int):
                    values[field.name] = int(raw)
                elif field.type in ("float", float, "float | None"):
                    values[field.name] = float(raw)
                else:
                    values[field.name] = raw
            except ValueError as exc:
                raise ConfigError(f"PREFTRACK_{field.name.upper()}={raw!r}: {exc}") from exc
        key_file = source.get("PREFTRACK_PSEUDONYM_KEY_FILE")
        if key_file:
            if "pseudonym_key" in values:
                raise ConfigError("set PREFTRACK_PSEUDONYM_KEY or PREFTRACK_PSEUDONYM_KEY_FILE, not both")
            try:
                values["pseudonym_key"] = pathlib.Path(key_file).read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"PREFTRACK_PSEUDONYM_KEY_FILE={key_file!r}: {exc.strerror}") from exc
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)  # type: ignore[arg-type]
