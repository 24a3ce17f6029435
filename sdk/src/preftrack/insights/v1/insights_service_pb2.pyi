import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Direction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIRECTION_UNSPECIFIED: _ClassVar[Direction]
    DIRECTION_STEADY: _ClassVar[Direction]
    DIRECTION_RISING: _ClassVar[Direction]
    DIRECTION_FALLING: _ClassVar[Direction]
DIRECTION_UNSPECIFIED: Direction
DIRECTION_STEADY: Direction
DIRECTION_RISING: Direction
DIRECTION_FALLING: Direction

class GetProfileRequest(_message.Message):
    __slots__ = ("user_id", "as_of", "top", "history_points")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    HISTORY_POINTS_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    as_of: _timestamp_pb2.Timestamp
    top: int
    history_points: int
    def __init__(self, user_id: _Optional[str] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., top: _Optional[int] = ..., history_points: _Optional[int] = ...) -> None: ...

class Affinity(_message.Message):
    __slots__ = ("key", "score", "short_term", "long_term", "trend", "direction")
    KEY_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SHORT_TERM_FIELD_NUMBER: _ClassVar[int]
    LONG_TERM_FIELD_NUMBER: _ClassVar[int]
    TREND_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    key: str
    score: float
    short_term: float
    long_term: float
    trend: float
    direction: Direction
    def __init__(self, key: _Optional[str] = ..., score: _Optional[float] = ..., short_term: _Optional[float] = ..., long_term: _Optional[float] = ..., trend: _Optional[float] = ..., direction: _Optional[_Union[Direction, str]] = ...) -> None: ...

class Shift(_message.Message):
    __slots__ = ("time", "event_index", "before", "after")
    TIME_FIELD_NUMBER: _ClassVar[int]
    EVENT_INDEX_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    event_index: int
    before: _containers.RepeatedScalarFieldContainer[str]
    after: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., event_index: _Optional[int] = ..., before: _Optional[_Iterable[str]] = ..., after: _Optional[_Iterable[str]] = ...) -> None: ...

class HistoryPoint(_message.Message):
    __slots__ = ("time", "category_shares")
    class CategorySharesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TIME_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_SHARES_FIELD_NUMBER: _ClassVar[int]
    time: _timestamp_pb2.Timestamp
    category_shares: _containers.ScalarMap[str, float]
    def __init__(self, time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., category_shares: _Optional[_Mapping[str, float]] = ...) -> None: ...

class GetProfileResponse(_message.Message):
    __slots__ = ("as_of", "events_used", "categories", "attributes", "items", "shifts", "last_shift", "history")
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    EVENTS_USED_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    SHIFTS_FIELD_NUMBER: _ClassVar[int]
    LAST_SHIFT_FIELD_NUMBER: _ClassVar[int]
    HISTORY_FIELD_NUMBER: _ClassVar[int]
    as_of: _timestamp_pb2.Timestamp
    events_used: int
    categories: _containers.RepeatedCompositeFieldContainer[Affinity]
    attributes: _containers.RepeatedCompositeFieldContainer[Affinity]
    items: _containers.RepeatedCompositeFieldContainer[Affinity]
    shifts: _containers.RepeatedCompositeFieldContainer[Shift]
    last_shift: Shift
    history: _containers.RepeatedCompositeFieldContainer[HistoryPoint]
    def __init__(self, as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., events_used: _Optional[int] = ..., categories: _Optional[_Iterable[_Union[Affinity, _Mapping]]] = ..., attributes: _Optional[_Iterable[_Union[Affinity, _Mapping]]] = ..., items: _Optional[_Iterable[_Union[Affinity, _Mapping]]] = ..., shifts: _Optional[_Iterable[_Union[Shift, _Mapping]]] = ..., last_shift: _Optional[_Union[Shift, _Mapping]] = ..., history: _Optional[_Iterable[_Union[HistoryPoint, _Mapping]]] = ...) -> None: ...

class RankAudienceRequest(_message.Message):
    __slots__ = ("item_id", "category", "user_ids", "k", "min_score", "as_of")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    USER_IDS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    MIN_SCORE_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    category: str
    user_ids: _containers.RepeatedScalarFieldContainer[str]
    k: int
    min_score: float
    as_of: _timestamp_pb2.Timestamp
    def __init__(self, item_id: _Optional[str] = ..., category: _Optional[str] = ..., user_ids: _Optional[_Iterable[str]] = ..., k: _Optional[int] = ..., min_score: _Optional[float] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class AudienceMember(_message.Message):
    __slots__ = ("user_id", "score")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    score: float
    def __init__(self, user_id: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class RankAudienceResponse(_message.Message):
    __slots__ = ("members", "model_version", "ranked", "done")
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RANKED_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    members: _containers.RepeatedCompositeFieldContainer[AudienceMember]
    model_version: str
    ranked: int
    done: bool
    def __init__(self, members: _Optional[_Iterable[_Union[AudienceMember, _Mapping]]] = ..., model_version: _Optional[str] = ..., ranked: _Optional[int] = ..., done: _Optional[bool] = ...) -> None: ...

class GetTrendsRequest(_message.Message):
    __slots__ = ("window", "top", "as_of")
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    TOP_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    window: _duration_pb2.Duration
    top: int
    as_of: _timestamp_pb2.Timestamp
    def __init__(self, window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., top: _Optional[int] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Trend(_message.Message):
    __slots__ = ("key", "kind", "share_recent", "share_before", "change", "events_recent", "events_before")
    KEY_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SHARE_RECENT_FIELD_NUMBER: _ClassVar[int]
    SHARE_BEFORE_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    EVENTS_RECENT_FIELD_NUMBER: _ClassVar[int]
    EVENTS_BEFORE_FIELD_NUMBER: _ClassVar[int]
    key: str
    kind: str
    share_recent: float
    share_before: float
    change: float
    events_recent: int
    events_before: int
    def __init__(self, key: _Optional[str] = ..., kind: _Optional[str] = ..., share_recent: _Optional[float] = ..., share_before: _Optional[float] = ..., change: _Optional[float] = ..., events_recent: _Optional[int] = ..., events_before: _Optional[int] = ...) -> None: ...

class GetTrendsResponse(_message.Message):
    __slots__ = ("rising", "falling", "window_start", "window_end", "events_recent", "events_before")
    RISING_FIELD_NUMBER: _ClassVar[int]
    FALLING_FIELD_NUMBER: _ClassVar[int]
    WINDOW_START_FIELD_NUMBER: _ClassVar[int]
    WINDOW_END_FIELD_NUMBER: _ClassVar[int]
    EVENTS_RECENT_FIELD_NUMBER: _ClassVar[int]
    EVENTS_BEFORE_FIELD_NUMBER: _ClassVar[int]
    rising: _containers.RepeatedCompositeFieldContainer[Trend]
    falling: _containers.RepeatedCompositeFieldContainer[Trend]
    window_start: _timestamp_pb2.Timestamp
    window_end: _timestamp_pb2.Timestamp
    events_recent: int
    events_before: int
    def __init__(self, rising: _Optional[_Iterable[_Union[Trend, _Mapping]]] = ..., falling: _Optional[_Iterable[_Union[Trend, _Mapping]]] = ..., window_start: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., window_end: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., events_recent: _Optional[int] = ..., events_before: _Optional[int] = ...) -> None: ...
