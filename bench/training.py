"""Adversarial training speed: robustkit's fit and a user's plain loop around ``atk(x, y)``, against the same loop
on torchattacks, ART's trainers and the model-only floor; correctness first.

Every method fine-tunes the same starting model (the zoo's clean-trained MNIST LeNet, or with ``--model wong``
Wong et al.'s small CNN after one clean epoch) on the same ``--images`` training images, batch 100, Adam (lr 1e-3),
one pass, in the same process:

  PGD-10 (Madry et al.: loss on the PGD examples only), eps ``--eps`` (0.1), step 0.25 eps, random start:
    fit                 rk.training.fit(model, data, rk.defenses.AdversarialTraining(rk.attacks.PGD(...)))
    loop robustkit      for x, y: x_adv = atk(x, y); CE(model(x_adv), y).backward(); opt.step()
    loop torchattacks   the same loop with torchattacks.PGD
    ART                 art.defences.trainer.AdversarialTrainerMadryPGD (nb_epochs=1)
    floor               per batch: 10 x (forward + input gradient) + forward + weight backward + step, no attack
                        logic at all (PyTorch's kernels)
  FGSM training (the loss on the FGSM examples only, as the Defendr seed trains):
    fit / loop robustkit / loop torchattacks as above with FGSM; ART's AdversarialTrainer(FGSM, ratio=1.0);
    floor: one forward + input gradient, then forward, weight backward and step.

Correctness first: one untimed run of each method, then clean and robust accuracy (robustkit PGD-20 at the
training eps on the first ``--eval-images`` test images) of every method must lie within noise of the
torchattacks loop's (``--tolerance``, absolute). Then ``--rounds`` rounds in rotating order, timed on the process
CPU clock (the machine is shared); ratios are paired per round. The non-model share of a step is
``1 - t_floor / t_method``.

    nice python bench/training.py                # LeNet; --model wong for the small CNN; --images 5000
"""
from __future__ import annotations

import argparse
import copy
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

import harness
from data import clean_wong_cnn, mnist_model, mnist_split

import robustkit as rk





class Bench:
    def __init__(self, start: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, step: float, steps: int,
                 batch: int = 100, lr: float = 1e-3):
        self.start_state = copy.deepcopy(start.state_dict())
        self.model = start
        self.x, self.y = x, y
        self.eps, self.step, self.steps, self.batch, self.lr = eps, step, steps, batch, lr
        # every loop sees fit's order for seed 0 (one process: DistributedSampler's permutation of epoch 0)
        self.order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))

    def fresh(self) -> tuple:
        self.model.load_state_dict(self.start_state)
        self.model.train()
        torch.manual_seed(0)
        np.random.seed(0)
        return self.model, torch.optim.Adam(self.model.parameters(), lr=self.lr)

    def batches(self):
        for start in range(0, len(self.x), self.batch):
            rows = self.order[start:start + self.batch]
            yield self.x[rows], self.y[rows]

    # ---- the methods ----------------------------------------------------------------------------------------
    def fit(self, attack_name: str):
        model, _ = self.fresh()
        attack, alpha = self.rk_attack(model, attack_name)
        rk.training.fit(model, (self.x, self.y), rk.defenses.AdversarialTraining(attack, clean_weight=alpha),
                        epochs=1, batch_size=self.batch, optimizer="adam", lr=self.lr, seed=0, progress=False)

    def rk_attack(self, model, attack_name: str):
        if attack_name == "pgd":
            return rk.attacks.PGD(model, eps=self.eps, step_size=self.step, steps=self.steps), 0.0
        return rk.attacks.FGSM(model, eps=self.eps), 0.0

    def ta_attack(self, model, attack_name: str):
        import torchattacks
        if attack_name == "pgd":
            return torchattacks.PGD(model, eps=self.eps, alpha=self.step, steps=self.steps, random_start=True), 0.0
        return torchattacks.FGSM(model, eps=self.eps), 0.0

    def loop(self, library: str, attack_name: str):
        model, opt = self.fresh()
        attack, alpha = (self.rk_attack if library == "robustkit" else self.ta_attack)(model, attack_name)
        for x, y in self.batches():
            x_adv = attack(x, y)
            loss = F.cross_entropy(model(x_adv), y)
            if alpha:
                loss = (1 - alpha) * loss + alpha * F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    def art(self, attack_name: str):
        from art.attacks.evasion import FastGradientMethod
        from art.defences.trainer import AdversarialTrainer, AdversarialTrainerMadryPGD
        from art.estimators.classification import PyTorchClassifier
        model, opt = self.fresh()
        classifier = PyTorchClassifier(model=model, loss=nn.CrossEntropyLoss(), optimizer=opt,
                                       input_shape=tuple(self.x.shape[1:]), nb_classes=10, clip_values=(0.0, 1.0),
                                       device_type="cpu")
        x, y = self.x[self.order].numpy(), self.y[self.order].numpy()
        if attack_name == "pgd":
            trainer = AdversarialTrainerMadryPGD(classifier, nb_epochs=1, batch_size=self.batch, eps=self.eps,
                                                 eps_step=self.step, max_iter=self.steps, num_random_init=1)
            trainer.fit(x, y)
        else:
            trainer = AdversarialTrainer(classifier, FastGradientMethod(classifier, eps=self.eps,
                                                                        batch_size=self.batch), ratio=1.0)
            trainer.fit(x, y, nb_epochs=1, batch_size=self.batch)

    def floor(self, attack_name: str):
        model, opt = self.fresh()
        steps = self.steps if attack_name == "pgd" else 1
        for x, y in self.batches():
            for _ in range(steps):
                harness.floor_step(model, x)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()

    def methods(self, attack_name: str) -> dict:
        return {"fit": lambda: self.fit(attack_name),
                "loop robustkit": lambda: self.loop("robustkit", attack_name),
                "loop torchattacks": lambda: self.loop("torchattacks", attack_name),
                "ART": lambda: self.art(attack_name),
                "floor": lambda: self.floor(attack_name)}


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> dict:
    model.eval()
    attack = rk.attacks.PGD(model, eps=eps, step_size=eps / 8, steps=20, seed=1)
    with torch.no_grad():
        clean = model(x).argmax(1) == y
    adv = attack(x, y)
    with torch.no_grad():
        robust = clean & (model(adv).argmax(1) == y)
    return {"clean_accuracy": clean.double().mean().item(), "robust_accuracy": robust.double().mean().item()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", choices=("lenet", "wong"), default="lenet")
    parser.add_argument("--images", type=int, default=2000, help="training images per run (default 2000)")
    parser.add_argument("--eval-images", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--eps", type=float, default=0.1)
    parser.add_argument("--tolerance", type=float, default=0.06, help="allowed |accuracy - torchattacks loop's|")
    parser.add_argument("--objectives", default="pgd,fgsm")
    parser.add_argument("--art-every-round", action="store_true", help="time ART in every round (slow)")
    args = harness.parse_arguments(parser, threads=1, clock="cpu")
    harness.keep_freed_memory()
    warnings.filterwarnings("ignore")
    if args.model == "lenet":
        start = rk.models.LeNet()
        start.load_state_dict(mnist_model("lenet").state_dict())
    else:
        start = clean_wong_cnn()
    train_x, train_y = mnist_split("train")
    test_x, test_y = mnist_split("test")
    bench = Bench(start, train_x[:args.images].contiguous(), train_y[:args.images].contiguous(), eps=args.eps,
                  step=2.5 * args.eps / 10, steps=10)
    eval_x, eval_y = test_x[:args.eval_images], test_y[:args.eval_images]
    rows = []
    for attack_name in args.objectives.split(","):
        methods = bench.methods(attack_name)
        outcome = {}
        for name, fn in methods.items():          # correctness first: one untimed run each
            fn()
            outcome[name] = accuracy(bench.model, eval_x, eval_y, args.eps)
            print(f"{attack_name} {name}: {outcome[name]}", flush=True)
        reference = outcome["loop torchattacks"]
        for name in ("fit", "loop robustkit", "ART"):
            for key in ("clean_accuracy", "robust_accuracy"):
                harness.check(abs(outcome[name][key] - reference[key]) <= args.tolerance,
                              f"{attack_name} {name}: {key} {outcome[name][key]:.3f} vs torchattacks loop "
                              f"{reference[key]:.3f} (tolerance {args.tolerance})")
        # ART is 5-10x slower than the rest: timed in the first round only unless --art-every-round
        timings = harness.timeit(methods, rounds=args.rounds, warmup=0, clock=args.clock, progress=True,
                                 once=() if args.art_every_round else ("ART",))
        per = {name: float(args.images) for name in methods}
        seconds = timings.median()
        row = {"objective": attack_name, "model": args.model, "images": args.images, "accuracy": outcome,
               **timings.to_json(("floor", "loop torchattacks", "ART"), per),
               "images_per_second": {name: args.images / s for name, s in seconds.items()},
               "non_model_share": {name: 1 - ratio for name, ratio in
                                   timings.paired_ratios("floor").items()}}
        rows.append(row)
        ratios = row["paired_ratios"]
        print(f"{attack_name}: img/s " + ", ".join(f"{k} {v:.0f}" for k, v in row["images_per_second"].items()))
        for ref in ("floor", "loop torchattacks", "ART"):
            print(f"  speed vs {ref}: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios[f"vs {ref}"].items()))
    harness.Result(f"training-{args.model}", rows=rows,
                   notes={"eps": args.eps, "step": 2.5 * args.eps / 10, "steps": 10, "batch": 100, "optimizer": "adam",
                          "lr": 1e-3, "threads": torch.get_num_threads(),
                          "machine": "2 cores shared with other jobs"}).write()


if __name__ == "__main__":
    main()
