"""Training-step cost of the logit-pairing, distillation and Parseval defenses on the MNIST LeNet, each timed in
the same process against the plain PyTorch loop written from its paper, and against the objective it extends.

Rows (one optimizer step on a batch of ``--batch`` images; CPU time of this process, rotating order, paired
ratios over ``--rounds`` rounds):

- ``alp``: LogitPairing(PGD, adversarial=λ) vs AdversarialTraining(PGD, clean_weight=0.5), the same
  step without the pairing term (target: pairing overhead <= 5 %), and vs a hand-written PyTorch PGD + mixed
  cross-entropy + ALP step (Kannan et al.);
- ``clp_squeeze``: clean-only LogitPairing(clean=, squeeze=) vs a plain cross-entropy step and vs a hand-written
  CLP + squeezing step;
- ``distillation``: Distillation(teacher, T) vs a hand-written soft-label step (teacher forward, log-softmax at T);
- ``parseval``: one Parseval(beta, 0.3) retraction vs one plain LeNet training step (target: <= 10 %) and vs a
  hand-written per-layer retraction of the sampled rows.

Every row first checks that robustkit's loss (or retracted weights) equals the hand-written one.

    OMP_NUM_THREADS=1 python bench/defenses.py [--rounds 7] [--batch 128]
"""
from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.nn import functional as F

import harness
from robustkit.attacks import PGD
from robustkit.defenses import AdversarialTraining, Distillation, LogitPairing, Parseval
from robustkit.models import LeNet


def plain_pgd(model, x, y, eps, step, steps):
    """Madry et al.'s L-inf PGD from x (no random start), written out."""
    x_adv = x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y), x_adv)
        x_adv = torch.min(torch.max(x_adv.detach() + step * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def plain_alp_loss(model, x, y, lam, eps, step, steps):
    model.eval()
    x_adv = plain_pgd(model, x, y, eps, step, steps)
    model.train()
    z, za = model(x), model(x_adv)
    return 0.5 * F.cross_entropy(z, y) + 0.5 * F.cross_entropy(za, y) + lam * ((z - za) ** 2).sum(1).mean()


def plain_clp_loss(model, x, y, lam_clp, lam_sq, perm):
    z = model(x)
    half = len(x) // 2
    a, b = perm[:half], perm[half:2 * half]
    return F.cross_entropy(z, y) + lam_clp * ((z[a] - z[b]) ** 2).sum(1).mean() + lam_sq * (z ** 2).sum(1).mean()


def plain_distill_loss(student, teacher, x, temperature):
    with torch.no_grad():
        p = F.softmax(teacher(x) / temperature, dim=1)
    return -(p * F.log_softmax(student(x) / temperature, dim=1)).sum(1).mean()


def plain_parseval(model, beta, rows_per_layer):
    with torch.no_grad():
        for module, rows in rows_per_layer:
            w = module.weight.view(module.weight.shape[0], -1)
            ws = w[rows]
            w[rows] = (1 + beta) * ws - beta * ws @ ws.t() @ ws


def stepper(model, loss_fn):
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn().backward()
        opt.step()
    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--pgd-steps", type=int, default=10)
    args = harness.parse_arguments(parser, threads=1, clock="cpu")
    from robustkit.datasets import mnist

    x, y = mnist("train")[:args.batch]
    eps, step, steps, lam = 0.3, 0.03, args.pgd_steps, 0.5
    rows = []

    # ---- ALP ---------------------------------------------------------------------------------------------
    torch.manual_seed(0)
    model = LeNet().train()
    pgd = PGD(model, eps=eps, step_size=step, steps=steps, random_start=False)
    alp = LogitPairing(pgd, adversarial=lam)
    at = AdversarialTraining(pgd, clean_weight=0.5)
    check = harness.check_close("ALP loss vs hand-written", float(alp(model, x, y).loss.detach()),
                                float(plain_alp_loss(model, x, y, lam, eps, step, steps).detach()), rtol=1e-4)
    t = harness.timeit({"LogitPairing(ALP)": stepper(model, lambda: alp(model, x, y).loss),
                        "AdversarialTraining": stepper(model, lambda: at(model, x, y).loss),
                        "plain PyTorch ALP": stepper(model, lambda: plain_alp_loss(model, x, y, lam, eps, step,
                                                                                   steps))},
                       rounds=args.rounds, clock=args.clock)
    rows.append({"row": "alp", "check": check, "pgd_steps": steps,
                 **t.to_json(("AdversarialTraining", "plain PyTorch ALP"))})

    # ---- clean-only CLP + squeezing ------------------------------------------------------------------------
    gen_seed = 5
    clp = LogitPairing(None, clean=lam, squeeze=0.05, generator=torch.Generator().manual_seed(gen_seed))
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(gen_seed))
    check = harness.check_close("CLP loss vs hand-written", float(clp(model, x, y).loss.detach()),
                                float(plain_clp_loss(model, x, y, lam, 0.05, perm).detach()), rtol=1e-5)
    t = harness.timeit({"LogitPairing(CLP+squeeze)": stepper(model, lambda: clp(model, x, y).loss),
                        "plain cross-entropy": stepper(model, lambda: F.cross_entropy(model(x), y)),
                        "plain PyTorch CLP": stepper(model, lambda: plain_clp_loss(model, x, y, lam, 0.05, perm))},
                       rounds=args.rounds, clock=args.clock)
    rows.append({"row": "clp_squeeze", "check": check, **t.to_json(("plain cross-entropy", "plain PyTorch CLP"))})

    # ---- distillation --------------------------------------------------------------------------------------
    teacher = LeNet().eval()
    dist = Distillation(teacher, temperature=100.0)
    check = harness.check_close("distillation loss vs hand-written", float(dist(model, x, y).loss.detach()),
                                float(plain_distill_loss(model, teacher, x, 100.0).detach()), rtol=1e-5)
    t = harness.timeit({"Distillation": stepper(model, lambda: dist(model, x, y).loss),
                        "plain PyTorch distillation": stepper(model, lambda: plain_distill_loss(model, teacher, x,
                                                                                                100.0)),
                        "plain cross-entropy": stepper(model, lambda: F.cross_entropy(model(x), y))},
                       rounds=args.rounds, clock=args.clock)
    rows.append({"row": "distillation", "check": check,
                 **t.to_json(("plain PyTorch distillation", "plain cross-entropy"))})

    # ---- Parseval ------------------------------------------------------------------------------------------
    constraint = Parseval(beta=1e-4, fraction=0.3, generator=torch.Generator().manual_seed(1))
    layers = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    copy = LeNet()
    copy.load_state_dict(model.state_dict())
    copy_layers = [m for m in copy.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    g = torch.Generator().manual_seed(1)
    rows_per_layer = [(m, torch.randperm(m.weight.shape[0], generator=g)[:max(1, round(0.3 * m.weight.shape[0]))])
                      for m in copy_layers]
    constraint(model)
    plain_parseval(copy, 1e-4, rows_per_layer)
    check = harness.check_close("Parseval weights vs hand-written", torch.cat([m.weight.flatten() for m in layers]),
                                torch.cat([m.weight.flatten() for m in copy_layers]), atol=1e-6)
    train_step = stepper(model, lambda: F.cross_entropy(model(x), y))
    t = harness.timeit({"Parseval retraction": lambda: constraint(model),
                        "plain PyTorch retraction": lambda: plain_parseval(copy, 1e-4, rows_per_layer),
                        "LeNet training step": train_step},
                       rounds=args.rounds, clock=args.clock, number=5)
    rows.append({"row": "parseval", "check": check,
                 **t.to_json(("LeNet training step", "plain PyTorch retraction"))})

    for row in rows:
        ratios = {k: {m: round(v, 3) for m, v in r.items()} for k, r in row["paired_ratios"].items()}
        print(row["row"], {m: round(s * 1e3, 2) for m, s in row["seconds"].items()}, "ms;", ratios)
    harness.Result("defenses", rows=rows, notes={"batch": args.batch, "model": "LeNet", "eps": eps,
                                                 "machine": "2 shared cores, other jobs running"}).write()


if __name__ == "__main__":
    main()
