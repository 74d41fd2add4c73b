"""Input-side defenses: what the wrapper costs, batched EOT against a hand-written EOT loop, and denoiser
training against a plain PyTorch loop.

1. ``RandomResizePad`` around the trained MNIST LeNet (batch 256, scale 0.75-1, 28 px canvas): the resample
   alone against the LeNet's forward (target: <= 10% of it), and the wrapped model's forward.
2. EOT at n = 10 against ``RandomResizePad(LeNet)``: ``rk.attacks.PGD(..., eot=10)`` (the 10 draws of every
   step in one batched forward) against the loop a researcher writes, 10 forward+backward passes per step.
   Correctness first: on the deterministic LeNet both reach the same robust accuracy; on the random model
   robustkit's is no higher than the hand loop's (within noise). Beside them the model-only floor: the
   randomized model's forward and input gradient on all n * B rows per step, which no EOT can skip, so
   ``hand / floor`` bounds what any batched EOT can gain over the hand loop on this machine (timed with
   robustkit's first-layer input-gradient kernel, as its attacks run, and with PyTorch's kernels only).
3. HGD denoiser training (``rk.defenses.train_denoiser``, logits guide, FGSM examples) against a plain loop
   with the same model, attack, loss and optimizer (target: >= 0.95 of its img/s).

    python bench/input_defenses.py            # 3 rounds
    python bench/input_defenses.py --tiny     # a quick check of the script
"""
from __future__ import annotations

import argparse
import pathlib
import statistics
import sys

import torch
import torch.nn.functional as F

import harness
from data import correctly_classified, mnist_lenet, mnist_split

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import robustkit as rk  # noqa: E402
from robustkit.attacks._conv_routing import routed_convolutions  # noqa: E402
from robustkit.defenses.hgd import hgd_distance  # noqa: E402


def hand_eot_pgd(model, x, y, eps, step_size, steps, draws):
    """PGD-L-inf on the expected loss as a researcher writes it: ``draws`` separate forward+backward per step."""
    x_adv = x.clone()
    for _ in range(steps):
        grad = torch.zeros_like(x)
        for _ in range(draws):
            x_var = x_adv.detach().requires_grad_(True)
            loss = F.cross_entropy(model(x_var), y, reduction="sum")
            grad += torch.autograd.grad(loss, x_var)[0]
        x_adv = torch.min(torch.max(x_adv + step_size * grad.sign(), x - eps), x + eps).clamp(0, 1)
    return x_adv.detach()


def accuracy(model, x, y, draws=1):
    with torch.no_grad():
        return float(sum((model(x).argmax(1) == y).float().mean() for _ in range(draws)) / draws)


def plain_denoiser_loop(denoiser, model, x_train, y_train, attack, batch, lr):
    """HGD training written by hand: FGSM examples of the frozen model, the logits-guided L1 loss, Adam."""
    opt = torch.optim.Adam(denoiser.parameters(), lr=lr)
    denoiser.train()
    for start in range(0, len(x_train), batch):
        x, y = x_train[start:start + batch], y_train[start:start + batch]
        x_adv = attack(x, y).detach()
        with torch.no_grad():
            target = model(x)
        loss = hgd_distance(model(x_adv - denoiser(x_adv)), target)
        opt.zero_grad()
        loss.backward()
        opt.step()


def spread(times: list, reference: list) -> dict:
    """Per-round ratios ``times[i] / reference[i]`` (two calls of the same round): median, quartiles, range."""
    ratios = sorted(t / r for t, r in zip(times, reference))
    q1, median, q3 = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
    return {"median": statistics.median(ratios), "q1": q1, "q3": q3, "min": ratios[0], "max": ratios[-1],
            "rounds": len(ratios)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tiny", action="store_true")
    args = harness.parse_arguments(parser, threads=1, clock="cpu")
    batch, eot_images, train_images, steps = (256, 128, 2000, 10) if not args.tiny else (32, 16, 200, 2)
    rounds = 1 if args.tiny else args.rounds
    lenet = mnist_lenet()
    for p in lenet.parameters():
        p.requires_grad_(False)
    x, y = correctly_classified(lenet, batch)
    rrp = rk.defenses.RandomResizePad(lenet, 28, min_scale=0.75, max_scale=1.0, seed=0).eval()
    rows = {}

    # 1. overhead of the wrapper (10 calls per sample: one resample is ~2 ms, too short to time alone here)
    with torch.no_grad():
        t = harness.timeit({"lenet forward": lambda: lenet(x), "resample only": lambda: rrp.transform(x),
                            "wrapped forward": lambda: rrp(x)}, rounds=max(rounds, 5) * 4, clock=args.clock,
                           number=10)
    fastest = t.minimum()
    share = spread(t.rounds["resample only"], t.rounds["lenet forward"])
    rows["overhead"] = {**t.to_json(("lenet forward",)),
                        "resample / forward": fastest["resample only"] / fastest["lenet forward"],
                        "resample / forward, paired per round": share,
                        "wrapped / forward": fastest["wrapped forward"] / fastest["lenet forward"], "batch": batch}
    print(f"resample = {rows['overhead']['resample / forward']:.3f} of a LeNet forward (fastest rounds; per round "
          f"median {share['median']:.3f}, quartiles {share['q1']:.3f}-{share['q3']:.3f}; target <= 0.10)")

    # 2. batched EOT against the hand loop
    xe, ye = x[:eot_images], y[:eot_images]
    eps, step_size, draws = 0.3, 0.03, 10
    ours = rk.attacks.PGD(lenet, eps=eps, step_size=step_size, steps=steps, random_start=False, eot=draws)
    # on a deterministic model the EOT average is the plain gradient: the two must break the same images
    # (not bitwise: the fused CE gradient rounds differently, and a sign flip of a ~0 coordinate then moves
    # an iterate by a step)
    det = {"robustkit": accuracy(lenet, ours(xe, ye), ye),
           "hand": accuracy(lenet, hand_eot_pgd(lenet, xe, ye, eps, step_size, steps, draws), ye)}
    harness.check(abs(det["robustkit"] - det["hand"]) <= 2 / len(ye) + 0.02,
                  f"EOT PGD and the hand loop disagree on the deterministic LeNet: {det}")
    same = det
    ours_random = rk.attacks.PGD(rrp, eps=eps, step_size=step_size, steps=steps, random_start=False, eot=draws)
    single = rk.attacks.PGD(rrp, eps=eps, step_size=step_size, steps=steps, random_start=False)
    robust = {"robustkit eot": accuracy(rrp, ours_random(xe, ye), ye, draws=5),
              "hand eot": accuracy(rrp, hand_eot_pgd(rrp, xe, ye, eps, step_size, steps, draws), ye, draws=5),
              "one forward": accuracy(rrp, single(xe, ye), ye, draws=5)}
    harness.check(robust["robustkit eot"] <= robust["hand eot"] + 0.05,
                  f"batched EOT is weaker than the hand loop: {robust}")
    x_rows = xe.repeat(draws, 1, 1, 1)

    def model_floor():
        """The work any EOT implementation must do: per step, the randomized model's forward and input
        gradient on all n * B rows, in one call, with the kernels robustkit's attacks use (the first
        convolution's input gradient by robustkit's kernel), and no attack logic."""
        with routed_convolutions():
            for _ in range(steps):
                harness.floor_step(rrp, x_rows)

    def model_floor_torch_kernels():
        """The same floor with PyTorch's kernels throughout: what one batch of n * B rows costs by itself."""
        for _ in range(steps):
            harness.floor_step(rrp, x_rows)

    t = harness.timeit({"robustkit eot": lambda: ours_random(xe, ye),
                        "hand eot": lambda: hand_eot_pgd(rrp, xe, ye, eps, step_size, steps, draws),
                        "model floor": model_floor, "model floor, torch kernels": model_floor_torch_kernels},
                       rounds=rounds, clock=args.clock)
    ratios = t.paired_ratios("hand eot")
    rows["eot"] = {"check_deterministic": same, "robust_accuracy": robust, "draws": draws, "steps": steps,
                   **t.to_json(("hand eot", "model floor")),
                   "speedup per round": spread(t.rounds["hand eot"], t.rounds["robustkit eot"]),
                   "floor speedup per round": spread(t.rounds["hand eot"], t.rounds["model floor"]),
                   "torch-kernel floor speedup per round": spread(t.rounds["hand eot"],
                                                                  t.rounds["model floor, torch kernels"])}
    print(f"EOT n={draws}: {ratios['robustkit eot']:.2f}x the hand loop (target >= 3); the model-only floor on "
          f"n*B rows is {ratios['model floor']:.2f}x it ({ratios['model floor, torch kernels']:.2f}x with PyTorch's "
          f"kernels); robust accuracy {robust}")

    # 3. denoiser training
    x_all, y_all = mnist_split("train")
    xt, yt = x_all[:train_images].contiguous(), y_all[:train_images].contiguous()
    fgsm = rk.attacks.FGSM(lenet, eps=0.3)

    def ours_train():
        torch.manual_seed(0)
        den = rk.defenses.DUNet(1, (16, 32, 64))
        rk.defenses.train_denoiser(den, lenet, (xt, yt), [fgsm], guide="logits", epochs=1, batch_size=100,
                                   optimizer="adam", lr=1e-3, progress=False)

    def plain_train():
        torch.manual_seed(0)
        den = rk.defenses.DUNet(1, (16, 32, 64))
        plain_denoiser_loop(den, lenet, xt, yt, fgsm, 100, 1e-3)

    t = harness.timeit({"train_denoiser": ours_train, "plain loop": plain_train}, rounds=rounds, clock=args.clock)
    rows["denoiser_training"] = {"images": train_images, **t.to_json(("plain loop",)),
                                 "train_denoiser / plain (img/s)": t.paired_ratios("plain loop")["train_denoiser"],
                                 "per round": spread(t.rounds["plain loop"], t.rounds["train_denoiser"])}
    print(f"train_denoiser at {rows['denoiser_training']['train_denoiser / plain (img/s)']:.3f} of the plain loop's "
          f"img/s (target >= 0.95)")
    harness.Result("input_defenses-tiny" if args.tiny else "input_defenses", rows,
                   notes={"targets": {"resample / forward": 0.10, "eot vs hand": 3.0, "denoiser": 0.95}}).write()


if __name__ == "__main__":
    main()
