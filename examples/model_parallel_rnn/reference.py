#!/usr/bin/python3
"""The same distributed RNN and training as main.c, in PyTorch with torch.distributed.rpc.

Three processes on 127.0.0.1 (TensorPipe): the EmbeddingTable is built on "worker1" and the
Decoder on "worker2" with rpc.remote; the master ("master", rank 0) holds an nn.LSTM and runs
RNNModel.forward through the two RRefs inside a distributed autograd context, then
dist_autograd.backward and a DistributedOptimizer (SGD) step. Everything is float64.

With --weights FILE (written by `model_parallel_rnn --weights-out FILE`) it starts from ferry's
initial weights and trains on ferry's data, so its losses are ferry's. Without it, it makes its
own weights and data with torch's random generator (the same distributions and data rule).

Usage: /usr/bin/python3 examples/model_parallel_rnn/reference.py [--weights FILE] [--steps N]
           [--bench N]"""
import argparse
import math
import os
import sys
import time

import torch
import torch.distributed.autograd as dist_autograd
import torch.distributed.rpc as rpc
import torch.multiprocessing as mp
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.optim import DistributedOptimizer

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from reference_util import free_port, load_safetensors  # noqa: E402

VOCAB, EMB, HIDDEN, SEQ, BATCH = 32, 16, 16, 8, 4
STEPS, LR, WARMUP, WORLD = 50, 1.0, 3, 3
NAMES = ("master", "worker1", "worker2")
PARAM_NAMES = ("emb.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0", "rnn.bias_ih_l0",
               "rnn.bias_hh_l0", "dec.weight", "dec.bias")


class EmbeddingTable(nn.Module):
    def __init__(self, ntoken, ninp, weight=None):
        super().__init__()
        torch.set_default_dtype(torch.float64)
        self.encoder = nn.Embedding(ntoken, ninp)
        if weight is not None:
            with torch.no_grad():
                self.encoder.weight.copy_(weight)

    def forward(self, input):
        return self.encoder(input)

    def parameter_rrefs(self):
        return [rpc.RRef(p) for p in self.parameters()]


class Decoder(nn.Module):
    def __init__(self, ntoken, nhid, weight=None, bias=None):
        super().__init__()
        torch.set_default_dtype(torch.float64)
        self.decoder = nn.Linear(nhid, ntoken)
        if weight is not None:
            with torch.no_grad():
                self.decoder.weight.copy_(weight)
                self.decoder.bias.copy_(bias)

    def forward(self, output):
        return self.decoder(output)

    def parameter_rrefs(self):
        return [rpc.RRef(p) for p in self.parameters()]


class RNNModel(nn.Module):
    """The embedding on worker1, the LSTM here, the decoder on worker2."""

    def __init__(self, w=None):
        super().__init__()
        w = w or {}
        self.emb_rref = rpc.remote("worker1", EmbeddingTable,
                                   args=(VOCAB, EMB, w.get("emb.weight")))
        self.rnn = nn.LSTM(EMB, HIDDEN, 1)
        if w:
            with torch.no_grad():
                for name in PARAM_NAMES[1:5]:
                    getattr(self.rnn, name[len("rnn."):]).copy_(w[name])
        self.dec_rref = rpc.remote("worker2", Decoder,
                                   args=(VOCAB, HIDDEN, w.get("dec.weight"), w.get("dec.bias")))

    def forward(self, input):
        emb = self.emb_rref.rpc_sync().forward(input)
        output, _ = self.rnn(emb)  # hx=None: a zero state, batches are unrelated
        return self.dec_rref.rpc_sync().forward(output)

    def parameter_rrefs(self):
        return (self.emb_rref.rpc_sync().parameter_rrefs()
                + [rpc.RRef(p) for p in self.rnn.parameters()]
                + self.dec_rref.rpc_sync().parameter_rrefs())


def make_data(steps):
    """Sequences following next = (3 * token + 1) mod VOCAB from random starting tokens."""
    gen = torch.Generator().manual_seed(14)
    xs, ys = [], []
    for _ in range(steps):
        tok = torch.randint(0, VOCAB, (BATCH,), generator=gen)
        x = torch.empty(SEQ, BATCH, dtype=torch.int64)
        y = torch.empty(SEQ, BATCH, dtype=torch.int64)
        for t in range(SEQ):
            x[t] = tok
            tok = (3 * tok + 1) % VOCAB
            y[t] = tok
        xs.append(x)
        ys.append(y)
    return xs, ys


def run_master(args, steps):
    if args.weights:
        w = load_safetensors(args.weights)
        xs = [w["data.x.%d" % s] for s in range(steps)]
        ys = [w["data.y.%d" % s] for s in range(steps)]
    else:
        w = None
        xs, ys = make_data(steps)
    model = RNNModel(w)
    opt = DistributedOptimizer(torch.optim.SGD, model.parameter_rrefs(), lr=LR)
    warmup = WARMUP if args.bench else 0
    first = last = math.nan
    timed_s = 0.0
    for s in range(steps):
        t0 = time.perf_counter()
        with dist_autograd.context() as ctx:
            out = model(xs[s])
            loss = F.cross_entropy(out.reshape(-1, VOCAB), ys[s].reshape(-1))
            dist_autograd.backward(ctx, [loss])
            opt.step(ctx)
        if s >= warmup:
            timed_s += time.perf_counter() - t0
        value = loss.item()
        print("step %d loss %.9f" % (s, value), flush=True)
        first = value if s == 0 else first
        last = value
    if not last < first:
        print("the loss did not fall: first %.9f, last %.9f" % (first, last), file=sys.stderr)
        return 1
    print("loss fell from %.6f to %.6f in %d steps" % (first, last, steps))
    if args.bench:
        print("step_ms %.3f" % (1e3 * timed_s / args.bench))
    return 0


def run(rank, args, steps, port):
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    torch.manual_seed(11 + rank)  # without --weights, every part's own initial weights
    opts = rpc.TensorPipeRpcBackendOptions(init_method="tcp://127.0.0.1:%d" % port)
    rpc.init_rpc(NAMES[rank], rank=rank, world_size=WORLD, rpc_backend_options=opts)
    rc = run_master(args, steps) if rank == 0 else 0
    rpc.shutdown()
    if rc:
        sys.exit(rc)


def main():
    p = argparse.ArgumentParser(description="torch reference of examples/model_parallel_rnn")
    p.add_argument("--weights", help="initial weights and data written by --weights-out")
    p.add_argument("--steps", type=int, default=STEPS)
    p.add_argument("--bench", type=int, default=0)
    args = p.parse_args()
    steps = WARMUP + args.bench if args.bench else args.steps
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    try:
        mp.spawn(run, args=(args, steps, free_port()), nprocs=WORLD, join=True)
    except Exception as e:  # a rank failed or exited non-zero
        print("reference failed: %s" % e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
