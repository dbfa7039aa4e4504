#!/usr/bin/python3
"""examples/pipeline in PyTorch: the same two-stage MLP, process layout, micro-batching and
training, with torch.distributed.rpc (TensorPipe) on 127.0.0.1.

Stage1 (Linear 32->64, ReLU, Linear 64->64, ReLU) is built on worker1 and Stage2 (Linear 64->32,
ReLU, Linear 32->10) on worker2 with rpc.remote; the master splits each batch of 64 rows into 4
micro-batches of 16, sends each through stage1.remote().forward(...) and
stage2.rpc_async().forward(...) without waiting, concatenates the outputs, takes the
cross-entropy loss, runs dist_autograd.backward and steps a DistributedOptimizer (SGD, lr 0.5)
over both stages' parameter RRefs. Everything is float64.

Usage: /usr/bin/python3 examples/pipeline/reference.py [--weights FILE] [--steps N] [--bench N]
  --weights FILE  the initial weights and every step's data from a file written by
                  `build/examples/pipeline --weights-out FILE` (then the losses match ferry's);
                  without it, torch's own seeded initialization and data of the same kind
  --steps N       train N steps (default 30)
  --bench N       3 untimed warm-up steps, then N timed ones; the last line is
                  "step_ms <milliseconds per step>"
"""
import argparse
import os
import sys
import threading
import time

import torch
import torch.distributed.autograd as dist_autograd
import torch.distributed.rpc as rpc
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.optim import DistributedOptimizer
from torch.distributed.rpc import RRef

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from reference_util import free_port, load_safetensors  # noqa: E402

N_IN, N_HIDDEN, N_MID, N_CLASSES = 32, 64, 32, 10
BATCH, N_MICRO = 64, 4
STEPS, WARMUP = 30, 3
LR = 0.5
STAGE1_SEED, STAGE2_SEED, DATA_SEED = 11, 12, 1
WORLD = 3



class Stage(nn.Module):
    """Linear, ReLU, Linear (and a last ReLU when relu_last), float64. `state` holds the
    Sequential's state_dict ("0.weight", ...) or is None for torch's initialization from
    `seed`."""

    def __init__(self, sizes, relu_last, seed, state):
        super().__init__()
        torch.manual_seed(seed)
        n_in, n_hidden, n_out = sizes
        layers = [nn.Linear(n_in, n_hidden, dtype=torch.float64), nn.ReLU(),
                  nn.Linear(n_hidden, n_out, dtype=torch.float64)]
        if relu_last:
            layers.append(nn.ReLU())
        self.seq = nn.Sequential(*layers)
        if state is not None:
            self.seq.load_state_dict(state)
        # TensorPipe may run two calls on one module at once; ferry serializes them per object.
        self._lock = threading.Lock()

    def forward(self, x_rref):
        x = x_rref.to_here()
        with self._lock:
            return self.seq(x)

    def parameter_rrefs(self):
        return [RRef(p) for p in self.parameters()]

    def grad_norm(self, ctx):
        grads = dist_autograd.get_gradients(ctx)
        missing = [i for i, p in enumerate(self.parameters()) if p not in grads]
        if missing:
            raise RuntimeError("parameters %s got no gradient" % missing)
        return float(torch.sqrt(sum((grads[p] ** 2).sum() for p in self.parameters())))


class Stage1(Stage):
    def __init__(self, seed, state=None):
        super().__init__((N_IN, N_HIDDEN, N_HIDDEN), True, seed, state)


class Stage2(Stage):
    def __init__(self, seed, state=None):
        super().__init__((N_HIDDEN, N_MID, N_CLASSES), False, seed, state)


def pipeline_forward(stage1, stage2, x):
    outs = []
    for xm in x.split(BATCH // N_MICRO):
        h_rref = stage1.remote().forward(RRef(xm))
        outs.append(stage2.rpc_async().forward(h_rref))
    return torch.cat(torch.futures.wait_all(outs))


def make_data(n):
    """x ~ N(0, 1), y = argmax of a fixed random linear map of x: torch's numbers, not ferry's."""
    torch.manual_seed(DATA_SEED)
    teacher = torch.randn(N_CLASSES, N_IN, dtype=torch.float64)
    xs = [torch.randn(BATCH, N_IN, dtype=torch.float64) for _ in range(n)]
    return xs, [(x @ teacher.t()).argmax(dim=1) for x in xs]


def stage_state(tensors, stage):
    prefix = "stage%d." % stage
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def run_master(args):
    n = args.steps + (WARMUP if args.bench else 0)
    if args.weights:
        tensors = load_safetensors(args.weights)
        s1, s2 = stage_state(tensors, 1), stage_state(tensors, 2)
        xs = [tensors["data.x.%d" % i] for i in range(n)]
        ys = [tensors["data.y.%d" % i] for i in range(n)]
    else:
        s1 = s2 = None
        xs, ys = make_data(n)
    stage1 = rpc.remote("worker1", Stage1, args=(STAGE1_SEED, s1))
    stage2 = rpc.remote("worker2", Stage2, args=(STAGE2_SEED, s2))
    params = stage1.rpc_sync().parameter_rrefs() + stage2.rpc_sync().parameter_rrefs()
    opt = DistributedOptimizer(torch.optim.SGD, params, lr=LR)
    first = last = None
    skip = WARMUP if args.bench else 0
    t0 = time.perf_counter()
    for i in range(n):
        if i == skip:
            t0 = time.perf_counter()
        with dist_autograd.context() as ctx:
            loss = F.cross_entropy(pipeline_forward(stage1, stage2, xs[i]), ys[i])
            dist_autograd.backward(ctx, [loss])
            if i == 0:
                for s, stage in enumerate((stage1, stage2)):
                    if not stage.rpc_sync().grad_norm(ctx) > 0:
                        print("stage %d's gradients are zero" % (s + 1), file=sys.stderr)
                        return 1
            opt.step(ctx)
        value = loss.item()
        print("step %d loss %.9f" % (i, value), flush=True)
        first = value if i == 0 else first
        last = value
    ms = (time.perf_counter() - t0) * 1e3 / args.steps
    if n >= 2 and not last < first:
        print("the loss did not fall: %.9f -> %.9f" % (first, last), file=sys.stderr)
        return 1
    print("loss %.9f -> %.9f in %d steps, %d micro-batches of %d rows"
          % (first, last, n, N_MICRO, BATCH // N_MICRO))
    if args.bench:
        print("step_ms %.3f" % ms)
    return 0


def run_rank(rank, port, args):
    opts = rpc.TensorPipeRpcBackendOptions(init_method="tcp://127.0.0.1:%d" % port)
    name = "master" if rank == 0 else "worker%d" % rank
    rpc.init_rpc(name, rank=rank, world_size=WORLD, rpc_backend_options=opts)
    rc = run_master(args) if rank == 0 else 0
    rpc.shutdown()
    if rc:
        sys.exit(rc)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights")
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--bench", type=int, default=0)
    args = p.parse_args()
    if args.bench:
        args.steps = args.bench
    if args.steps < 1:
        p.error("--steps and --bench need a positive count")
    try:
        mp.spawn(run_rank, args=(free_port(), args), nprocs=WORLD, join=True)
    except mp.ProcessExitedException as e:
        print(e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
