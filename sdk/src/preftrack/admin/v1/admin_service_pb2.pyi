import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RolloutMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLLOUT_MODE_UNSPECIFIED: _ClassVar[RolloutMode]
    ROLLOUT_MODE_CANARY: _ClassVar[RolloutMode]
    ROLLOUT_MODE_SHADOW: _ClassVar[RolloutMode]
    ROLLOUT_MODE_DIRECT: _ClassVar[RolloutMode]
ROLLOUT_MODE_UNSPECIFIED: RolloutMode
ROLLOUT_MODE_CANARY: RolloutMode
ROLLOUT_MODE_SHADOW: RolloutMode
ROLLOUT_MODE_DIRECT: RolloutMode

class Version(_message.Message):
    __slots__ = ("version", "state", "parent", "first_seq", "last_seq", "note", "metrics_json", "created_at", "updated_at")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQ_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    METRICS_JSON_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    version: int
    state: str
    parent: int
    first_seq: int
    last_seq: int
    note: str
    metrics_json: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    def __init__(self, version: _Optional[int] = ..., state: _Optional[str] = ..., parent: _Optional[int] = ..., first_seq: _Optional[int] = ..., last_seq: _Optional[int] = ..., note: _Optional[str] = ..., metrics_json: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListVersionsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListVersionsResponse(_message.Message):
    __slots__ = ("versions",)
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedCompositeFieldContainer[Version]
    def __init__(self, versions: _Optional[_Iterable[_Union[Version, _Mapping]]] = ...) -> None: ...

class ArmOutcomes(_message.Message):
    __slots__ = ("arm", "outcomes", "positives", "positive_rate", "log_loss", "auc")
    ARM_FIELD_NUMBER: _ClassVar[int]
    OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    POSITIVES_FIELD_NUMBER: _ClassVar[int]
    POSITIVE_RATE_FIELD_NUMBER: _ClassVar[int]
    LOG_LOSS_FIELD_NUMBER: _ClassVar[int]
    AUC_FIELD_NUMBER: _ClassVar[int]
    arm: str
    outcomes: int
    positives: int
    positive_rate: float
    log_loss: float
    auc: float
    def __init__(self, arm: _Optional[str] = ..., outcomes: _Optional[int] = ..., positives: _Optional[int] = ..., positive_rate: _Optional[float] = ..., log_loss: _Optional[float] = ..., auc: _Optional[float] = ...) -> None: ...

class Comparison(_message.Message):
    __slots__ = ("metric", "difference", "low", "high", "margin", "decision", "reason")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    DIFFERENCE_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    MARGIN_FIELD_NUMBER: _ClassVar[int]
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    metric: str
    difference: float
    low: float
    high: float
    margin: float
    decision: str
    reason: str
    def __init__(self, metric: _Optional[str] = ..., difference: _Optional[float] = ..., low: _Optional[float] = ..., high: _Optional[float] = ..., margin: _Optional[float] = ..., decision: _Optional[str] = ..., reason: _Optional[str] = ...) -> None: ...

class GetRolloutRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetRolloutResponse(_message.Message):
    __slots__ = ("stable_version", "candidate_version", "mode", "fraction", "paused", "pinned_version", "arms", "comparison", "candidate_calls", "candidate_errors", "candidate_p99_ms", "shadow_outcomes", "shadow_stable_log_loss", "shadow_candidate_log_loss")
    STABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_VERSION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    PINNED_VERSION_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    COMPARISON_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_CALLS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_P99_MS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_OUTCOMES_FIELD_NUMBER: _ClassVar[int]
    SHADOW_STABLE_LOG_LOSS_FIELD_NUMBER: _ClassVar[int]
    SHADOW_CANDIDATE_LOG_LOSS_FIELD_NUMBER: _ClassVar[int]
    stable_version: int
    candidate_version: int
    mode: RolloutMode
    fraction: float
    paused: bool
    pinned_version: int
    arms: _containers.RepeatedCompositeFieldContainer[ArmOutcomes]
    comparison: Comparison
    candidate_calls: int
    candidate_errors: int
    candidate_p99_ms: float
    shadow_outcomes: int
    shadow_stable_log_loss: float
    shadow_candidate_log_loss: float
    def __init__(self, stable_version: _Optional[int] = ..., candidate_version: _Optional[int] = ..., mode: _Optional[_Union[RolloutMode, str]] = ..., fraction: _Optional[float] = ..., paused: _Optional[bool] = ..., pinned_version: _Optional[int] = ..., arms: _Optional[_Iterable[_Union[ArmOutcomes, _Mapping]]] = ..., comparison: _Optional[_Union[Comparison, _Mapping]] = ..., candidate_calls: _Optional[int] = ..., candidate_errors: _Optional[int] = ..., candidate_p99_ms: _Optional[float] = ..., shadow_outcomes: _Optional[int] = ..., shadow_stable_log_loss: _Optional[float] = ..., shadow_candidate_log_loss: _Optional[float] = ...) -> None: ...

class StartRolloutRequest(_message.Message):
    __slots__ = ("version", "mode", "fraction", "reason")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    version: int
    mode: RolloutMode
    fraction: float
    reason: str
    def __init__(self, version: _Optional[int] = ..., mode: _Optional[_Union[RolloutMode, str]] = ..., fraction: _Optional[float] = ..., reason: _Optional[str] = ...) -> None: ...

class StartRolloutResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: Version
    def __init__(self, version: _Optional[_Union[Version, _Mapping]] = ...) -> None: ...

class SetRolloutFractionRequest(_message.Message):
    __slots__ = ("fraction",)
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    fraction: float
    def __init__(self, fraction: _Optional[float] = ...) -> None: ...

class SetRolloutFractionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PromoteRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class PromoteResponse(_message.Message):
    __slots__ = ("stable_version",)
    STABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    stable_version: int
    def __init__(self, stable_version: _Optional[int] = ...) -> None: ...

class RollBackRequest(_message.Message):
    __slots__ = ("reason",)
    REASON_FIELD_NUMBER: _ClassVar[int]
    reason: str
    def __init__(self, reason: _Optional[str] = ...) -> None: ...

class RollBackResponse(_message.Message):
    __slots__ = ("stable_version",)
    STABLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    stable_version: int
    def __init__(self, stable_version: _Optional[int] = ...) -> None: ...

class PauseDecisionsRequest(_message.Message):
    __slots__ = ("paused",)
    PAUSED_FIELD_NUMBER: _ClassVar[int]
    paused: bool
    def __init__(self, paused: _Optional[bool] = ...) -> None: ...

class PauseDecisionsResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PinVersionRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class PinVersionResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JournalEntry(_message.Message):
    __slots__ = ("seq", "version", "kind", "at", "actor", "message", "details_json")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    DETAILS_JSON_FIELD_NUMBER: _ClassVar[int]
    seq: int
    version: int
    kind: str
    at: _timestamp_pb2.Timestamp
    actor: str
    message: str
    details_json: str
    def __init__(self, seq: _Optional[int] = ..., version: _Optional[int] = ..., kind: _Optional[str] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., message: _Optional[str] = ..., details_json: _Optional[str] = ...) -> None: ...

class ListJournalRequest(_message.Message):
    __slots__ = ("version", "kind", "limit")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    version: int
    kind: str
    limit: int
    def __init__(self, version: _Optional[int] = ..., kind: _Optional[str] = ..., limit: _Optional[int] = ...) -> None: ...

class ListJournalResponse(_message.Message):
    __slots__ = ("entries",)
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[JournalEntry]
    def __init__(self, entries: _Optional[_Iterable[_Union[JournalEntry, _Mapping]]] = ...) -> None: ...

class ExplainRoutesRequest(_message.Message):
    __slots__ = ("user_ids",)
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, user_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ExplainRoutesResponse(_message.Message):
    __slots__ = ("versions", "arms")
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    ARMS_FIELD_NUMBER: _ClassVar[int]
    versions: _containers.RepeatedScalarFieldContainer[int]
    arms: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, versions: _Optional[_Iterable[int]] = ..., arms: _Optional[_Iterable[str]] = ...) -> None: ...

class ForgetUserRequest(_message.Message):
    __slots__ = ("user_id",)
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    def __init__(self, user_id: _Optional[str] = ...) -> None: ...

class Erasure(_message.Message):
    __slots__ = ("ticket", "erased_at", "actor", "events_deleted", "impressions_deleted")
    TICKET_FIELD_NUMBER: _ClassVar[int]
    ERASED_AT_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    EVENTS_DELETED_FIELD_NUMBER: _ClassVar[int]
    IMPRESSIONS_DELETED_FIELD_NUMBER: _ClassVar[int]
    ticket: str
    erased_at: _timestamp_pb2.Timestamp
    actor: str
    events_deleted: int
    impressions_deleted: int
    def __init__(self, ticket: _Optional[str] = ..., erased_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., actor: _Optional[str] = ..., events_deleted: _Optional[int] = ..., impressions_deleted: _Optional[int] = ...) -> None: ...

class ForgetUserResponse(_message.Message):
    __slots__ = ("erasure",)
    ERASURE_FIELD_NUMBER: _ClassVar[int]
    erasure: Erasure
    def __init__(self, erasure: _Optional[_Union[Erasure, _Mapping]] = ...) -> None: ...

class ListErasuresRequest(_message.Message):
    __slots__ = ("after", "limit")
    AFTER_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    after: int
    limit: int
    def __init__(self, after: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ListErasuresResponse(_message.Message):
    __slots__ = ("erasures", "positions")
    ERASURES_FIELD_NUMBER: _ClassVar[int]
    POSITIONS_FIELD_NUMBER: _ClassVar[int]
    erasures: _containers.RepeatedCompositeFieldContainer[Erasure]
    positions: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, erasures: _Optional[_Iterable[_Union[Erasure, _Mapping]]] = ..., positions: _Optional[_Iterable[int]] = ...) -> None: ...
