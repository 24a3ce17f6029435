import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_TYPE_UNSPECIFIED: _ClassVar[EventType]
    EVENT_TYPE_VIEW: _ClassVar[EventType]
    EVENT_TYPE_CLICK: _ClassVar[EventType]
    EVENT_TYPE_ADD_TO_CART: _ClassVar[EventType]
    EVENT_TYPE_PURCHASE: _ClassVar[EventType]
    EVENT_TYPE_RATING: _ClassVar[EventType]
    EVENT_TYPE_SEARCH: _ClassVar[EventType]

class BoostTarget(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BOOST_TARGET_UNSPECIFIED: _ClassVar[BoostTarget]
    BOOST_TARGET_CATEGORY: _ClassVar[BoostTarget]
    BOOST_TARGET_ATTRIBUTE: _ClassVar[BoostTarget]
    BOOST_TARGET_ITEMS: _ClassVar[BoostTarget]
EVENT_TYPE_UNSPECIFIED: EventType
EVENT_TYPE_VIEW: EventType
EVENT_TYPE_CLICK: EventType
EVENT_TYPE_ADD_TO_CART: EventType
EVENT_TYPE_PURCHASE: EventType
EVENT_TYPE_RATING: EventType
EVENT_TYPE_SEARCH: EventType
BOOST_TARGET_UNSPECIFIED: BoostTarget
BOOST_TARGET_CATEGORY: BoostTarget
BOOST_TARGET_ATTRIBUTE: BoostTarget
BOOST_TARGET_ITEMS: BoostTarget

class Event(_message.Message):
    __slots__ = ("event_id", "user_id", "item_id", "type", "value", "time", "recommendation_id", "context", "query", "session_id")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    RECOMMENDATION_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    QUERY_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    user_id: str
    item_id: str
    type: EventType
    value: float
    time: _timestamp_pb2.Timestamp
    recommendation_id: str
    context: _containers.ScalarMap[str, str]
    query: str
    session_id: str
    def __init__(self, event_id: _Optional[str] = ..., user_id: _Optional[str] = ..., item_id: _Optional[str] = ..., type: _Optional[_Union[EventType, str]] = ..., value: _Optional[float] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., recommendation_id: _Optional[str] = ..., context: _Optional[_Mapping[str, str]] = ..., query: _Optional[str] = ..., session_id: _Optional[str] = ...) -> None: ...

class Item(_message.Message):
    __slots__ = ("item_id", "categories", "price", "attributes", "title", "stock")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    PRICE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    STOCK_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    categories: _containers.RepeatedScalarFieldContainer[str]
    price: float
    attributes: _containers.ScalarMap[str, str]
    title: str
    stock: int
    def __init__(self, item_id: _Optional[str] = ..., categories: _Optional[_Iterable[str]] = ..., price: _Optional[float] = ..., attributes: _Optional[_Mapping[str, str]] = ..., title: _Optional[str] = ..., stock: _Optional[int] = ...) -> None: ...

class ScoredItem(_message.Message):
    __slots__ = ("item_id", "score", "source")
    ITEM_ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    item_id: str
    score: float
    source: str
    def __init__(self, item_id: _Optional[str] = ..., score: _Optional[float] = ..., source: _Optional[str] = ...) -> None: ...

class ItemFilter(_message.Message):
    __slots__ = ("in_stock_only", "min_price", "max_price", "categories_in", "categories_out", "attributes_in", "attributes_out", "exclude_bought_within_days")
    IN_STOCK_ONLY_FIELD_NUMBER: _ClassVar[int]
    MIN_PRICE_FIELD_NUMBER: _ClassVar[int]
    MAX_PRICE_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_IN_FIELD_NUMBER: _ClassVar[int]
    CATEGORIES_OUT_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_IN_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_OUT_FIELD_NUMBER: _ClassVar[int]
    EXCLUDE_BOUGHT_WITHIN_DAYS_FIELD_NUMBER: _ClassVar[int]
    in_stock_only: bool
    min_price: float
    max_price: float
    categories_in: _containers.RepeatedScalarFieldContainer[str]
    categories_out: _containers.RepeatedScalarFieldContainer[str]
    attributes_in: _containers.RepeatedCompositeFieldContainer[AttributeValues]
    attributes_out: _containers.RepeatedCompositeFieldContainer[AttributeValues]
    exclude_bought_within_days: float
    def __init__(self, in_stock_only: _Optional[bool] = ..., min_price: _Optional[float] = ..., max_price: _Optional[float] = ..., categories_in: _Optional[_Iterable[str]] = ..., categories_out: _Optional[_Iterable[str]] = ..., attributes_in: _Optional[_Iterable[_Union[AttributeValues, _Mapping]]] = ..., attributes_out: _Optional[_Iterable[_Union[AttributeValues, _Mapping]]] = ..., exclude_bought_within_days: _Optional[float] = ...) -> None: ...

class AttributeValues(_message.Message):
    __slots__ = ("name", "values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ...) -> None: ...

class Boost(_message.Message):
    __slots__ = ("target", "attribute", "values", "factor")
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTE_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    FACTOR_FIELD_NUMBER: _ClassVar[int]
    target: BoostTarget
    attribute: str
    values: _containers.RepeatedScalarFieldContainer[str]
    factor: float
    def __init__(self, target: _Optional[_Union[BoostTarget, str]] = ..., attribute: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ..., factor: _Optional[float] = ...) -> None: ...

class Diversity(_message.Message):
    __slots__ = ("attribute", "max_per_value")
    ATTRIBUTE_FIELD_NUMBER: _ClassVar[int]
    MAX_PER_VALUE_FIELD_NUMBER: _ClassVar[int]
    attribute: str
    max_per_value: int
    def __init__(self, attribute: _Optional[str] = ..., max_per_value: _Optional[int] = ...) -> None: ...
