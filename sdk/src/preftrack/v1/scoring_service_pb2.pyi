import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from preftrack.v1 import types_pb2 as _types_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ScoreRequest(_message.Message):
    __slots__ = ("user_id", "item_ids", "context", "as_of", "query", "session_id")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    item_ids: _containers.RepeatedScalarFieldContainer[str]
    context: _containers.ScalarMap[str, str]
    as_of: _timestamp_pb2.Timestamp
    query: str
    session_id: str
    def __init__(self, user_id: _Optional[str] = ..., item_ids: _Optional[_Iterable[str]] = ..., context: _Optional[_Mapping[str, str]] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., query: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class ScoreResponse(_message.Message):
    __slots__ = ("items", "model_version", "request_id")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_types_pb2.ScoredItem]
    model_version: str
    request_id: str
    def __init__(self, items: _Optional[_Iterable[_Union[_types_pb2.ScoredItem, _Mapping]]] = ..., model_version: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class RecommendRequest(_message.Message):
    __slots__ = ("user_id", "candidate_item_ids", "k", "exclude_item_ids", "context", "as_of", "query", "filter", "boosts", "diversity", "session_id", "exploration")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_ITEM_IDS_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    AS_OF_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    BOOSTS_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    EXPLORATION_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    candidate_item_ids: _containers.RepeatedScalarFieldContainer[str]
    k: int
    exclude_item_ids: _containers.RepeatedScalarFieldContainer[str]
    context: _containers.ScalarMap[str, str]
    as_of: _timestamp_pb2.Timestamp
    query: str
    filter: _types_pb2.ItemFilter
    boosts: _containers.RepeatedCompositeFieldContainer[_types_pb2.Boost]
    diversity: _types_pb2.Diversity
    session_id: str
    exploration: float
    def __init__(self, user_id: _Optional[str] = ..., candidate_item_ids: _Optional[_Iterable[str]] = ..., k: _Optional[int] = ..., exclude_item_ids: _Optional[_Iterable[str]] = ..., context: _Optional[_Mapping[str, str]] = ..., as_of: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., query: _Optional[str] = ..., filter: _Optional[_Union[_types_pb2.ItemFilter, _Mapping]] = ..., boosts: _Optional[_Iterable[_Union[_types_pb2.Boost, _Mapping]]] = ..., diversity: _Optional[_Union[_types_pb2.Diversity, _Mapping]] = ..., session_id: _Optional[str] = ..., exploration: _Optional[float] = ...) -> None: ...

class RecommendResponse(_message.Message):
    __slots__ = ("items", "model_version", "recommendation_id", "fewer_than_k")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATION_ID_FIELD_NUMBER: _ClassVar[int]
    FEWER_THAN_K_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_types_pb2.ScoredItem]
    model_version: str
    recommendation_id: str
    fewer_than_k: bool
    def __init__(self, items: _Optional[_Iterable[_Union[_types_pb2.ScoredItem, _Mapping]]] = ..., model_version: _Optional[str] = ..., recommendation_id: _Optional[str] = ..., fewer_than_k: _Optional[bool] = ...) -> None: ...

class SimilarItemsRequest(_message.Message):
    __slots__ = ("item_id", "k", "filter", "user_id")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    k: int
    filter: _types_pb2.ItemFilter
    user_id: str
    def __init__(self, item_id: _Optional[str] = ..., k: _Optional[int] = ..., filter: _Optional[_Union[_types_pb2.ItemFilter, _Mapping]] = ..., user_id: _Optional[str] = ...) -> None: ...

class SimilarItemsResponse(_message.Message):
    __slots__ = ("items", "fewer_than_k")
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    FEWER_THAN_K_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_types_pb2.ScoredItem]
    fewer_than_k: bool
    def __init__(self, items: _Optional[_Iterable[_Union[_types_pb2.ScoredItem, _Mapping]]] = ..., fewer_than_k: _Optional[bool] = ...) -> None: ...

class BuyAgainRequest(_message.Message):
    __slots__ = ("user_id", "k", "filter")
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    k: int
    filter: _types_pb2.ItemFilter
    def __init__(self, user_id: _Optional[str] = ..., k: _Optional[int] = ..., filter: _Optional[_Union[_types_pb2.ItemFilter, _Mapping]] = ...) -> None: ...

class BuyAgainResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[_types_pb2.ScoredItem]
    def __init__(self, items: _Optional[_Iterable[_Union[_types_pb2.ScoredItem, _Mapping]]] = ...) -> None: ...
