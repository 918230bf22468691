"""compare_torch's "train" section: ctbench's training row (bench/bench_train.c) in PyTorch.

The main job's CNN (python_free_examples/fashion_mnist_cnn.c) as PyTorch modules:
conv 3x3 (1 -> 32) - BatchNorm2d - ReLU - MaxPool2d(2) - conv 3x3 (32 -> 64) - BatchNorm2d -
ReLU - MaxPool2d(2) - Flatten - Dropout(0.25) - Linear(3136, 10), cross-entropy, AdamW (lr 2e-3,
weight decay 1e-4, PyTorch's default implementation for the device), batch 128. A step is
zero_grad, forward, loss, backward, step; the batches are slices of the first 8192 training
images, normalized f32, held on the device, as in ctbench's "train step (in memory)" row.
Same data: Fashion-MNIST's training set when found (CT_FASHION_MNIST_DIR or Debian's
dataset-fashion-mnist), otherwise random U8 images and labels of its shape.

With --ctbench PATH, rounds alternate a run of that ctbench (--only train --reps 1, one rep of
the same number of steps) with one rep here, and the ctensor row gives the median over rounds
of the ratio ctensor / PyTorch of images/s, next to the target (>= 1.2x).
"""
import gzip
import json
import os
import statistics
import subprocess
import tempfile
import time

import torch
import torch.nn.functional as F

BATCH = 128
HELD_IMAGES = 8192
MEAN, STD = 0.2860, 0.3530


def make_model():
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.25), nn.Linear(64 * 7 * 7, 10))


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return torch.frombuffer(bytearray(data[4 + 4 * ndim:]), dtype=torch.uint8).reshape(dims)


def load_data():
    """(images U8 (N, 28, 28), labels int64 (N), description)."""
    root = os.environ.get("CT_FASHION_MNIST_DIR") or "/usr/share/datasets/fashion-mnist"
    for suffix in ("", ".gz"):
        images = os.path.join(root, "train-images-idx3-ubyte" + suffix)
        labels = os.path.join(root, "train-labels-idx1-ubyte" + suffix)
        if os.path.exists(images) and os.path.exists(labels):
            x, y = read_idx(images), read_idx(labels).long()
            return x, y, "Fashion-MNIST training set (%d images)" % x.shape[0]
    g = torch.Generator().manual_seed(42)
    x = torch.randint(0, 256, (60000, 28, 28), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (60000,), generator=g)
    return x, y, "random U8 images and labels of Fashion-MNIST's shape (the data set was not found in %s)" % root


def steps_for(device, quick):
    """Steps per rep and warmup steps: ctbench's (bench_train.c)."""
    if device == "cuda":
        return (10 if quick else 50), (2 if quick else 5)
    return (3 if quick else 20), (2 if quick else 5)


def ctbench_round(ctbench, device, quick):
    """One run of ctbench's train section (one rep): images/s of the in-memory row."""
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as tmp:
        cmd = [ctbench, "--device", device, "--only", "train", "--reps", "1", "--json", tmp.name]
        if quick:
            cmd.append("--quick")
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        for line in open(tmp.name):
            r = json.loads(line)
            if r.get("type") == "row" and r.get("name") == "train step (in memory)":
                return r["value"]
    raise RuntimeError("ctbench printed no 'train step (in memory)' row")


def section_train(t, device, quick, reps, threads, ctbench=None):
    images, labels, what = load_data()
    print("# train: data: " + what)
    dev = torch.device(device)
    n = min(images.shape[0], HELD_IMAGES) // BATCH * BATCH
    x_all = ((images[:n].float() / 255.0 - MEAN) / STD).reshape(n, 1, 28, 28).to(dev)
    y_all = labels[:n].to(dev)
    torch.manual_seed(42)
    model = make_model().to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    batches = n // BATCH
    state = {"next": 0}

    def step():
        b = state["next"]
        state["next"] = (b + 1) % batches
        x, y = x_all[b * BATCH:(b + 1) * BATCH], y_all[b * BATCH:(b + 1) * BATCH]
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        return loss

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize()

    steps, warmup = steps_for(device, quick)
    for _ in range(warmup):
        loss = step()
    first_loss = loss.item()
    times, ratios, ours = [], [], []
    for _ in range(reps):
        if ctbench:
            ours.append(ctbench_round(ctbench, device, quick))
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            loss = step()
        sync()
        times.append(time.perf_counter() - t0)
        if ctbench:
            ratios.append(ours[-1] / (BATCH * steps / times[-1]))
    best, median = min(times), statistics.median(times)
    torch_ips = BATCH * steps / best
    size = "batch %d" % BATCH
    t.row("train", "torch train step", size, threads, reps * steps, best / steps, median / steps, torch_ips, "img/s")
    if ctbench:
        ratio = statistics.median(ratios)
        ours_best = max(ours)
        t.row("train", "ctensor (ctbench)", size, threads, reps * steps, BATCH / ours_best,
              BATCH / statistics.median(ours), ours_best, "img/s", "torch", ratio,
              None if quick else ">= 120% of torch", ratio >= 1.2)
    print("# train: %s, torch %s, AdamW with torch's defaults, %d steps per rep after %d warmup steps; loss %.3f "
          "after warmup, %.3f at the end" % (device, torch.__version__, steps, warmup, first_loss, loss.item()))
    if ctbench:
        print("# train: ctensor's rows are ctbench runs alternating with the torch reps; ratio: median over rounds "
              "of ctensor's images/s over torch's")
