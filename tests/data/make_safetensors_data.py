#!/usr/bin/python3
"""Writes tests/data/torch_written.safetensors: tensors of every dtype ferry knows, with values
built by torch, laid out exactly as the reference safetensors writer lays them out (tensors by
descending dtype alignment, then by name; compact JSON header padded with spaces to a multiple of
8 bytes). The format is written by hand with struct and json so that only torch is needed.
tests/unit/test_safetensors.c checks ferry reads these values and, saving the same tensors,
writes the very same bytes.

Run with: /usr/bin/python3 tests/data/make_safetensors_data.py  (from the repository root)."""
import hashlib
import json
import os
import struct
import sys

import torch

# safetensors dtype code and the reference writer's ordering rank (its enum order).
DTYPES = {
    torch.bool: ("BOOL", 0),
    torch.uint8: ("U8", 1),
    torch.float16: ("F16", 7),
    torch.bfloat16: ("BF16", 8),
    torch.int32: ("I32", 9),
    torch.float32: ("F32", 11),
    torch.float64: ("F64", 12),
    torch.int64: ("I64", 13),
}

METADATA = {"format": "pt", "note": "quote \" backslash \\ tab \t e-acute \u00e9"}


def reference_tensors():
    """The tensors the C test expects, name -> tensor."""
    return {
        "weight": torch.arange(6, dtype=torch.float32).reshape(2, 3) * 0.5 - 1.0,
        "bias": torch.tensor([0.1, -2.5, 3e10], dtype=torch.float64),
        "ids": torch.tensor([0, -1, 2**40, -(2**62)], dtype=torch.int64),
        "counts": torch.tensor([[1, -2], [3, -4]], dtype=torch.int32),
        "pixels": torch.tensor([0, 1, 127, 128, 255], dtype=torch.uint8),
        "mask": torch.tensor([True, False, True]),
        "half": torch.tensor([1.0, -0.5, 65504.0], dtype=torch.float16),
        "brain": torch.tensor([1.0, -3.140625], dtype=torch.bfloat16),
        "scalar": torch.tensor(7.25, dtype=torch.float32),
        "empty": torch.zeros(0, 3, dtype=torch.float32),
    }


def tensor_bytes(t):
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def serialize(tensors, metadata=None):
    """The bytes the reference writer produces for these tensors."""
    order = sorted(tensors.items(), key=lambda kv: (-DTYPES[kv[1].dtype][1], kv[0]))
    header = {}
    if metadata:
        header["__metadata__"] = metadata
    offset, blobs = 0, []
    for name, t in order:
        data = tensor_bytes(t)
        header[name] = {"dtype": DTYPES[t.dtype][0], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * ((8 - len(text) % 8) % 8)
    return struct.pack("<Q", len(text)) + text + b"".join(blobs)


def main():
    out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_written.safetensors")
    data = serialize(reference_tensors(), METADATA)
    with open(out, "wb") as f:
        f.write(data)
    print("wrote %s: %d bytes, sha256 %s" % (out, len(data), hashlib.sha256(data).hexdigest()))
    for name, t in reference_tensors().items():
        print("  %-7s %-15s %s" % (name, t.dtype, t.tolist()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
