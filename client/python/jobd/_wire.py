"""Protobuf wire encoding of SubmitItems by hand, for Executor.map's hot
loop: a JobSpec is a serialized template (task and options) followed by its
`args` entries (field 2, repeated google.protobuf.Value), which protobuf
parses as one message (fields concatenate). Numbers and strings are encoded
here; other values through google.protobuf.Value.

Stateless; thread-safe.
"""

import struct

from google.protobuf import struct_pb2

from jobd._common import set_value

_pack_double = struct.Struct("<d").pack
_SMALL = [bytes((i,)) for i in range(128)]


def varint(n):
    if n < 128:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def encode_value(x, where):
    """A google.protobuf.Value's bytes."""
    t = type(x)
    if t is int or t is float:
        return b"\x11" + _pack_double(x)  # number_value = 2, fixed64
    if t is str:
        b = x.encode()
        return b"\x1a" + varint(len(b)) + b  # string_value = 3
    v = struct_pb2.Value()
    set_value(v, x, where)
    return v.SerializeToString()


def encode_item(tag, template, args):
    """SubmitRequest.items entry (field 2) of SubmitItem{client_tag, spec}."""
    spec = [template]
    for i, x in enumerate(args):
        v = encode_value(x, "spec.args[%d]" % i if type(x) not in (
            int, float, str) else None)
        spec.append(b"\x12" + varint(len(v)) + v)  # JobSpec.args = 2
    spec = b"".join(spec)
    item = b"\x08" + varint(tag) + b"\x12" + varint(len(spec)) + spec
    return b"\x12" + varint(len(item)) + item
