#!/usr/bin/env python3
"""The other direction of tests/data/gen_torch_safetensors.py: a checkpoint written by
ctensor's main job loads in PyTorch through PyTorch's safetensors library, strictly, into the
same network written in PyTorch, and gives the same test accuracy there.

Not part of the test suite (the C tests need no Python). Run by hand, with torch and
safetensors installed (`pip install safetensors`):
    ./build/python_free_examples/fashion_mnist_cnn --epochs 1 --train-limit 2000 --checkpoint /tmp/ours.safetensors
    python3 tests/data/check_torch_loads_ours.py /tmp/ours.safetensors [FASHION_MNIST_DIR]
It prints the accuracy, which must equal the one the main job printed (eval mode, the test set,
the main job's normalization).
"""
import gzip
import os
import sys

import numpy as np
import torch
import torch.nn as nn
from safetensors import safe_open
from safetensors.torch import load_file

path = sys.argv[1]
data = sys.argv[2] if len(sys.argv) > 2 else os.environ.get("CT_FASHION_MNIST_DIR",
                                                              "/usr/share/datasets/fashion-mnist")
tensors = load_file(path)
with safe_open(path, "pt") as f:
    print("metadata:", f.metadata())
model = nn.Sequential(nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Flatten(), nn.Dropout(0.25), nn.Linear(3136, 10))
print(model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")},
                            strict=True))
model.eval()
images = gzip.open(os.path.join(data, "t10k-images-idx3-ubyte.gz")).read()
labels = gzip.open(os.path.join(data, "t10k-labels-idx1-ubyte.gz")).read()
x = torch.tensor(np.frombuffer(images, np.uint8, offset=16).reshape(-1, 1, 28, 28), dtype=torch.float32)
y = np.frombuffer(labels, np.uint8, offset=8)
x = (x / 255 - 0.2860) / 0.3530  # the main job's normalization
with torch.no_grad():
    accuracy = (model(x).argmax(1).numpy() == y).mean()
print("test accuracy in PyTorch %s: %.4f" % (torch.__version__, accuracy))
