#!/usr/bin/python3
"""Reads a safetensors file (one ferry wrote, say) into torch tensors by parsing the format by
hand, prints every tensor, and with --check compares the file against make_safetensors_data.py's
reference tensors: same values, and the same bytes the reference writer would produce.

Usage: /usr/bin/python3 tests/data/read_ferry_file.py FILE [--check]"""
import json
import os
import struct
import sys

import torch

sys.dont_write_bytecode = True  # keep tests/data free of __pycache__
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_safetensors_data as ref  # noqa: E402

CODES = {code: dtype for dtype, (code, _) in ref.DTYPES.items()}


def load(path):
    """Returns (tensors: name -> tensor in header order, metadata dict or None)."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n].decode("utf-8"))
    data = blob[8 + n:]
    metadata = header.pop("__metadata__", None)
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        dtype = CODES[info["dtype"]]
        raw = torch.frombuffer(bytearray(data[begin:end]), dtype=torch.uint8) if end > begin \
            else torch.empty(0, dtype=torch.uint8)
        tensors[name] = raw.view(dtype).reshape(info["shape"]).clone()
    return tensors, metadata


def main(argv):
    if len(argv) < 2:
        print(__doc__)
        return 2
    tensors, metadata = load(argv[1])
    print("metadata:", metadata)
    for name, t in tensors.items():
        print("  %-7s %-15s %-8s %s" % (name, t.dtype, list(t.shape), t.tolist()))
    if "--check" not in argv:
        return 0
    expected = ref.reference_tensors()
    ok = set(tensors) == set(expected)
    for name, t in expected.items():
        got = tensors.get(name)
        if got is None or got.dtype != t.dtype or got.shape != t.shape or not torch.equal(got, t):
            print("MISMATCH:", name)
            ok = False
    with open(argv[1], "rb") as f:
        same_bytes = f.read() == ref.serialize(expected, metadata)
    print("values match: %s; bytes match the reference writer: %s" % (ok, same_bytes))
    return 0 if ok and same_bytes else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
