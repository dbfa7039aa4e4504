#!/usr/bin/python3
"""Writes the optimizer reference data for tests/unit/test_optim_*.c:

  tests/data/optim/trajectories.safetensors  the starting tensors ("init.W", "init.b", "x") and,
      per case, the parameters after each of STEPS steps of torch.optim (a [STEPS, 15] tensor:
      W's 12 values then b's 3, row-major), in the case's dtype;
  tests/data/optim/optim_cases.h  the same cases as a C table (kind, options, dtype, groups).

Each step computes loss = sum(tanh(W @ x + b) ** 2) (without b for the "nograd_b" cases, whose b
never gets a gradient), runs backward and optimizer.step() with foreach=False (torch's
single-tensor path, the one ferry mirrors). The C tests compute the same loss with ferry's
autograd and compare every step.

Run with: /usr/bin/python3 tests/data/optim/make_trajectories.py  (from the repository root)."""
import json
import os
import sys

import torch

sys.dont_write_bytecode = True  # keep tests/data free of __pycache__
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
import make_safetensors_data as st  # noqa: E402

STEPS = 12

KINDS = {
    "SGD": ("FERRY_SGD", torch.optim.SGD),
    "Adam": ("FERRY_ADAM", torch.optim.Adam),
    "AdamW": ("FERRY_ADAMW", torch.optim.AdamW),
    "Adagrad": ("FERRY_ADAGRAD", torch.optim.Adagrad),
    "RMSprop": ("FERRY_RMSPROP", torch.optim.RMSprop),
    "Adadelta": ("FERRY_ADADELTA", torch.optim.Adadelta),
    "Adamax": ("FERRY_ADAMAX", torch.optim.Adamax),
    "Rprop": ("FERRY_RPROP", torch.optim.Rprop),
}

# (name, kind, kwargs, options): options is "f32", "nograd_b" or ("b_lr", value) for a second
# parameter group holding b with its own lr.
CASES = [
    ("sgd_plain", "SGD", dict(lr=0.1), ()),
    ("sgd_momentum", "SGD", dict(lr=0.1, momentum=0.9), ()),
    ("sgd_momentum_dampening", "SGD", dict(lr=0.1, momentum=0.9, dampening=0.5), ()),
    ("sgd_nesterov", "SGD", dict(lr=0.1, momentum=0.9, nesterov=True), ()),
    ("sgd_weight_decay", "SGD", dict(lr=0.1, weight_decay=0.1), ()),
    ("sgd_maximize", "SGD", dict(lr=0.1, maximize=True), ()),
    ("sgd_all", "SGD", dict(lr=0.05, momentum=0.8, weight_decay=0.05, nesterov=True,
                            maximize=True), ()),
    ("sgd_dist", "SGD", dict(lr=1e-3, momentum=1.0, weight_decay=1.0, nesterov=True), ()),
    ("adam_default", "Adam", dict(), ()),
    ("adam_lr", "Adam", dict(lr=0.05), ()),
    ("adam_amsgrad", "Adam", dict(lr=0.05, amsgrad=True), ()),
    ("adam_weight_decay", "Adam", dict(lr=0.05, weight_decay=0.1), ()),
    ("adam_maximize", "Adam", dict(lr=0.05, maximize=True), ()),
    ("adam_betas_eps", "Adam", dict(lr=0.05, betas=(0.8, 0.99), eps=1e-3), ()),
    ("adam_all", "Adam", dict(lr=0.02, amsgrad=True, weight_decay=0.2, maximize=True), ()),
    ("adamw_default", "AdamW", dict(), ()),
    ("adamw_lr", "AdamW", dict(lr=0.05), ()),
    ("adamw_amsgrad", "AdamW", dict(lr=0.05, amsgrad=True), ()),
    ("adamw_weight_decay", "AdamW", dict(lr=0.05, weight_decay=0.5), ()),
    ("adamw_maximize", "AdamW", dict(lr=0.05, maximize=True), ()),
    ("adagrad_default", "Adagrad", dict(), ()),
    ("adagrad_lr_decay", "Adagrad", dict(lr=0.1, lr_decay=0.05), ()),
    ("adagrad_initial_accumulator", "Adagrad", dict(lr=0.1, initial_accumulator_value=0.5), ()),
    ("adagrad_weight_decay", "Adagrad", dict(lr=0.1, weight_decay=0.1), ()),
    ("adagrad_eps", "Adagrad", dict(lr=0.1, eps=1e-2), ()),
    ("adagrad_maximize", "Adagrad", dict(lr=0.1, maximize=True), ()),
    ("rmsprop_default", "RMSprop", dict(), ()),
    ("rmsprop_alpha", "RMSprop", dict(alpha=0.9, eps=1e-4), ()),
    ("rmsprop_centered", "RMSprop", dict(centered=True), ()),
    ("rmsprop_momentum", "RMSprop", dict(momentum=0.9), ()),
    ("rmsprop_centered_momentum", "RMSprop", dict(centered=True, momentum=0.5), ()),
    ("rmsprop_weight_decay", "RMSprop", dict(weight_decay=0.1), ()),
    ("rmsprop_maximize", "RMSprop", dict(maximize=True), ()),
    ("adadelta_default", "Adadelta", dict(), ()),
    ("adadelta_rho", "Adadelta", dict(rho=0.5), ()),
    ("adadelta_eps_lr", "Adadelta", dict(lr=0.5, eps=1e-3), ()),
    ("adadelta_weight_decay", "Adadelta", dict(weight_decay=0.1), ()),
    ("adadelta_maximize", "Adadelta", dict(maximize=True), ()),
    ("adamax_default", "Adamax", dict(), ()),
    ("adamax_lr", "Adamax", dict(lr=0.05), ()),
    ("adamax_betas_eps", "Adamax", dict(lr=0.05, betas=(0.7, 0.9), eps=1e-3), ()),
    ("adamax_weight_decay", "Adamax", dict(lr=0.05, weight_decay=0.1), ()),
    ("adamax_maximize", "Adamax", dict(lr=0.05, maximize=True), ()),
    ("rprop_default", "Rprop", dict(), ()),
    ("rprop_lr", "Rprop", dict(lr=0.05), ()),
    ("rprop_etas", "Rprop", dict(lr=0.05, etas=(0.3, 1.5)), ()),
    ("rprop_step_sizes", "Rprop", dict(lr=0.05, step_sizes=(1e-2, 0.08)), ()),
    ("rprop_maximize", "Rprop", dict(maximize=True), ()),
    ("sgd_groups", "SGD", dict(lr=0.1, momentum=0.9), (("b_lr", 0.01),)),
    ("adam_groups", "Adam", dict(lr=0.05), (("b_lr", 0.005),)),
    ("rmsprop_groups", "RMSprop", dict(lr=0.01, centered=True), (("b_lr", 0.05),)),
    ("sgd_momentum_nograd_b", "SGD", dict(lr=0.1, momentum=0.9), ("nograd_b",)),
    ("adam_nograd_b", "Adam", dict(lr=0.05), ("nograd_b",)),
    ("adagrad_nograd_b", "Adagrad", dict(lr=0.1), ("nograd_b",)),
    ("rprop_nograd_b", "Rprop", dict(lr=0.05), ("nograd_b",)),
    ("sgd_nesterov_f32", "SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=0.1), ("f32",)),
    ("adam_amsgrad_f32", "Adam", dict(lr=0.05, amsgrad=True, weight_decay=0.1), ("f32",)),
    ("adamw_f32", "AdamW", dict(lr=0.05), ("f32",)),
    ("adagrad_f32", "Adagrad", dict(lr=0.1, lr_decay=0.05), ("f32",)),
    ("rmsprop_centered_momentum_f32", "RMSprop", dict(centered=True, momentum=0.5), ("f32",)),
    ("adadelta_f32", "Adadelta", dict(weight_decay=0.1), ("f32",)),
    ("adamax_f32", "Adamax", dict(lr=0.05), ("f32",)),
    ("rprop_f32", "Rprop", dict(lr=0.05), ("f32",)),
]


def start_tensors():
    """W [3, 4], b [3] and x [4], from a formula with exactly representable values."""
    k = torch.arange(12, dtype=torch.float64)
    w = (((7 * k + 3) % 17) - 8) / 16
    return {
        "init.W": w.reshape(3, 4),
        "init.b": torch.tensor([0.25, -0.375, 0.125], dtype=torch.float64),
        "x": torch.tensor([1.0, -2.0, 0.5, 1.5], dtype=torch.float64),
    }


def loss_of(w, b, x, uses_b):
    y = w @ x
    if uses_b:
        y = y + b
    return torch.tanh(y).pow(2).sum()


def options_of(extra):
    out = {"f32": False, "nograd_b": False, "b_lr": None}
    for item in extra:
        if isinstance(item, tuple):
            out[item[0]] = item[1]
        else:
            out[item] = True
    return out


def make_optimizer(kind, kwargs, w, b, b_lr):
    cls = KINDS[kind][1]
    if b_lr is None:
        return cls([w, b], foreach=False, **kwargs)
    return cls([{"params": [w]}, {"params": [b], "lr": b_lr}], foreach=False, **kwargs)


def run_steps(opt, w, b, x, uses_b, steps):
    """Runs `steps` steps; returns a [steps, 15] tensor of the parameters after each."""
    rows = []
    for _ in range(steps):
        opt.zero_grad()
        loss_of(w, b, x, uses_b).backward()
        opt.step()
        rows.append(torch.cat([w.detach().reshape(-1), b.detach().reshape(-1)]))
    return torch.stack(rows)


def trajectory(kind, kwargs, extra):
    o = options_of(extra)
    dtype = torch.float32 if o["f32"] else torch.float64
    t = start_tensors()
    w = t["init.W"].to(dtype).clone().requires_grad_(True)
    b = t["init.b"].to(dtype).clone().requires_grad_(True)
    x = t["x"].to(dtype)
    opt = make_optimizer(kind, kwargs, w, b, o["b_lr"])
    return run_steps(opt, w, b, x, not o["nograd_b"], STEPS)


def c_double(v):
    return float(v).hex()


def c_case(name, kind, kwargs, extra):
    o = options_of(extra)
    sets = []
    for key, v in kwargs.items():
        pair = list(v) if isinstance(v, tuple) else [float(v), 0.0]
        sets.append('{"%s", {%s, %s}}' % (key, c_double(pair[0]), c_double(pair[1])))
    return '    {"%s", %s, %d, %d, %s, %d, {%s}},\n' % (
        name, KINDS[kind][0], int(o["f32"]), int(not o["nograd_b"]),
        c_double(o["b_lr"] if o["b_lr"] is not None else -1.0), len(sets), ", ".join(sets))


def main():
    torch.set_num_threads(1)
    tensors = dict(start_tensors())
    for name, kind, kwargs, extra in CASES:
        tensors["case." + name] = trajectory(kind, kwargs, extra)
    meta = {"cases": json.dumps([c[0] for c in CASES]), "steps": str(STEPS),
            "torch": torch.__version__}
    with open(os.path.join(HERE, "trajectories.safetensors"), "wb") as f:
        f.write(st.serialize(tensors, meta))
    with open(os.path.join(HERE, "optim_cases.h"), "w") as f:
        f.write("/* Written by tests/data/optim/make_trajectories.py from the same table as\n"
                "   trajectories.safetensors; do not edit. */\n"
                "#define OPTIM_STEPS %d\n"
                "static const optim_case optim_cases[] = {\n" % STEPS)
        for case in CASES:
            f.write(c_case(*case))
        f.write("};\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
