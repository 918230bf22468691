#!/usr/bin/python3
"""Reference numbers for tests/test_loss.c and tests/test_norm.c, from PyTorch 1.13.

Run: /usr/bin/python3 tests/data/gen_loss_refs.py
and paste the printed constants into the C tests (the tests do not need Python).

Inputs are closed-form (no random generator), float64, so the C tests rebuild them exactly:
    logits[i] = sin(0.7 i + 0.3) * 3          (i the flat index)
    other[i]  = cos(1.3 i + 0.1)
"""
import math

import torch
import torch.nn.functional as F

torch.set_default_dtype(torch.float64)


def seq(n, f):
    return torch.tensor([f(i) for i in range(n)])


def logits_of(shape):
    n = math.prod(shape)
    return seq(n, lambda i: math.sin(0.7 * i + 0.3) * 3).reshape(shape)


def other_of(shape):
    n = math.prod(shape)
    return seq(n, lambda i: math.cos(1.3 * i + 0.1)).reshape(shape)


def show(name, t):
    vals = ", ".join("%.17g" % v for v in t.detach().reshape(-1).tolist())
    print("static const double %s[] = {%s};" % (name, vals))


def grad_of(f, x):
    x = x.clone().requires_grad_()
    y = f(x)
    y.backward(torch.ones_like(y) if y.dim() else None)
    return y.detach(), x.grad


# Cross-entropy (4, 3): weights, label smoothing 0.1, one ignored target (-100).
x = logits_of((4, 3))
t = torch.tensor([0, 2, -100, 1])
w = torch.tensor([0.2, 1.0, 3.0])
for red in ["mean", "sum", "none"]:
    y, g = grad_of(lambda z: F.cross_entropy(z, t, weight=w, label_smoothing=0.1, reduction=red), x)
    show("CE_A_%s" % red.upper(), y)
    show("CE_A_%s_GRAD" % red.upper(), g)

# Cross-entropy (2, 3, 2) with spatial targets, ignore_index 1 (a valid class), weights,
# smoothing 0.2, mean.
x = logits_of((2, 3, 2))
t = torch.tensor([[0, 1], [2, 0]])
y, g = grad_of(lambda z: F.cross_entropy(z, t, weight=w, ignore_index=1, label_smoothing=0.2), x)
show("CE_B", y)
show("CE_B_GRAD", g)

# NLL (4, 3) of log-softmax, weights, ignore -100, mean.
x = F.log_softmax(logits_of((4, 3)), 1)
t = torch.tensor([0, 2, -100, 1])
y, g = grad_of(lambda z: F.nll_loss(z, t, weight=w), x)
show("NLL_A", y)
show("NLL_A_GRAD", g)

# BCE with logits (2, 3): targets in [0, 1], weight (2, 1), pos_weight (3), mean; gradients
# with respect to logits and targets.
x = logits_of((2, 3)).requires_grad_()
yt = ((other_of((2, 3)) + 1) / 2).requires_grad_()
bw = torch.tensor([[0.5], [2.0]])
pw = torch.tensor([1.0, 3.0, 0.25])
loss = F.binary_cross_entropy_with_logits(x, yt, weight=bw, pos_weight=pw)
loss.backward()
show("BCE_A", loss)
show("BCE_A_GRAD_X", x.grad)
show("BCE_A_GRAD_Y", yt.grad)

# Regression losses (2, 5), mean: smooth L1 (beta 0.5), Huber (delta 0.7).
x = logits_of((2, 5)) / 3
yt = other_of((2, 5))
show("SMOOTH_L1_A", F.smooth_l1_loss(x, yt, beta=0.5))
show("HUBER_A", F.huber_loss(x, yt, delta=0.7))

# KL divergence (3, 4): log-probabilities against probabilities (one 0), batchmean.
x = F.log_softmax(logits_of((3, 4)), 1)
p = F.softmax(other_of((3, 4)) * 2, 1)
p[1, 2] = 0.0
xg = x.clone().requires_grad_()
pg = p.clone().requires_grad_()
loss = F.kl_div(xg, pg, reduction="batchmean")
loss.backward()
show("KL_A", loss)
show("KL_A_GRAD_X", xg.grad)
show("KL_A_GRAD_T", pg.grad)

# Distillation at T = 2 on (3, 4) logits: KL(softmax(t/T) || softmax(s/T)) * T^2, batchmean.
s = logits_of((3, 4)).requires_grad_()
te = other_of((3, 4)) * 4
T = 2.0
loss = F.kl_div(F.log_softmax(s / T, 1), F.log_softmax(te / T, 1), reduction="batchmean", log_target=True) * T * T
loss.backward()
show("DISTILL_A", loss)
show("DISTILL_A_GRAD", s.grad)

# Batch norm (4, 3, 2) in training, momentum 0.1, 3 steps on the same batch; running stats
# start at 0 and 1.
x = logits_of((4, 3, 2))
bn = torch.nn.BatchNorm1d(3, momentum=0.1, eps=1e-5)
bn.train()
for _ in range(3):
    y = bn(x)
show("BN_RUNNING_MEAN", bn.running_mean)
show("BN_RUNNING_VAR", bn.running_var)
show("BN_Y", y)
