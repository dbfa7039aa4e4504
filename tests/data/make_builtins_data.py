#!/usr/bin/python3
"""Writes tests/data/builtins_reference.h: torch's (and Python's) results for calls of ferry's
builtins, for tests/integration/test_builtins.c, which makes each call through ferry_rpc_sync
and compares what comes back with what torch returned here.

Each case is (function name, positional args, keyword args). Arguments and results are written
as text in a small literal syntax the C test reads back into ferry values:
  None True False 3 2.5 inf nan 'text' b'bytes' [a, b] {'key': v}
  T(dtype, [sizes], [values...])    a tensor, values in row-major order
A dtype keyword is the name ferry takes ("float64"); it becomes torch.float64 for torch.
rand/randn cases keep only the dtype and shape (their values are not torch's stream). Error
cases record Python's own message for Python's builtins, and for torch's functions the part of
torch's message ferry must repeat, after checking that torch's message contains it.
Floats are written with repr(), the shortest text that reads back as the same double.

Run with: /usr/bin/python3 tests/data/make_builtins_data.py  (from the repository root)."""
import builtins
import math
import os
import sys

import torch
import torch.nn.functional

F32, F64, I64 = "float32", "float64", "int64"
DTYPES = {torch.float32: F32, torch.float64: F64, torch.int64: I64, torch.bool: "bool",
          torch.int32: "int32"}
CASES, ERRORS = [], []


def T(vals, shape, dtype):
    return torch.tensor(vals, dtype=torch.float64).to(getattr(torch, dtype)).reshape(shape)


def lit(v):
    """v in the literal syntax above."""
    if v is None or isinstance(v, bool):
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return "nan" if math.isnan(v) else repr(v)
    if isinstance(v, str):
        assert "'" not in v and "\\" not in v, v
        return "'" + v + "'"
    if isinstance(v, bytes):
        return "b'" + v.decode("ascii") + "'"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(lit(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join("%s: %s" % (lit(k), lit(x)) for k, x in v.items()) + "}"
    if isinstance(v, torch.Tensor):
        v = v.detach()
        flat = v.reshape(-1).tolist()
        vals = ", ".join(lit(x) if not isinstance(x, bool) else str(int(x)) for x in flat)
        return "T(%s, %s, [%s])" % (DTYPES[v.dtype], lit(list(v.shape)), vals)
    sys.exit("cannot write %r" % (v,))


def resolve(name):
    if "." not in name:
        return getattr(builtins, name)
    obj = torch
    for part in name.split(".")[1:]:
        obj = getattr(obj, part)
    return obj


def torch_kwargs(kwargs):
    return {k: getattr(torch, v) if k == "dtype" else v for k, v in kwargs.items()}


def case(name, args, kwargs=None, random=False):
    kwargs = kwargs or {}
    r = resolve(name)(*args, **torch_kwargs(kwargs))
    if type(r).__module__ == "torch.return_types":  # (values, indices)
        r = [r.values, r.indices]
    want = lit(r)
    if random:
        want = "T(%s, %s, [])" % (DTYPES[r.dtype], lit(list(r.shape)))
    CASES.append((name, lit(list(args)), lit(kwargs), want, random))


def error(name, args, kwargs=None, part=None):
    """A call torch or Python refuses; `part` (torch's functions) is what ferry must say too."""
    kwargs = kwargs or {}
    try:
        resolve(name)(*args, **torch_kwargs(kwargs))
    except (TypeError, ValueError, RuntimeError) as e:
        text = str(e)
    else:
        sys.exit("%s%r does not fail in torch" % (name, args))
    if part is not None:
        if part not in text:
            sys.exit("%s: torch says %r, not %r" % (name, text, part))
        text = part
    ERRORS.append((name, lit(list(args)), lit(kwargs), text))


def math_cases():
    a = T([1, -2, 3, 0.5, -0.25, 4], [2, 3], F32)
    b = T([10, 20, 30], [3], F32)
    i = T([1, -2, 3], [3], I64)
    d = T([0.5, 1.5, -2.5], [3], F64)
    case("torch.add", [a, b])
    case("torch.add", [a, 2])
    case("torch.add", [i, 2])
    case("torch.add", [i, 2.5])
    case("torch.add", [2, a])
    case("torch.add", [d, True])
    case("torch.add", [i, i], {"alpha": 3})
    case("torch.add", [a, b], {"alpha": -0.5})
    case("torch.add", [a, 1.5], {"alpha": 2})
    case("torch.add", [], {"input": i, "other": d})
    case("torch.sub", [a, b])
    case("torch.sub", [3, a])
    case("torch.sub", [a, b], {"alpha": 2})
    case("torch.sub", [i, 1])
    case("torch.mul", [T([1, 2], [2, 1], F32), d])
    case("torch.mul", [i, 2.5])
    case("torch.mul", [3, i])
    case("torch.div", [i, i])
    case("torch.div", [a, 4])
    case("torch.div", [2, b])
    case("torch.div", [d, 0.5])
    case("torch.div", [d, 2], {"rounding_mode": None})
    pos = T([0.5, 1, 2, 4, 9, 16], [2, 3], F32)
    case("torch.pow", [pos, 2])
    case("torch.pow", [i, 3])
    case("torch.pow", [i, 0])
    case("torch.pow", [T([1, 4, 9], [3], I64), 0.5])
    case("torch.pow", [d.abs(), -1.5])
    case("torch.pow", [pos], {"exponent": 0.5})
    for f in ["neg", "abs", "relu", "exp", "sigmoid", "tanh"]:
        case("torch." + f, [a])
    for f in ["log", "sqrt"]:
        case("torch." + f, [pos])
    for f in ["neg", "abs", "relu", "exp", "sqrt"]:
        case("torch." + f, [T([1, 4, -9], [3], I64) if f != "sqrt" else T([1, 4, 9], [3], I64)])
    case("torch.tanh", [d])
    case("torch.nn.functional.gelu", [a])
    case("torch.nn.functional.gelu", [d], {"approximate": "none"})
    m23 = T(range(6), [2, 3], F32)
    m32 = T([1, -1, 2, 0.5, 0, 3], [3, 2], F32)
    case("torch.matmul", [m23, m32])
    case("torch.matmul", [T([1, 2, 3], [3], F32), T([4, 5, 6], [3], F32)])
    case("torch.matmul", [m23, T([1, 0, -1], [3], F32)])
    case("torch.matmul", [T(range(12), [2, 2, 3], F64), T(range(6), [3, 2], F64)])
    case("torch.mm", [m23, T(range(12), [3, 4], F32)])
    case("torch.mm", [], {"input": m23, "mat2": m32})
    error("torch.pow", [i, -1], part="Integers to negative integer powers are not allowed.")
    error("torch.add", [i, i], {"alpha": 0.5},
          part="For integral input tensors, argument alpha must not be a floating point number.")
    error("torch.mm", [T([1, 2], [2], F32), m23], part="self must be a matrix")
    error("torch.matmul", [m23, T(range(8), [2, 4], F32)],
          part="mat1 and mat2 shapes cannot be multiplied (2x3 and 2x4)")
    error("torch.add", [m23, T(range(4), [4], F32)],
          part="The size of tensor a (3) must match the size of tensor b (4) at non-singleton "
               "dimension 1")


def tensor_cases():
    x = T([3, -1, 4, 1, -5, 9, 2, 6, -5, 3, 5, -8], [3, 4], F32)
    i = T([3, 1, 4, 1, 5, 9], [2, 3], I64)
    case("torch.sum", [x])
    case("torch.sum", [x, 1])
    case("torch.sum", [x], {"dim": [0, 1]})
    case("torch.sum", [x], {"dim": 0, "keepdim": True})
    case("torch.sum", [i, 0, True])
    case("torch.sum", [i])
    case("torch.sum", [i], {"dtype": F64})
    case("torch.mean", [x])
    case("torch.mean", [x], {"dim": 0, "keepdim": True})
    case("torch.mean", [x, [1]])
    case("torch.mean", [i], {"dtype": F64})
    case("torch.max", [x])
    case("torch.max", [x, 1])
    case("torch.max", [i], {"dim": 0, "keepdim": True})
    case("torch.min", [x])
    case("torch.min", [x], {"dim": 1})
    case("torch.min", [i, 1, True])
    case("torch.argmax", [x])
    case("torch.argmax", [x], {"dim": 0})
    case("torch.argmin", [i, 1], {"keepdim": True})
    case("torch.argmin", [x])
    case("torch.softmax", [x, 1])
    case("torch.softmax", [x], {"dim": 0, "dtype": F64})
    case("torch.log_softmax", [x, -1])
    y = T(range(8), [2, 4], F32)
    case("torch.cat", [[x, y]])
    case("torch.cat", [[x, T(range(6), [3, 2], F32)], 1])
    case("torch.cat", [[i, T([7, 8, 9], [1, 3], I64)]], {"dim": 0})
    case("torch.stack", [[i, i]])
    case("torch.stack", [[i, i]], {"dim": 2})
    case("torch.reshape", [x, [2, -1]])
    case("torch.reshape", [x], {"shape": [12]})
    z = T(range(24), [2, 3, 4], F64)
    case("torch.flatten", [z])
    case("torch.flatten", [z], {"start_dim": 1})
    case("torch.flatten", [z, 0, 1])
    case("torch.transpose", [x, 0, 1])
    case("torch.transpose", [z], {"dim0": -1, "dim1": 0})
    case("torch.t", [x])
    case("torch.t", [T([1, 2], [2], F32)])
    ones = T([1, 2], [1, 2, 1], F32)
    case("torch.squeeze", [ones])
    case("torch.squeeze", [ones, 0])
    case("torch.squeeze", [ones], {"dim": 1})
    case("torch.unsqueeze", [i, 0])
    case("torch.unsqueeze", [i], {"dim": -1})
    case("torch.narrow", [x, 1, 1, 2])
    case("torch.narrow", [x], {"dim": 0, "start": 2, "length": 1})
    case("torch.index_select", [x, 0, T([2, 0], [2], I64)])
    case("torch.index_select", [x], {"dim": 1, "index": T([3, 3, 1], [3], I64)})
    case("torch.clone", [x])
    error("torch.t", [z], part="t() expects a tensor with <= 2 dimensions, but self is 3D")
    error("torch.mean", [i], part="mean(): could not infer output dtype. Input dtype must be "
                                  "either a floating point or complex dtype. Got: Long")
    error("torch.cat", [[x, T(range(4), [2, 2], F32)]],
          part="Sizes of tensors must match except in dimension 0. Expected size 4 but got "
               "size 2 for tensor number 1 in the list.")


def make_cases():
    case("torch.ones", [2, 3])
    case("torch.ones", [[2, 3]])
    case("torch.ones", [], {"size": [2]})
    case("torch.ones", [2], {"dtype": F64})
    case("torch.ones", [[]])
    case("torch.zeros", [3], {"dtype": I64})
    case("torch.zeros", [[2, 0]])
    case("torch.full", [[2, 2], 7])
    case("torch.full", [[2], 2.5])
    case("torch.full", [[3], True])
    case("torch.full", [[2], 1], {"dtype": F64})
    case("torch.full", [], {"size": [1, 2], "fill_value": -3.5})
    case("torch.arange", [5])
    case("torch.arange", [1, 4])
    case("torch.arange", [0, 1, 0.25])
    case("torch.arange", [5], {"dtype": F64})
    case("torch.arange", [10, 0, -3])
    case("torch.eye", [3])
    case("torch.eye", [2, 3])
    case("torch.eye", [2], {"dtype": I64})
    case("torch.eye", [], {"n": 3, "m": 1})
    case("torch.rand", [2, 3], random=True)
    case("torch.rand", [[4]], {"dtype": F64}, random=True)
    case("torch.randn", [3], random=True)
    case("torch.randn", [], {"size": [2, 2], "dtype": F64}, random=True)
    case("torch.tensor", [[[1, 2], [3, 4]]])
    case("torch.tensor", [[1.5, 2]])
    case("torch.tensor", [[True, False]])
    case("torch.tensor", [3])
    case("torch.tensor", [2.5])
    case("torch.tensor", [[]])
    case("torch.tensor", [[1, 2]], {"dtype": F64})
    case("torch.tensor", [], {"data": [[1], [2]]})


def nn_cases():
    x = T([0.5, -1, 2, 1.5, 0, -0.5], [2, 3], F32)
    w = T([1, 0, -1, 0.5, 2, 0.25, -1, 1, 3, 0, 0.5, 1], [4, 3], F32)
    bias = T([0.1, -0.2, 0.3, 0], [4], F32)
    f = "torch.nn.functional."
    case(f + "linear", [x, w])
    case(f + "linear", [x, w, bias])
    case(f + "linear", [x], {"weight": w, "bias": None})
    idx = T([[0, 3], [2, 2]], [2, 2], I64)
    case(f + "embedding", [idx, w])
    case(f + "embedding", [T([1], [1], I64)], {"weight": w, "padding_idx": 0})
    y = T([1, -1, 0, 2, 0.5, 0.5], [2, 3], F32)
    case(f + "mse_loss", [x, y])
    case(f + "mse_loss", [x, y], {"reduction": "sum"})
    case(f + "mse_loss", [x, y, None, None, "none"])
    logp = torch.log_softmax(T([1, 2, 0.5, -1, 0, 3, 2, 2, 2], [3, 3], F32), 1)
    tgt = T([0, 2, -100], [3], I64)
    case(f + "nll_loss", [logp, tgt])
    case(f + "nll_loss", [logp, tgt], {"reduction": "sum"})
    case(f + "nll_loss", [logp, T([1, 1, 0], [3], I64)], {"reduction": "none"})
    logits = T([1, 2, 0.5, -1, 0, 3], [2, 3], F64)
    case(f + "cross_entropy", [logits, T([2, 0], [2], I64)])
    case(f + "cross_entropy", [logits, T([1, 1], [2], I64)], {"reduction": "sum",
                                                              "label_smoothing": 0.0})
    error(f + "mse_loss", [x, y], {"reduction": "avg"}, part="avg is not a valid value for reduction")


def python_cases():
    case("min", [3, 1, 2])
    case("min", [[4, 2.5]])
    case("min", [[]], {"default": 7})
    case("min", [True, 2])
    case("min", ["b", "a"])
    case("max", [1, 2.0])
    case("max", [2.0, 2])
    case("max", [["b", "a", "c"]])
    case("max", [[-1, -5]], {"default": 0})
    case("max", [[None]])
    case("sum", [[1, 2, 3]])
    case("sum", [[1, 2.5]])
    case("sum", [[0.1] * 10])
    case("sum", [[1, 2], 10])
    case("sum", [[]], {"start": 5})
    case("sum", [[True, True]])
    case("sum", [[1.5], True])
    case("sum", [[T([1, 2], [2], F32), T([3, 4], [2], F32)]])
    case("sum", [[T([1, 2], [2], I64), 2]])
    case("sum", [""])
    case("sum", [[[1], [2.5, "a"]], []])
    case("sum", [[]], {"start": None})
    case("sum", [[[]]], {"start": [0]})
    case("abs", [-3])
    case("abs", [-2.5])
    case("abs", [True])
    case("abs", [T([-1, 2, -3], [3], I64)])
    case("len", ["h\u00e9llo"])
    case("len", [[1, 2, 3]])
    case("len", [{"a": 1, "b": 2}])
    case("len", [T(range(6), [3, 2], F32)])
    case("len", [b"ab"])
    for args, kwargs in [([], {}), ([5], {}), ([[]], {}), ([[1, "a"]], {}), ([None, 1], {}),
                         ([1, 2], {"default": 3})]:
        error("min", args, kwargs)
    error("max", [[1, "a"]])
    error("max", [])
    for args, kwargs in [(["abc"], {}), ([["a"]], {}), ([5], {}), ([], {}), ([[1], 2, 3], {}),
                         ([[1, None]], {}), ([[1]], {"start": "a"}), ([[1], 2], {"start": 3}),
                         ([[[1], 2], []], {}), ([[1]], {"start": None})]:
        error("sum", args, kwargs)
    for args in [["a"], [], [1, 2], [None]]:
        error("abs", args)
    for args in [[5], [2.5], [None], [torch.tensor(1)], [[1], 2], []]:
        error("len", args)


def main():
    math_cases()
    tensor_cases()
    make_cases()
    nn_cases()
    python_cases()
    out = ["/* Generated by tests/data/make_builtins_data.py with torch %s; do not edit. "
           "Regenerate with\n   /usr/bin/python3 tests/data/make_builtins_data.py (from the "
           "repository root).\n   Calls of ferry's builtins and what torch or Python returned "
           "for each, in the\n   literal syntax that script describes. */\n" % torch.__version__,
           "#ifndef FERRY_TEST_BUILTINS_REFERENCE_H\n#define FERRY_TEST_BUILTINS_REFERENCE_H\n",
           "#include <stdbool.h>\n",
           "typedef struct {\n    const char *fn, *args, *kwargs, *want;\n"
           "    bool is_random; /* want holds the dtype and shape only */\n} builtin_ref;\n",
           "typedef struct {\n    const char *fn, *args, *kwargs, *message;\n} builtin_ref_error;\n",
           "static const builtin_ref builtin_refs[] = {"]

    def c_str(s):
        return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'

    for fn, args, kwargs, want, random in CASES:
        out.append("    {%s, %s, %s,\n     %s, %s}," % (c_str(fn), c_str(args), c_str(kwargs),
                                                       c_str(want), "true" if random else "false"))
    out.append("};\n")
    out.append("static const builtin_ref_error builtin_ref_errors[] = {")
    for fn, args, kwargs, text in ERRORS:
        out.append("    {%s, %s, %s,\n     %s}," % (c_str(fn), c_str(args), c_str(kwargs),
                                                   c_str(text)))
    out.append("};\n\n#endif\n")
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "builtins_reference.h")
    with open(path, "w") as f:
        f.write("\n".join(out))
    print("wrote %s: %d cases, %d errors" % (path, len(CASES), len(ERRORS)))


main()
