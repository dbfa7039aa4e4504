#!/usr/bin/python3
"""The parameter_server example in PyTorch: a batch-updating parameter server after torch's
tutorial "Implementing Batch RPC Processing Using Asynchronous Executions", with the same
model, data, optimizer and process layout as main.c, so that its losses can be compared.

Four processes on 127.0.0.1 with the TensorPipe agent: "ps" builds the server (an nn.Sequential
of Linear 16->32, ReLU, Linear 32->4 in float64, and SGD with momentum 0.9) with rpc.remote and
starts the three trainers' loops with rpc_async. Each trainer fetches the model, and every round
computes its loss and gradients on its own fixed batch and sends the gradients to
update_and_fetch_model, an @rpc.functions.async_execution function that returns a future the
last trainer of the round completes, after the averaged SGD step. The gradients are added in
trainer-rank order, as main.c adds them, so the numbers do not depend on who arrives first.
The master prints `step <i> loss <mean of the trainers' losses>` for every round.

  /usr/bin/python3 examples/parameter_server/reference.py [--weights FILE] [--steps N]
                                                          [--bench N]
--weights reads the initial model and the trainers' batches that
`build/examples/parameter_server --weights-out FILE` wrote; without it the model comes from
torch's own initialization under a fixed seed and the data from torch's generator (different
numbers from ferry's). --bench N runs 3 untimed rounds, then N timed ones, and prints
`step_ms <milliseconds per round>` last."""
import argparse
import os
import sys
import threading
import time

import torch
import torch.distributed.rpc as rpc
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from reference_util import free_port, load_safetensors  # noqa: E402

N_IN, N_HIDDEN, N_OUT = 16, 32, 4
BATCH = 32
N_TRAINERS = 3
WORLD = N_TRAINERS + 1
STEPS = 30
WARMUP = 3
LR = 0.05
MOMENTUM = 0.9
SEED = 5
PARAM_NAMES = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")



def make_model():
    return nn.Sequential(nn.Linear(N_IN, N_HIDDEN), nn.ReLU(), nn.Linear(N_HIDDEN, N_OUT)).double()


class BatchUpdateParameterServer:
    """Holds the model; update_and_fetch_model batches one round of every trainer's
    gradients into one SGD step."""

    def __init__(self, n_trainers, lr, params=None):
        torch.manual_seed(SEED)
        self.model = make_model()
        if params is not None:
            with torch.no_grad():
                for p, v in zip(self.model.parameters(), params):
                    p.copy_(v)
        self.n_trainers = n_trainers
        self.lock = threading.Lock()
        self.grads = {}  # rank -> this round's gradients
        self.future_model = torch.futures.Future()
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=lr, momentum=MOMENTUM)

    def get_model(self):
        with self.lock:
            return self.model

    @staticmethod
    @rpc.functions.async_execution
    def update_and_fetch_model(ps_rref, rank, grads):
        self = ps_rref.local_value()
        with self.lock:
            if rank in self.grads:
                raise ValueError("trainer %d already reported this round" % rank)
            self.grads[rank] = grads
            fut = self.future_model
            if len(self.grads) == self.n_trainers:
                ranks = sorted(self.grads)
                for i, p in enumerate(self.model.parameters()):
                    total = self.grads[ranks[0]][i].clone()
                    for r in ranks[1:]:
                        total += self.grads[r][i]
                    p.grad = total / self.n_trainers
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.grads = {}
                fut.set_result(self.model)
                self.future_model = torch.futures.Future()
        return fut


def run_trainer(ps_rref, rank, x, y, steps):
    """A trainer's loop: its loss of every round, with the model it got before the round."""
    m = ps_rref.rpc_sync().get_model()
    losses = []
    for _ in range(steps):
        loss = F.mse_loss(m(x), y)
        loss.backward()
        losses.append(loss.item())
        m = rpc.rpc_sync(ps_rref.owner(), BatchUpdateParameterServer.update_and_fetch_model,
                         args=(ps_rref, rank, [p.grad for p in m.parameters()]))
    return losses


def make_data():
    """Torch's own data when no file is given: the recipe of main.c, torch's numbers."""
    gen = torch.Generator().manual_seed(11)
    teacher = nn.Linear(N_IN, N_OUT).double()
    with torch.no_grad():
        for p in teacher.parameters():
            bound = 1.0 / N_IN ** 0.5
            p.copy_(torch.rand(p.shape, generator=gen, dtype=torch.float64) * 2 * bound - bound)
        xs = [torch.randn(BATCH, N_IN, generator=gen, dtype=torch.float64)
              for _ in range(N_TRAINERS)]
        ys = [torch.tanh(2 * teacher(x)) for x in xs]
    return xs, ys


def run_rounds(ps_rref, xs, ys, first, n):
    futs = [rpc.rpc_async("trainer%d" % (r + 1), run_trainer,
                          args=(ps_rref, r + 1, xs[r], ys[r], n)) for r in range(N_TRAINERS)]
    losses = [f.wait() for f in futs]
    means = []
    for s in range(n):
        total = 0.0
        for r in range(N_TRAINERS):
            total += losses[r][s]
        means.append(total / N_TRAINERS)
        print("step %d loss %.9f" % (first + s, means[-1]), flush=True)
    return means


def run_master(opts):
    params = None
    if opts.weights:
        t = load_safetensors(opts.weights)
        params = [t[name] for name in PARAM_NAMES]
        xs = [t["data.x.%d" % (r + 1)] for r in range(N_TRAINERS)]
        ys = [t["data.y.%d" % (r + 1)] for r in range(N_TRAINERS)]
    else:
        xs, ys = make_data()
    ps_rref = rpc.remote("ps", BatchUpdateParameterServer, args=(N_TRAINERS, LR, params))
    means = []
    if opts.bench:
        means += run_rounds(ps_rref, xs, ys, 0, WARMUP)
    n = opts.bench or opts.steps
    t0 = time.perf_counter()
    means += run_rounds(ps_rref, xs, ys, len(means), n)
    t1 = time.perf_counter()
    if not means[-1] < means[0]:
        print("the loss did not fall: first %.9f, last %.9f" % (means[0], means[-1]))
        return 1
    print("loss fell from %.9f to %.9f in %d rounds of %d trainers"
          % (means[0], means[-1], len(means), N_TRAINERS))
    if opts.bench:
        print("step_ms %.3f" % ((t1 - t0) * 1e3 / opts.bench), flush=True)
    return 0


def run_worker(rank, port, opts):
    torch.set_num_threads(1)
    options = rpc.TensorPipeRpcBackendOptions(num_worker_threads=16,
                                              init_method="tcp://127.0.0.1:%d" % port)
    name = "ps" if rank == 0 else "trainer%d" % rank
    rpc.init_rpc(name, rank=rank, world_size=WORLD, rpc_backend_options=options)
    rc = run_master(opts) if rank == 0 else 0
    rpc.shutdown()
    if rc:
        raise SystemExit(rc)  # mp.spawn reports it as a failed process


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", help="initial model and data written by --weights-out")
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--bench", type=int, default=0)
    opts = ap.parse_args()
    os.environ.setdefault("TP_SOCKET_IFNAME", "lo")
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    try:
        mp.spawn(run_worker, args=(free_port(), opts), nprocs=WORLD, join=True)
    except mp.ProcessExitedException:
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
