"""What the examples' PyTorch twins (examples/*/reference.py) share: reading the weights and data
a ferry example wrote with --weights-out, and a port for the rendezvous. Each reference.py puts
this folder on sys.path before importing it."""
import json
import socket
import struct

import torch

DTYPES = {"F64": torch.float64, "F32": torch.float32, "I64": torch.int64}


def load_safetensors(path):
    """name -> tensor, parsing the format by hand (the safetensors package need not be there):
    an 8-byte little-endian header length, the JSON header, then the tensors' bytes."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    header.pop("__metadata__", None)
    data = blob[8 + n:]
    out = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        raw = torch.frombuffer(bytearray(data[begin:end]), dtype=torch.uint8)
        out[name] = raw.view(DTYPES[info["dtype"]]).reshape(info["shape"]).clone()
    return out


def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
