#!/usr/bin/python3
"""Writes tests/data/ops_reference.h: torch's results for the op tests in tests/unit/test_ops_*.c
(elementwise, matmul, nn, reduce), so those tests compare ferry against numbers torch computed
instead of numbers typed in by hand. Each case below builds its inputs exactly as the matching C
test does; when a C test changes its inputs, change them here too and regenerate.

Every result is also checked here against the dtype and shape the C test asserts, so a
disagreement with torch stops the script instead of producing a header the tests would misread.
Values are printed with repr(), the shortest text that reads back as the same double, so float32
results keep every bit.

Run with: /usr/bin/python3 tests/data/make_ops_data.py  (from the repository root)."""
import math
import os
import sys

import torch

F32, F64, I64 = torch.float32, torch.float64, torch.int64
OUT = []


def c_double(v):
    v = float(v)
    if math.isnan(v):
        return "NAN"
    if math.isinf(v):
        return "INFINITY" if v > 0 else "-INFINITY"
    return repr(v)


def ref(name, t, dtype, shape, what):
    """Records torch result `t` as C constant `name`, after checking its dtype and shape."""
    t = t.detach()
    if t.dtype != dtype or list(t.shape) != list(shape):
        sys.exit("%s: torch gives %s %s, the test expects %s %s"
                 % (name, t.dtype, list(t.shape), dtype, list(shape)))
    flat = t.reshape(-1).double().tolist()
    shape_txt = "x".join(str(s) for s in shape) if shape else "0-dim"
    comment = "/* %s (%s, %s) */\n" % (what, str(dtype).replace("torch.", ""), shape_txt)
    if not shape:
        OUT.append(comment + "static const double %s = %s;\n" % (name, c_double(flat[0])))
    else:
        body = ", ".join(c_double(v) for v in flat)
        OUT.append(comment + "static const double %s[%d] = {%s};\n" % (name, len(flat), body))


def section(title):
    OUT.append("\n/* ---- %s ---- */\n" % title)


def t(vals, shape, dtype):
    return torch.tensor(vals, dtype=torch.float64).to(dtype).reshape(shape)


def elementwise():
    section("test_ops_elementwise.c")
    a = t([1, 2], [2, 1], F32)
    b = t([10, 20, 30], [3], F32)
    ref("ref_ew_bcast_add", a + b, F32, [2, 3], "[2,1] + [3]")
    ref("ref_ew_bcast_sub", b - a, F32, [2, 3], "[3] - [2,1]")
    ref("ref_ew_bcast_mul", a * b, F32, [2, 3], "[2,1] * [3]")
    ref("ref_ew_bcast_div", b / a, F32, [2, 3], "[3] / [2,1]")
    ref("ref_ew_bcast_add_alpha", torch.add(a, b, alpha=-0.5), F32, [2, 3],
        "torch.add([2,1], [3], alpha=-0.5)")

    at = t(range(6), [2, 3], F64).transpose(0, 1)
    b2 = t([10, 20, 30, 40, 50, 60], [3, 2], F64)
    ref("ref_ew_strided_add", at + b2, F64, [3, 2], "transposed [2,3] + [3,2]")

    i = t([1, 2], [2], I64)
    f = t([0.5, 0.25], [2], F32)
    d0 = torch.tensor(1.5, dtype=F64)
    i0 = torch.tensor(3, dtype=I64)
    ref("ref_ew_promote_i64_add_f32", i + f, F32, [2], "int64 + float32")
    ref("ref_ew_promote_i64_add_f64_0dim", i + d0, F64, [2], "int64 + 0-dim float64")
    ref("ref_ew_promote_f32_add_f64_0dim", f + d0, F32, [2], "float32 + 0-dim float64")
    ref("ref_ew_promote_i64_div_i64", i / i, F32, [2], "int64 / int64")
    ref("ref_ew_promote_i64_add_scalar", i + 2.5, F32, [2], "int64 + 2.5")
    ref("ref_ew_promote_i64_mul_i64_0dim", i * i0, I64, [2], "int64 * 0-dim int64")
    ref("ref_ew_promote_i64_pow", i ** 2.0, F32, [2], "int64 ** 2.0")
    ref("ref_ew_promote_i64_neg", -i, I64, [2], "-int64")
    ref("ref_ew_promote_i64_exp", torch.exp(i), F32, [2], "exp(int64)")

    x = t([1, -2, 4], [3], F64)
    ref("ref_ew_scalar_add", x + 1.5, F64, [3], "x + 1.5")
    ref("ref_ew_scalar_sub", x - 1.0, F64, [3], "x - 1.0")
    ref("ref_ew_scalar_mul", x * -2.0, F64, [3], "x * -2.0")
    ref("ref_ew_scalar_div", x / 4.0, F64, [3], "x / 4.0")

    u = t([-1.5, 0.0, 2.0, 0.5, -0.25, 3.0], [2, 3], F32)
    unary = [("exp", torch.exp), ("log", torch.log), ("sqrt", torch.sqrt), ("abs", torch.abs),
             ("relu", torch.relu), ("sigmoid", torch.sigmoid), ("tanh", torch.tanh),
             ("gelu", torch.nn.functional.gelu), ("neg", torch.neg)]
    for name, fn in unary:
        ref("ref_ew_unary_" + name, fn(u), F32, [2, 3], name + "(x)")
    ref("ref_ew_unary_pow3", u ** 3.0, F32, [2, 3], "x ** 3.0")

    inplace_steps()

    p = t([1, 2], [2], F32).requires_grad_()
    with torch.no_grad():
        p.add_(1.0)
    ref("ref_ew_leaf_add_scalar_no_grad", p, F32, [2], "leaf.add_(1.0) under no_grad")


def inplace_steps():
    p = t([1, 2, 3, 4], [2, 2], F32)
    g = t([0.5, 0.5, 1, 1], [2, 2], F32)
    row = t([10, 100], [2], F32)
    p.add_(g, alpha=-2.0)
    ref("ref_ew_inplace_add_scaled", p, F32, [2, 2], "p.add_(g, alpha=-2)")
    p.mul_(row)
    ref("ref_ew_inplace_mul_row", p, F32, [2, 2], "then p.mul_(row)")
    p.add_(p)
    ref("ref_ew_inplace_add_self", p, F32, [2, 2], "then p.add_(p)")
    p.mul_(0.5)
    p.add_(1.0)
    ref("ref_ew_inplace_mul_add_scalar", p, F32, [2, 2], "then p.mul_(0.5); p.add_(1.0)")
    p.addcmul_(g, g, value=4.0)
    ref("ref_ew_inplace_addcmul", p, F32, [2, 2], "then p.addcmul_(g, g, value=4)")
    p.addcdiv_(g, g, value=-1.0)
    ref("ref_ew_inplace_addcdiv", p, F32, [2, 2], "then p.addcdiv_(g, g, value=-1)")
    p.fill_(7.0)
    ref("ref_ew_inplace_fill", p, F32, [2, 2], "then p.fill_(7)")
    p.t().add_(g)
    ref("ref_ew_inplace_add_transposed", p, F32, [2, 2], "then p.t().add_(g)")
    p.zero_()
    ref("ref_ew_inplace_zero", p, F32, [2, 2], "then p.zero_()")


def matmul():
    section("test_ops_matmul.c")
    a = t(range(6), [2, 3], F32)
    b = t([k * 0.5 for k in range(12)], [3, 4], F32)
    v3 = t([1, 2, 3], [3], F32)
    v2 = t([1, -1], [2], F32)
    ref("ref_mm_mat_mat", a @ b, F32, [2, 4], "[2,3] @ [3,4]")
    ref("ref_mm_mat_vec", a @ v3, F32, [2], "[2,3] @ [3]")
    ref("ref_mm_vec_mat", v2 @ a, F32, [3], "[2] @ [2,3]")
    ref("ref_mm_dot", v3 @ v3, F32, [], "[3] @ [3]")

    ab = torch.arange(0, 24, 1, dtype=F64).reshape(2, 3, 4) * 0.1
    bb = torch.arange(0, 20, 1, dtype=F64).reshape(4, 5)
    ref("ref_mm_batched", ab @ bb, F64, [2, 3, 5], "(arange(24).reshape(2,3,4) * 0.1) @ "
        "arange(20).reshape(4,5)")
    ba = torch.arange(0, 12, 1, dtype=F64).reshape(2, 1, 2, 3) * 0.5
    bc = torch.arange(0, 18, 1, dtype=F64).reshape(3, 3, 2) - 4
    ref("ref_mm_batch_broadcast", ba @ bc, F64, [2, 3, 2, 2],
        "(arange(12).reshape(2,1,2,3) * 0.5) @ (arange(18).reshape(3,3,2) - 4)")

    x = t(range(6), [2, 3], F32)
    w = t([1, 0, -1, 2, 1, 0], [2, 3], F32)
    bias = t([0.5, -0.5], [2], F32)
    lin = torch.nn.functional.linear
    ref("ref_mm_linear_bias", lin(x, w, bias), F32, [2, 2], "linear(x, w, bias)")
    ref("ref_mm_linear_no_bias", lin(x, w), F32, [2, 2], "linear(x, w)")
    x3 = torch.arange(0, 12, 1, dtype=F32).reshape(2, 2, 3) - 5
    ref("ref_mm_linear_3d", lin(x3, w, bias), F32, [2, 2, 2],
        "linear(arange(12).reshape(2,2,3) - 5, w, bias)")
    i1 = t([1, 2, 3], [1, 3], I64)
    i2 = t([1, 2, 3], [3, 1], I64)
    ref("ref_mm_int64", i1 @ i2, I64, [1, 1], "int64 [1,3] @ [3,1]")


def nn():
    section("test_ops_nn.c")
    fn = torch.nn.functional
    logits = t([1.0, 2.0, 0.5, 0.1, -1.0, 3.0], [2, 3], F32)
    x = t([-1.5, 0.0, 2.0, 0.5, -0.25, 3.0], [2, 3], F32)
    tg = t([1, 2], [2], I64)
    ign = t([1, -100], [2], I64)
    ref("ref_nn_ce_mean", fn.cross_entropy(logits, tg, reduction="mean"), F32, [],
        "cross_entropy(logits, [1, 2])")
    ref("ref_nn_ce_sum", fn.cross_entropy(logits, tg, reduction="sum"), F32, [],
        "cross_entropy(logits, [1, 2], sum)")
    ref("ref_nn_ce_none", fn.cross_entropy(logits, tg, reduction="none"), F32, [2],
        "cross_entropy(logits, [1, 2], none)")
    ref("ref_nn_nll_mean", fn.nll_loss(logits, tg, reduction="mean"), F32, [],
        "nll_loss(logits, [1, 2])")
    ref("ref_nn_nll_none", fn.nll_loss(logits, tg, reduction="none"), F32, [2],
        "nll_loss(logits, [1, 2], none)")
    ref("ref_nn_ce_ignore_mean", fn.cross_entropy(logits, ign, reduction="mean"), F32, [],
        "cross_entropy(logits, [1, -100])")
    ref("ref_nn_mse_mean", fn.mse_loss(logits, x, reduction="mean"), F32, [], "mse_loss(logits, x)")
    ref("ref_nn_mse_sum", fn.mse_loss(logits, x, reduction="sum"), F32, [],
        "mse_loss(logits, x, sum)")
    ref("ref_nn_mse_none", fn.mse_loss(logits, x, reduction="none"), F32, [2, 3],
        "mse_loss(logits, x, none)")
    ref("ref_nn_nll_sum", fn.nll_loss(logits, tg, reduction="sum"), F32, [],
        "nll_loss(logits, [1, 2], sum)")
    ref("ref_nn_nll_ignore_mean", fn.nll_loss(logits, ign, reduction="mean"), F32, [],
        "nll_loss(logits, [1, -100])")
    ref("ref_nn_nll_ignore_sum", fn.nll_loss(logits, ign, reduction="sum"), F32, [],
        "nll_loss(logits, [1, -100], sum)")
    ref("ref_nn_ce_1d", fn.cross_entropy(logits[1], torch.tensor(2), reduction="mean"), F32, [],
        "cross_entropy(logits[1], 0-dim 2)")

    w = t([0, 1, 10, 11, 20, 21], [3, 2], F32)
    idx = t([2, 0, 1, 2], [2, 2], I64)
    ref("ref_nn_embedding", torch.embedding(w, idx), F32, [2, 2, 2], "embedding(w, [[2,0],[1,2]])")

    a = t([1, 2, 3, 4], [2, 2], F32)
    b = t([5, 6], [1, 2], I64)
    c0 = torch.cat([a, b], 0)
    ref("ref_shape_cat0", c0, F32, [3, 2], "cat([a, int64 b], 0)")
    ref("ref_shape_cat_last", torch.cat([a, a], -1), F32, [2, 4], "cat([a, a], -1)")
    ref("ref_shape_stack1", torch.stack([a, a], 1), F32, [2, 2, 2], "stack([a, a], 1)")
    rs = c0.reshape(2, -1)
    ref("ref_shape_reshape", rs, F32, [2, 3], "cat0.reshape(2, -1)")
    ref("ref_shape_transpose", rs.transpose(0, 1), F32, [3, 2], "reshaped.transpose(0, 1)")
    ref("ref_shape_narrow", rs.narrow(1, 1, 2), F32, [2, 2], "reshaped.narrow(1, 1, 2)")
    ref("ref_shape_index_select", torch.index_select(rs, 1, t([2, 0, 2], [3], I64)), F32, [2, 3],
        "index_select(reshaped, 1, [2, 0, 2])")

    s = t([1, 2, 3, 4, 5, 6], [2, 3], F64)
    ref("ref_shape_unsqueeze_last", s.unsqueeze(-1), F64, [2, 3, 1], "unsqueeze(-1)")
    ref("ref_shape_unsqueeze1", s.unsqueeze(1), F64, [2, 1, 3], "unsqueeze(1)")
    ref("ref_shape_squeeze1", s.unsqueeze(1).squeeze(1), F64, [2, 3], "unsqueeze(1).squeeze(1)")
    ref("ref_shape_squeeze_noop", s.squeeze(0), F64, [2, 3], "squeeze(0) of size 2")


def reduce():
    section("test_ops_reduce.c")
    x = t([-1.5, 0.0, 2.0, 0.5, -0.25, 3.0], [2, 3], F32)
    ref("ref_red_sum", x.sum(), F32, [], "sum(x)")
    ref("ref_red_mean", x.mean(), F32, [], "mean(x)")
    ref("ref_red_sum_dim0", x.sum(dim=[0]), F32, [3], "sum(x, [0])")
    ref("ref_red_mean_dim_last_keep", x.mean(dim=[-1], keepdim=True), F32, [2, 1],
        "mean(x, [-1], keepdim)")
    ref("ref_red_sum_dim1_keep", x.sum(dim=[1], keepdim=True), F32, [2, 1], "sum(x, [1], keepdim)")
    ref("ref_red_mean_dim0", x.mean(dim=[0]), F32, [3], "mean(x, [0])")
    ref("ref_red_sum_nodims_keep", x.sum(dim=[], keepdim=True), F32, [1, 1],
        "sum(x, [], keepdim): [] means all dims")
    y3 = torch.arange(0, 24, 1, dtype=F64).reshape(2, 3, 4)
    ref("ref_red_sum_dims02", y3.sum(dim=[0, 2]), F64, [3],
        "sum(arange(24).reshape(2,3,4), [0, 2])")
    ref("ref_red_mean_dims12_keep", y3.mean(dim=[1, 2], keepdim=True), F64, [2, 1, 1],
        "mean(arange(24).reshape(2,3,4), [1, 2], keepdim)")
    ref("ref_red_sum_int64", torch.arange(0, 5, 1, dtype=I64).sum(), I64, [], "sum(arange(5))")

    v, i = torch.max(x, 1)
    ref("ref_red_max_dim1", v, F32, [2], "max(x, 1).values")
    ref("ref_red_max_dim1_idx", i, I64, [2], "max(x, 1).indices")
    v, i = torch.max(x, 0, keepdim=True)
    ref("ref_red_max_dim0_keep", v, F32, [1, 3], "max(x, 0, keepdim).values")
    ref("ref_red_max_dim0_keep_idx", i, I64, [1, 3], "max(x, 0, keepdim).indices")
    ref("ref_red_max", x.max(), F32, [], "max(x)")

    ref("ref_red_softmax1", torch.softmax(x, 1), F32, [2, 3], "softmax(x, 1)")
    ref("ref_red_softmax0", torch.softmax(x, 0), F32, [2, 3], "softmax(x, 0)")
    ref("ref_red_log_softmax_last", torch.log_softmax(x, -1), F32, [2, 3], "log_softmax(x, -1)")
    ref("ref_red_log_softmax0", torch.log_softmax(x, 0), F32, [2, 3], "log_softmax(x, 0)")


def main():
    elementwise()
    matmul()
    nn()
    reduce()
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ops_reference.h")
    with open(path, "w") as f:
        f.write("/* Generated by tests/data/make_ops_data.py with torch %s; do not edit. Regenerate"
                " with\n   /usr/bin/python3 tests/data/make_ops_data.py (from the repository root)."
                " torch's results\n   for the inputs the tests in tests/unit/test_ops_*.c build;"
                " each comment names the\n   op, the dtype and the shape torch returned. */\n"
                % torch.__version__.split("a")[0])
        f.write("#ifndef FERRY_TEST_OPS_REFERENCE_H\n#define FERRY_TEST_OPS_REFERENCE_H\n\n")
        f.write("#include <math.h>\n")
        f.writelines(OUT)
        f.write("\n#endif\n")


if __name__ == "__main__":
    main()
