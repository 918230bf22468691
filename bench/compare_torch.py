#!/usr/bin/python3
"""The rows of ctbench's CPU sections, measured through PyTorch on the same machine.

    /usr/bin/python3 bench/compare_torch.py [--device cpu|cuda] [--quick] [--threads N] [--reps N]
                                            [--only SECTIONS] [--ctbench PATH] [--json FILE]

Same sizes, same definitions, same statistics as bench/ctbench, so the two tables can be
read side by side:
  memory       the copy bandwidth through torch (dst.copy_(src) into an existing tensor),
               and src.clone() (a fresh output), bytes read + written
  elementwise  torch.add, mul, relu, sum on 64 Mi f32 elements, each call allocating its
               output; then add_ and mul_ in place. Interleaved with the memory rows.
  matmul       torch.matmul next to a direct cblas_sgemm (OpenBLAS through ctypes) on the
               same buffers, interleaved; and torch.matmul right after an op on the intra-op
               (OpenMP) threads
  overhead     torch.add of two 1-element tensors, without and with a tensor that requires
               grad, median per call over batches of calls
  train        the main job's CNN trained in PyTorch, images/s (bench/torch_train.py); with
               --ctbench, alternating with that ctbench's train row, and their ratio
--device cuda prints the rows of ctbench's CUDA sections instead (bench/torch_cuda.py).

torch.set_num_threads is set to ctensor's OpenMP thread count (the CPUs this process may
run on, or OMP_NUM_THREADS). Python is only used for this comparison: ctensor itself never
needs it.
"""
import argparse
import ctypes
import ctypes.util
import json
import os
import statistics
import sys
import time

import torch


def ctensor_threads():
    """The thread count libgomp gives ctensor: OMP_NUM_THREADS, else the usable CPUs."""
    env = os.environ.get("OMP_NUM_THREADS", "").split(",")[0].strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0))


class Table:
    FORMAT = "{:<12} {:<30} {:<10} {:>3} {:>6} {:>11} {:>11} {:>10} {:<8} {:<20} {}"

    def __init__(self, json_file, device="cpu"):
        self.json = json_file
        self.device = device

    def header(self, meta):
        print("compare_torch  torch {torch}  {date}  threads {threads}  BLAS reference {blas}".format(**meta)
              + ("  (quick)" if meta["quick"] else ""))
        print(self.FORMAT.format("section", "benchmark", "size", "thr", "reps", "best", "median", "value",
                                 "unit", "vs reference", "target"))
        print("-" * 140)
        if self.json:
            self.json.write(json.dumps(dict(type="meta", device=self.device, **meta)) + "\n")

    @staticmethod
    def fmt_time(s):
        if s >= 1.0:
            return "%.3f s" % s
        if s >= 1e-3:
            return "%.2f ms" % (s * 1e3)
        return "%.3f us" % (s * 1e6)

    def row(self, section, name, size, threads, reps, best, median, value, unit, ref=None, ratio=None,
            target=None, met=None):
        vs = "%5.1f%% of %s" % (100 * ratio, ref) if ref else ""
        tgt = "%s  %s" % (target, "ok" if met else "MISSED") if target else ""
        print(self.FORMAT.format(section, name, size, threads, reps, self.fmt_time(best), self.fmt_time(median),
                                 ("%.1f" if value >= 100 else "%.3f") % value, unit, vs, tgt), flush=True)
        if self.json:
            r = dict(type="row", device=self.device, section=section, name=name, size=size, threads=threads, reps=reps,
                     best_s=best, median_s=median, value=value, unit=unit)
            if ref:
                r.update(ref=ref, ratio=ratio)
            if target:
                r.update(target=target, target_met=bool(met))
            self.json.write(json.dumps(r) + "\n")


def paired_ratio(ref_times, times):
    """The median over rounds of ref_times[i] / times[i]."""
    return statistics.median(r / x for r, x in zip(ref_times, times))


def measure(fn, warmup, reps):
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return min(samples), statistics.median(samples)


def filled(shape, seed, lo, width):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=g, dtype=torch.float32) * width + lo


def size_label(n):
    return "%dMi f32" % (n >> 20) if n >= 1 << 20 and n % (1 << 20) == 0 else "%d f32" % n


def section_bandwidth(t, n, warmup, reps, threads, quick, want_memory, want_elementwise):
    """The memory and elementwise rows, interleaved round after round as in ctbench."""
    src, dst = filled((n,), 1, 0, 1), filled((n,), 2, 0, 1)
    a, b, c = filled((n,), 3, -1.0, 2.0), filled((n,), 4, 0.5, 1.0), filled((n,), 5, -1.0, 2.0)
    # (section, name, elements read + written per element, call, has a target)
    items = [("memory", "dst.copy_(src)", 2, lambda: dst.copy_(src), False)]
    if want_memory:
        items.append(("memory", "src.clone(), fresh dst", 2, lambda: src.clone(), False))
    if want_elementwise:
        items += [
            ("elementwise", "torch.add", 3, lambda: torch.add(a, b), True),
            ("elementwise", "torch.mul", 3, lambda: torch.mul(a, b), True),
            ("elementwise", "torch.relu", 2, lambda: torch.relu(a), True),
            ("elementwise", "torch.sum", 1, lambda: torch.sum(a), True),
            ("elementwise", "add_ (in place)", 3, lambda: c.add_(b), False),
            ("elementwise", "mul_ (in place)", 3, lambda: c.mul_(b), False),
        ]
    samples = [[] for _ in items]
    for rnd in range(-warmup, reps):
        for k, (_, _, _, fn, _) in enumerate(items):
            t0 = time.perf_counter()
            fn()
            if rnd >= 0:
                samples[k].append(time.perf_counter() - t0)
    copy_gbs = None
    for k, (section, name, words, _, has_target) in enumerate(items):
        best, median = min(samples[k]), statistics.median(samples[k])
        gbs = words * n * 4 / best * 1e-9
        if copy_gbs is None:
            copy_gbs = gbs
            t.row(section, name, "%d MiB" % (n * 4 >> 20), threads, reps, best, median, gbs, "GB/s")
            continue
        # Median over rounds of the ratio to the copy of the same round, as in ctbench.
        ratio = paired_ratio(samples[0], samples[k]) * words / 2
        size = "%d MiB" % (n * 4 >> 20) if section == "memory" else size_label(n)
        t.row(section, name, size, threads, reps, best, median, gbs, "GB/s", "copy_", ratio,
              ">= 90% of copy_" if has_target and not quick else None, ratio >= 0.90)


def openblas_sgemm():
    """cblas_sgemm from the OpenBLAS that ctbench links, or None."""
    for name in ("libopenblas.so.0", ctypes.util.find_library("openblas")):
        if not name:
            continue
        try:
            lib = ctypes.CDLL(name)
        except OSError:
            continue
        f = lib.cblas_sgemm
        f.restype = None
        f.argtypes = [ctypes.c_int] * 6 + [ctypes.c_float, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p,
                                           ctypes.c_int, ctypes.c_float, ctypes.c_void_p, ctypes.c_int]
        return name, f
    return None, None


def section_matmul(t, sizes, warmup, reps, threads, quick):
    _, sgemm = openblas_sgemm()
    for n in sizes:
        a, b = filled((n, n), 5, -1.0, 2.0), filled((n, n), 6, -1.0, 2.0)
        c = torch.empty((n, n))
        row_major, no_trans = 101, 111

        def blas():
            sgemm(row_major, no_trans, no_trans, n, n, n, 1.0, a.data_ptr(), n, b.data_ptr(), n, 0.0,
                  c.data_ptr(), n)

        def ours():
            torch.matmul(a, b)

        if sgemm:
            blas()
            err = (torch.matmul(a, b) - c).abs().max().item()
            if err > 1e-4 * n:
                sys.exit("compare_torch: torch.matmul differs from cblas_sgemm by %g" % err)
        for _ in range(warmup):
            if sgemm:
                blas()
            ours()
        tb, tt = [], []
        for _ in range(reps):
            t0 = time.perf_counter()
            if sgemm:
                blas()
            t1 = time.perf_counter()
            ours()
            t2 = time.perf_counter()
            tb.append(t1 - t0)
            tt.append(t2 - t1)
        # torch.matmul right after an op on the intra-op (OpenMP) threads, each round after a
        # pause that lets those threads stop spinning, as in ctbench.
        x = filled((1 << 17,), 7, -1.0, 2.0)
        tb2, ta = [], []
        for _ in range(reps):
            time.sleep(0.03)
            t0 = time.perf_counter()
            if sgemm:
                blas()
            t1 = time.perf_counter()
            torch.add(x, x)
            t2 = time.perf_counter()
            ours()
            t3 = time.perf_counter()
            tb2.append(t1 - t0)
            ta.append(t3 - t2)
        flops = 2.0 * n * n * n
        size = "%d^3" % n
        if sgemm:
            t.row("matmul", "cblas_sgemm (direct)", size, threads, reps, min(tb), statistics.median(tb),
                  flops / min(tb) * 1e-9, "GFLOP/s")
            ratio = paired_ratio(tb, tt)
            t.row("matmul", "torch.matmul", size, threads, reps, min(tt), statistics.median(tt),
                  flops / min(tt) * 1e-9, "GFLOP/s", "sgemm", ratio, None if quick else ">= 95% of sgemm",
                  ratio >= 0.95)
            t.row("matmul", "torch.matmul after OpenMP op*", size, threads, reps, min(ta), statistics.median(ta),
                  flops / statistics.median(ta) * 1e-9, "GFLOP/s", "sgemm", paired_ratio(tb2, ta))
        else:
            t.row("matmul", "torch.matmul", size, threads, reps, min(tt), statistics.median(tt),
                  flops / min(tt) * 1e-9, "GFLOP/s")


def section_overhead(t, batches, per_batch, warmup_iters, quick):
    a, b = torch.full((1,), 1.5), torch.full((1,), 2.5)
    a_grad = torch.full((1,), 1.5).requires_grad_(True)
    rows = [("torch.add, no grad", a, "< 1.5 us", 1.5), ("torch.add, recording grad", a_grad, "< 3 us", 3.0)]
    add = torch.add
    for name, x, target, limit in rows:
        for _ in range(warmup_iters):
            add(x, b)
        samples = []
        loop = range(per_batch)
        for _ in range(batches):
            t0 = time.perf_counter()
            for _ in loop:
                add(x, b)
            samples.append((time.perf_counter() - t0) / per_batch)
        median = statistics.median(samples)
        t.row("overhead", name, "1 elem", 1, batches * per_batch, min(samples), median, median * 1e6, "us",
              target=None if quick else target, met=median * 1e6 < limit)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes and few repetitions")
    p.add_argument("--threads", type=int, default=ctensor_threads(), help="torch threads (default: ctensor's)")
    p.add_argument("--reps", type=int, default=0, help="repetitions of each large measurement")
    p.add_argument("--only", default="", help="comma-separated sections: memory,elementwise,matmul,overhead,train")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cpu, or cuda: ctbench's CUDA rows")
    p.add_argument("--ctbench", help="path of ctbench, to run alongside for the ratios to ctensor (train; cuda)")
    p.add_argument("--json", help="also write JSON Lines to this file")
    args = p.parse_args()

    torch.set_num_threads(args.threads)
    n = 1 << 22 if args.quick else 1 << 26
    reps = args.reps or (3 if args.quick else 10)
    warmup = 1 if args.quick else 2
    only = set(filter(None, args.only.split(",")))
    enabled = lambda s: not only or s in only  # noqa: E731

    json_file = open(args.json, "w") if args.json else None
    t = Table(json_file, args.device)
    blas_name, _ = openblas_sgemm()
    t.header(dict(torch=torch.__version__, date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                  threads=torch.get_num_threads(), blas=blas_name or "none", quick=args.quick))
    if args.device == "cuda":
        import torch_cuda
        torch_cuda.run(t, args, enabled, json_file)
        if json_file:
            json_file.close()
        return
    with torch.no_grad():
        if enabled("memory") or enabled("elementwise"):
            section_bandwidth(t, n, warmup, reps, args.threads, args.quick, enabled("memory"), enabled("elementwise"))
        if enabled("matmul"):
            section_matmul(t, (256, 512) if args.quick else (1024, 2048), warmup, reps, args.threads, args.quick)
    if enabled("overhead"):
        if args.quick:
            section_overhead(t, 100, 50, 5000, True)
        else:
            section_overhead(t, 2000, 100, 20000, False)
    if enabled("train"):
        import torch_train
        torch_train.section_train(t, "cpu", args.quick, args.reps or (2 if args.quick else 5), args.threads,
                                  args.ctbench)
    print("Throughput (GB/s, GFLOP/s) is from the best repetition; overheads (us) are medians.\n"
          "GB/s counts bytes read + written: copy 2N, add/mul 3N, relu 2N, sum N (x 4 bytes).\n"
          "vs reference: median over rounds of the ratio to the reference measured in the same round.\n"
          "* torch.matmul right after a torch.add on OpenMP threads (128 Ki elements): GFLOP/s from the median.")
    if json_file:
        json_file.close()


if __name__ == "__main__":
    main()
