#!/usr/bin/env python3
"""Writes tests/data/torch_cnn.safetensors with PyTorch's own safetensors library: the
state dict of a small CNN (conv, batch norm with its int64 num_batches_tracked, linear),
so the C tests check that a file produced by PyTorch loads in ctensor.

Run once (needs torch and `pip install safetensors`); the C tests do not need Python:
    python3 tests/data/gen_torch_safetensors.py
It also prints a few values that tests/test_checkpoint.c compares against.
"""
import os

import torch
from safetensors.torch import save_file

torch.manual_seed(0)
model = torch.nn.Sequential(
    torch.nn.Conv2d(1, 4, 3, padding=1),
    torch.nn.BatchNorm2d(4),
    torch.nn.ReLU(),
    torch.nn.Flatten(),
    torch.nn.Linear(4 * 5 * 5, 3),
)
model.train()
model(torch.randn(8, 1, 5, 5))  # updates the running statistics and num_batches_tracked
state = {k: v.contiguous() for k, v in model.state_dict().items()}
state["extra.half"] = torch.tensor([1.5, -2.25], dtype=torch.float16)
state["extra.bf16"] = torch.tensor([3.0, 0.1], dtype=torch.bfloat16)
path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_cnn.safetensors")
save_file(state, path, metadata={"producer": "pytorch", "epoch": "7"})
for k, v in state.items():
    flat = v.flatten()
    print(k, v.dtype, list(v.shape), [float(x) for x in flat[:3]], float(v.double().sum()))
