from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Label(_message.Message):
    __slots__ = ("request_id", "row", "int_label", "string_label", "number_label")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ROW_FIELD_NUMBER: _ClassVar[int]
    INT_LABEL_FIELD_NUMBER: _ClassVar[int]
    STRING_LABEL_FIELD_NUMBER: _ClassVar[int]
    NUMBER_LABEL_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    row: int
    int_label: int
    string_label: str
    number_label: float
    def __init__(self, request_id: _Optional[str] = ..., row: _Optional[int] = ..., int_label: _Optional[int] = ..., string_label: _Optional[str] = ..., number_label: _Optional[float] = ...) -> None: ...

class FeedbackRequest(_message.Message):
    __slots__ = ("model_name", "labels")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    labels: _containers.RepeatedCompositeFieldContainer[Label]
    def __init__(self, model_name: _Optional[str] = ..., labels: _Optional[_Iterable[_Union[Label, _Mapping]]] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("model_name", "feedback_id", "written", "repeated")
    MODEL_NAME_FIELD_NUMBER: _ClassVar[int]
    FEEDBACK_ID_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_FIELD_NUMBER: _ClassVar[int]
    REPEATED_FIELD_NUMBER: _ClassVar[int]
    model_name: str
    feedback_id: str
    written: int
    repeated: int
    def __init__(self, model_name: _Optional[str] = ..., feedback_id: _Optional[str] = ..., written: _Optional[int] = ..., repeated: _Optional[int] = ...) -> None: ...
