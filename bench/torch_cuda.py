"""compare_torch --device cuda: the rows of ctbench's CUDA sections (bench/bench_cuda.cu) in PyTorch.

  memory       dst.copy_(src) of 1 GiB on the device (a cudaMemcpyAsync device to device): the copy
               bandwidth, bytes read + written
  matmul       torch.matmul at 8192^3 in bf16, f16 and f32 (TF32 off, PyTorch's default)
  elementwise  torch.add, mul, relu, .to(bfloat16) and softmax on 64 Mi f32 elements (256 MiB), and
               the reductions (sum over everything, rows and columns, max, var, logsumexp, argmax),
               torch.rand, randn and dropout (no target), each call allocating its output, rounds
               interleaved with the copy; % of the copy
  overhead     host time of torch.empty + del of a 1 MiB tensor (PyTorch's caching allocator) and of
               torch.add on 1-element tensors, enqueued without waiting (medians over batches)
  train        the main job's CNN (bench/torch_train.py)

GPU work is timed with CUDA events around a few calls after warmup, as in ctbench. With
--ctbench PATH, that ctbench runs the same sections first (--device cuda --json) and a last table
gives ctensor's figure next to PyTorch's for each row, and their ratio (> 1: ctensor is faster).
"""
import json
import statistics
import subprocess
import sys
import tempfile
import time

import torch

import torch_train

ROW = 1024


def describe():
    p = torch.cuda.get_device_properties(0)
    return "%s, compute capability %d.%d, %d SMs, %.1f GiB; torch %s, CUDA %s, cuDNN %s" % (
        p.name, p.major, p.minor, p.multi_processor_count, p.total_memory / 2**30, torch.__version__,
        torch.version.cuda, torch.backends.cudnn.version())


def event_times(fns, warmup, reps, iters):
    """Per call seconds of each function, in rounds: [fn][round]; the host waits once, at the end."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    events = [[(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
              for _ in fns]
    for r in range(reps):
        for k, fn in enumerate(fns):
            events[k][r][0].record()
            for _ in range(iters):
                fn()
            events[k][r][1].record()
    torch.cuda.synchronize()
    return [[e0.elapsed_time(e1) * 1e-3 / iters for e0, e1 in ev] for ev in events]


def section_copy(t, quick, warmup, reps, iters):
    nbytes = (256 if quick else 1024) << 20
    src = torch.full((nbytes,), 0x3c, dtype=torch.uint8, device="cuda")
    dst = torch.zeros_like(src)
    (times,) = event_times([lambda: dst.copy_(src)], warmup, reps, iters)
    best = min(times)
    t.row("memory", "dst.copy_(src) D2D", "%d MiB" % (nbytes >> 20), 1, reps, best, statistics.median(times),
          2 * nbytes / best * 1e-9, "GB/s")
    return src, dst


def section_matmul(t, quick, warmup, reps):
    torch.backends.cuda.matmul.allow_tf32 = False
    n = 2048 if quick else 8192
    for dtype, name in ((torch.bfloat16, "bf16"), (torch.float16, "f16"), (torch.float32, "f32")):
        a = torch.rand((n, n), device="cuda", dtype=dtype) * 2 - 1
        b = torch.rand((n, n), device="cuda", dtype=dtype) * 2 - 1
        (times,) = event_times([lambda: torch.matmul(a, b)], warmup, reps, 2 if quick else 3)
        best = min(times)
        t.row("matmul", "torch.matmul " + name, "%d^3" % n, 1, reps, best, statistics.median(times),
              2.0 * n ** 3 / best * 1e-12, "TFLOP/s")


# (torch row, ctbench row, bytes read + written per element, target in % of the copy)
BANDWIDTH_ROWS = [
    ("torch.add", "ct_add", 12, 90),
    ("torch.mul", "ct_mul", 12, 90),
    ("torch.relu", "ct_relu", 8, 90),
    (".to(bfloat16)", "ct_cast f32->bf16", 6, 90),
    ("torch.softmax (rows 1024)", "ct_softmax (rows of 1024)", 8, 90),
    ("torch.sum (all)", "ct_sum (all)", 4, 85),
    ("sum (rows of 1024)", "ct_sum (rows of 1024)", 4, 85),
    ("sum (dim 0, 1024 cols)", "ct_sum (dim 0, 1024 cols)", 4, 85),
    ("torch.max (all)", "ct_max_all", 4, 85),
    ("var (rows of 1024)", "ct_var (rows of 1024)", 4, 85),
    ("logsumexp (rows)", "ct_logsumexp (rows)", 4, 85),
    ("argmax (rows)", "ct_argmax (rows)", 4, 85),
    ("torch.rand", "ct_rand f32", 4, 0),  # 0: no target
    ("torch.randn", "ct_randn f32", 4, 0),
    ("F.dropout (p 0.1)", "ct_dropout f32 (p 0.1)", 8, 0),
]


def section_bandwidth(t, copy, quick, warmup, reps, iters):
    src, dst = copy
    n = 1 << 24 if quick else 1 << 26
    g = torch.Generator(device="cuda").manual_seed(3)
    a = torch.rand((n,), device="cuda", generator=g) * 2 - 1
    b = torch.rand((n,), device="cuda", generator=g) + 0.5
    a2 = a.view(n // ROW, ROW)
    calls = [
        lambda: torch.add(a, b), lambda: torch.mul(a, b), lambda: torch.relu(a), lambda: a.to(torch.bfloat16),
        lambda: torch.softmax(a2, -1), lambda: torch.sum(a), lambda: a2.sum(-1), lambda: a2.sum(0),
        lambda: torch.max(a), lambda: a2.var(-1), lambda: torch.logsumexp(a2, -1), lambda: a2.argmax(-1),
        lambda: torch.rand((n,), device="cuda", generator=g), lambda: torch.randn((n,), device="cuda", generator=g),
        lambda: torch.nn.functional.dropout(a, 0.1, True),
    ]
    times = event_times([lambda: dst.copy_(src)] + calls, warmup, reps, iters)
    copy_bytes = 2 * src.numel()
    for (name, _, nbytes, target), samples in zip(BANDWIDTH_ROWS, times[1:]):
        best = min(samples)
        ratio = statistics.median((nbytes * n / x) / (copy_bytes / c) for x, c in zip(samples, times[0]))
        t.row("elementwise", name, "%dMi f32" % (n >> 20), 1, reps, best, statistics.median(samples),
              nbytes * n / best * 1e-9, "GB/s", "D2D copy", ratio,
              None if quick or not target else ">= %d%% of copy" % target, ratio >= target / 100)


def section_overhead(t, quick):
    batches, per_batch, warmup_iters = (100, 50, 5000) if quick else (2000, 100, 20000)
    a = torch.full((1,), 1.5, device="cuda")
    b = torch.full((1,), 2.5, device="cuda")

    def alloc():
        x = torch.empty((1 << 18,), device="cuda")
        del x

    def add():
        torch.add(a, b)

    for name, size, fn, target, limit in (("torch.empty+del 1MiB", "1 MiB", alloc, "< 1 us", 1.0),
                                          ("torch.add 1 elem, host time", "1 elem", add, "< 4 us", 4.0)):
        for _ in range(warmup_iters):
            fn()
        torch.cuda.synchronize()
        samples = []
        loop = range(per_batch)
        for _ in range(batches):
            t0 = time.perf_counter()
            for _ in loop:
                fn()
            samples.append((time.perf_counter() - t0) / per_batch)
            torch.cuda.synchronize()  # the device drains between batches, untimed
        median = statistics.median(samples)
        t.row("overhead", name, size, 1, batches * per_batch, min(samples), median, median * 1e6, "us",
              target=None if quick else target, met=median * 1e6 < limit)


# ctbench's row -> compare_torch's row, for the last table.
PAIRS = [("cudaMemcpyAsync D2D", "dst.copy_(src) D2D")] + \
    [("cublasLt %s (direct)" % d, "torch.matmul " + d) for d in ("bf16", "f16", "f32")] + \
    [("ct_matmul " + d, "torch.matmul " + d) for d in ("bf16", "f16", "f32")] + \
    [(ours, theirs) for theirs, ours, _, _ in BANDWIDTH_ROWS] + \
    [("ct_empty+ct_tensor_free 1MiB", "torch.empty+del 1MiB"), ("ct_add 1 elem, host time", "torch.add 1 elem, host time")]


class Recorder:
    """Passes rows to compare_torch's table and keeps each row's value for the comparison."""

    def __init__(self, table):
        self.table = table
        self.values = {}

    def row(self, section, name, size, threads, reps, best, median, value, unit, *rest, **options):
        self.values[name] = (value, unit)
        self.table.row(section, name, size, threads, reps, best, median, value, unit, *rest, **options)


def run_ctbench(ctbench, quick, sections):
    with tempfile.NamedTemporaryFile(suffix=".jsonl") as tmp:
        cmd = [ctbench, "--device", "cuda", "--only", ",".join(sections), "--json", tmp.name] + \
            (["--quick"] if quick else [])
        print("# running " + " ".join(cmd))
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
        return {r["name"]: r for r in map(json.loads, open(tmp.name)) if r.get("type") == "row"}


def run(t, args, enabled, json_file):
    """All the CUDA rows; the table `t` is compare_torch's."""
    if not torch.cuda.is_available():
        raise SystemExit("compare_torch: --device cuda: torch sees no usable GPU")
    print("# cuda: " + describe())
    quick = args.quick
    reps = args.reps or (3 if quick else 10)
    warmup, iters = (1, 2) if quick else (3, 5)
    kernel_sections = [s for s in ("memory", "matmul", "elementwise", "overhead") if enabled(s)]
    ours = run_ctbench(args.ctbench, quick, kernel_sections) if args.ctbench and kernel_sections else {}
    rec = Recorder(t)
    with torch.no_grad():
        if enabled("memory") or enabled("elementwise"):
            copy = section_copy(rec, quick, warmup, reps, iters)
        if enabled("matmul"):
            section_matmul(rec, quick, warmup, reps)
        if enabled("elementwise"):
            section_bandwidth(rec, copy, quick, warmup, reps, iters)
        copy = None
        if enabled("overhead"):
            section_overhead(rec, quick)
    if enabled("train"):
        torch_train.section_train(t, "cuda", quick, args.reps or (2 if quick else 5), 1, args.ctbench)
    if not ours:
        return
    print("\nctensor (ctbench, run just before) vs torch, same GPU; ratio > 1: ctensor is faster")
    fmt = "{:<30} {:<30} {:>10} {:>10} {:<8} {:>7}"
    print(fmt.format("ctbench row", "torch row", "ctensor", "torch", "unit", "ratio"))
    for ct_name, torch_name in PAIRS:
        if ct_name not in ours or torch_name not in rec.values:
            continue
        value, unit = rec.values[torch_name]
        mine = ours[ct_name]["value"]
        ratio = value / mine if unit == "us" else mine / value
        print(fmt.format(ct_name, torch_name, "%.1f" % mine, "%.1f" % value, unit, "%.3f" % ratio))
        if json_file:
            json_file.write(json.dumps(dict(type="comparison", device="cuda", ctbench=ct_name, torch=torch_name,
                                            ctensor_value=mine, torch_value=value, unit=unit, ratio=ratio)) + "\n")
    sys.stdout.flush()
