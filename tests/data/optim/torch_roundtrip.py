#!/usr/bin/python3
"""Continues a ferry optimizer run in torch: loads the parameters and the optimizer state ferry
saved, hands the state to torch's optimizer.load_state_dict, runs more steps of the case's loss
(make_trajectories.py), and writes the parameters and torch's state_dict back in ferry's state
file layout. tests/unit/test_optim_state.c checks that ferry reads that state and that both
sides agree. The two converters are the ones docs/optim.md shows, with the safetensors format
read and written by hand so that only torch is needed.

Usage: /usr/bin/python3 tests/data/optim/torch_roundtrip.py CASE PARAMS_IN STATE_IN STEPS
           PARAMS_OUT STATE_OUT"""
import json
import os
import sys

import torch

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
import make_trajectories as mt  # noqa: E402
import make_safetensors_data as st  # noqa: E402
import read_ferry_file as rf  # noqa: E402

PAIRS = ("betas", "etas", "step_sizes")


def ferry_to_torch(tensors, metadata):
    """A ferry state file's tensors and metadata -> a torch optimizer state_dict."""
    groups = [{k: tuple(v) if k in PAIRS else v for k, v in g.items()}
              for g in json.loads(metadata["param_groups"])]
    state = {}
    for name, t in tensors.items():
        _, index, key = name.split(".", 2)
        state.setdefault(int(index), {})[key] = t.item() if t.dtype == torch.int64 else t
    return {"state": state, "param_groups": groups}


def torch_to_ferry(sd, kind):
    """A torch state_dict -> (tensors, metadata) of a ferry state file."""
    tensors = {"state.%d.%s" % (i, k): (v if torch.is_tensor(v) else torch.tensor(v)).contiguous()
               for i, s in sd["state"].items() for k, v in s.items() if v is not None}
    return tensors, {"optimizer": kind, "param_groups": json.dumps(sd["param_groups"])}


def main(argv):
    if len(argv) != 7:
        print(__doc__)
        return 2
    case, params_in, state_in, steps, params_out, state_out = argv[1:]
    name, kind, kwargs, extra = next(c for c in mt.CASES if c[0] == case)
    o = mt.options_of(extra)
    params, _ = rf.load(params_in)
    w = params["W"].clone().requires_grad_(True)
    b = params["b"].clone().requires_grad_(True)
    x = mt.start_tensors()["x"].to(w.dtype)
    opt = mt.make_optimizer(kind, kwargs, w, b, o["b_lr"])
    opt.load_state_dict(ferry_to_torch(*rf.load(state_in)))
    mt.run_steps(opt, w, b, x, not o["nograd_b"], int(steps))
    with open(params_out, "wb") as f:
        f.write(st.serialize({"W": w.detach(), "b": b.detach()}))
    with open(state_out, "wb") as f:
        f.write(st.serialize(*torch_to_ferry(opt.state_dict(), kind)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
