"""`PREDICTIONS_VIEW`: the predictions topic read as the monitor reads it, without the `features` map.

    ConsumerLoop(topics={PREDICTIONS.name(prefix): PREDICTIONS_VIEW, ...}, ...)

A `Prediction` carries its 26 features twice: as `packed_features` (what the monitor bins) and as the `features`
map (for readers older than that field), and the map is most of its bytes and most of its decoding (each entry
a key string and a value). `PredictionView` is `michi.v1.Prediction` with the same fields and numbers but the map
(field 11) left out, built at import from the generated descriptor in a pool of its own: a view decodes the map's
bytes as an unknown field (kept, not parsed), so `SerializeToString` gives the record back whole, and
`full_prediction` turns a view into a `Prediction` where one is needed (a row without `packed_features`, a
prediction asked to be labelled). Its full name is `michi.v1.Prediction`, so the `schema` header check is the
same; the schema stays `proto/michi/v1/inference.proto`'s, which this follows whatever fields it gains.
"""

from __future__ import annotations

import dataclasses

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import Message

from michi.bus.catalog import PREDICTIONS, TopicSpec
from michi.contracts.v1 import inference_pb2

LEFT_OUT = "features"


def _add_with_dependencies(pool: descriptor_pool.DescriptorPool, file: FileDescriptor, added: set[str]) -> None:
    for dependency in file.dependencies:
        _add_with_dependencies(pool, dependency, added)
    if file.name in added:
        return
    proto = descriptor_pb2.FileDescriptorProto()
    file.CopyToProto(proto)
    pool.Add(proto)
    added.add(file.name)


def _view_class() -> type[Message]:
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()
    for dependency in inference_pb2.DESCRIPTOR.dependencies:
        _add_with_dependencies(pool, dependency, added)
    proto = descriptor_pb2.FileDescriptorProto()
    inference_pb2.DESCRIPTOR.CopyToProto(proto)
    (message,) = [message for message in proto.message_type if message.name == "Prediction"]
    (field,) = [field for field in message.field if field.name == LEFT_OUT]
    entry = field.type_name.rsplit(".", 1)[-1]
    kept = [other for other in message.field if other.name != LEFT_OUT]
    del message.field[:]
    message.field.extend(kept)
    nested = [other for other in message.nested_type if other.name != entry]
    del message.nested_type[:]
    message.nested_type.extend(nested)
    pool.Add(proto)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(inference_pb2.Prediction.DESCRIPTOR.full_name))


PredictionView = _view_class()
PREDICTIONS_VIEW: TopicSpec = dataclasses.replace(PREDICTIONS, value_type=PredictionView)

__all__ = ["PREDICTIONS_VIEW", "PredictionView"]
