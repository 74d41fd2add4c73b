"""The Defendr seed's Table 1 and Table 3 on MNIST (and CIFAR-10), as the seed measured them and under adaptive
attacks.

Defendr's ImageNet subset and ResNet-101 are not available here. On MNIST the defenses sit around the zoo's
trained LeNet; on CIFAR-10 (``--data cifar10``) around the small CNN of ``robustkit.reproduce.defendr``,
trained here with ``rk.training.fit`` on the shipped 50k training images and tested on the shipped 1,000 test
images. The rows (the seed's Table 1, each with and without adversarial training, plus HGD + randomization):

- baseline: the undefended classifier; ``+ AT``: fine-tuned with ``AdversarialTraining`` (50/50 clean and
  adversarial minibatch, the seed's Sec. 4.1);
- CLP: clean logit pairing with logit squeezing (``LogitPairing(None, clean=0.5, squeeze=0.05)``); ``+ AT``: the
  same terms on the adversarial-training loss;
- ALP: adversarial logit pairing with the clean cross-entropy only (``clean_weight=1``: the adversarial images
  enter the pairing term, not the classification loss); ``+ AT``: Kannan et al.'s ALP on the mixed minibatch;
- DUNET: ``GuidedDenoiser`` with a ``DUNet`` trained by ``train_denoiser`` (HGD's logits guide) in front of the
  baseline; ``+ AT``: in front of the adversarially trained classifier, its denoiser guided by that classifier;
- randomization: ``RandomResizePad`` (Xie et al.; scale 0.75-1, zero padding) around the baseline / the
  adversarially trained classifier; DUNET + randomization: around the guided-denoiser pipelines;
- Table 3: ``ScoreEnsemble`` (normalised-score sum) of DUNET + AT, ALP + AT and CLP, the seed's members.

Every adversarially trained model and every denoiser sees the seed's mixture of attacks: FGSM and PGD at both
budgets, one attack per batch in turn (the seed's Sec. 4.1 and 6.1).

Columns, at each eps (L-inf, [0, 1] pixels):
- the seed's: clean accuracy, and accuracy when 50% / 100% of the test set is FGSM crafted once on the
  *undefended* classifier (the seed's offline adversarial sets);
- FGSM on the defense itself (one forward);
- adaptive: PGD-40 through the whole differentiable pipeline; PGD-40 with BPDA (the denoiser's backward
  replaced by the identity) on the denoiser rows; AutoAttack on the first ``--aa-images`` images (``fast``:
  APGD-CE + APGD-T, or ``--aa-version``; ``rand``: APGD-CE and APGD-DLR with EOT-20, on the randomized rows,
  whose APGD-CE-with-EOT stage and the suite's own robust count, judged by the mean logits of 20 draws, are
  also reported).
A randomized model's accuracy is the mean over ``--draws`` draws of its randomness. Each cell is cached in
``--out`` with its per-image results and CPU time, so an interrupted run resumes where it stopped; the summary
compares each row's worst case over the adaptive attacks with the baseline's on the same images, and marks
whether the seed's gain (its 100% FGSM column over the baseline's) survives.

    python bench/defendr_input_mnist.py --images 1000 --aa-images 250              # MNIST, both eps
    python bench/defendr_input_mnist.py --data cifar10 --rows baseline "baseline + AT" randomization DUNET
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import pathlib
import sys
import time
from typing import Callable, Dict, List, Optional

import torch
from torch import nn

import harness
from data import REPO, mnist_lenet, mnist_split

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import robustkit as rk  # noqa: E402
from robustkit.defenses import (AdversarialTraining, DUNet, GuidedDenoiser, LogitPairing,  # noqa: E402
                                RandomResizePad, ScoreEnsemble, train_denoiser)
from robustkit.reproduce.defendr import TABLE1, TABLE3, cifar_cnn  # noqa: E402

TABLE1_ROWS = ["baseline", "baseline + AT", "CLP", "CLP + AT", "ALP", "ALP + AT", "DUNET", "DUNET + AT",
               "randomization", "randomization + AT", "DUNET + randomization", "DUNET + randomization + AT"]
#: the seed's Table 1 row for each of ours (clean, 50%, 100% FGSM 0.12; None where the seed has '-')
SEED_ROW = {"baseline": "Baseline, No Adv. Train", "baseline + AT": "Baseline, Adv. Train",
            "CLP": "CLP, No Adv. Train", "ALP + AT": "ALP, Adv. Train", "DUNET + AT": "DUNET, Adv. Train",
            "randomization": "Randomization, No Adv. Train", "randomization + AT": "Randomization, Adv. Train"}
#: Table 3's ensembles, from the seed's members: DUNET and ALP adversarially trained, CLP not (its Table 1)
ENSEMBLES = {"ALP + CLP": ("ALP + AT", "CLP"), "DUNET + CLP": ("DUNET + AT", "CLP"),
             "DUNET + ALP": ("DUNET + AT", "ALP + AT"), "DUNET + ALP + CLP": ("DUNET + AT", "ALP + AT", "CLP")}
SEED_COLUMNS = ("clean", "seed fgsm 50%", "seed fgsm 100%")


class RoundRobin:
    """One attack per call in turn: the seed's mixture of attacks and budgets for adversarial training."""

    def __init__(self, attacks):
        self.attacks = list(attacks)
        self.models = self.attacks[0].models
        self.calls = 0

    def __call__(self, x, y):
        attack = self.attacks[self.calls % len(self.attacks)]
        self.calls += 1
        return attack(x, y)


def mixture(model: nn.Module, eps_list, steps: int) -> List:
    out = []
    for eps in eps_list:
        out += [rk.attacks.FGSM(model, eps=eps), rk.attacks.PGD(model, eps=eps, step_size=eps / 4, steps=steps)]
    return out


def expected_correct(model: nn.Module, x, y, draws: int, batch: int = 500) -> torch.Tensor:
    """``[N]``: each image's accuracy, the mean over ``draws`` forwards (1 for a deterministic model)."""
    reseed(model)
    with torch.no_grad():
        return torch.cat([torch.stack([model(x[i:i + batch]).argmax(1) == y[i:i + batch] for _ in range(draws)])
                          .float().mean(0) for i in range(0, len(x), batch)])


def reseed(model: nn.Module) -> None:
    """Restart every randomized layer's generator, so a cell gives the same draws however the run resumed."""
    for m in model.modules():
        if isinstance(m, RandomResizePad) and m.generator is not None:
            m.generator.manual_seed(0)


class Cache:
    """The finished cells (``row|eps|column`` -> per-image results and CPU seconds), one JSON per eps."""

    def __init__(self, out: pathlib.Path, eps: float):
        self.path = out / f"cells-{eps:g}.json"
        self.cells: Dict[str, dict] = json.loads(self.path.read_text()) if self.path.exists() else {}

    def get(self, row: str, column: str, fn: Callable[[], dict]) -> dict:
        key = f"{row}|{column}"
        if key not in self.cells:
            cpu, wall = time.process_time(), time.perf_counter()
            value = fn()
            value["cpu_s"], value["wall_s"] = time.process_time() - cpu, time.perf_counter() - wall
            self.cells[key] = value
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(self.cells))
            tmp.replace(self.path)
            n = len(value["correct"]) if "correct" in value else 0
            acc = sum(value["correct"]) / n if n else float("nan")
            print(f"[{time.strftime('%H:%M:%S')}] {row} | {column}: {100 * acc:.1f}% on {n} "
                  f"(cpu {value['cpu_s']:.0f} s, wall {value['wall_s']:.0f} s)", flush=True)
        return self.cells[key]


class Setup:
    """The data, the classifiers, the denoisers and the defended pipelines of one data set."""

    def __init__(self, args, out: pathlib.Path):
        self.args, self.out = args, out
        if args.data == "mnist":
            self.train = mnist_split("train")
            x, y = mnist_split("test")
            self.eps = args.eps or [0.12, 0.3]
            self.channels, self.widths = 1, tuple(args.denoiser_widths or (8, 16, 32, 32))
        else:
            root = REPO.parent / "shared" / "data" / "cifar10"
            self.train = rk.datasets.cifar10(root, "train").tensors
            x, y = rk.datasets.cifar10(root, "test").tensors
            # the seed's 0.12 and 0.3 were on inputs normalised by std ~0.225 (as robustkit.reproduce.defendr)
            self.eps = args.eps or [0.12 * 0.225, 0.3 * 0.225]
            self.channels, self.widths = 3, tuple(args.denoiser_widths or (8, 16, 32, 32))
        self.x, self.y = x[:args.images].contiguous(), y[:args.images].contiguous()
        self.classifiers: Dict[str, nn.Module] = {}
        self.denoisers: Dict[str, nn.Module] = {}

    # ---- training ---------------------------------------------------------------------------------------
    def _timed(self, name: str, fn):
        """Runs a training and files its CPU seconds in ``train_seconds.json`` (kept across resumed runs)."""
        cpu = time.process_time()
        result = fn()
        path = self.out / "train_seconds.json"
        seconds = json.loads(path.read_text()) if path.exists() else {}
        seconds[name] = time.process_time() - cpu
        path.write_text(json.dumps(seconds, indent=1))
        return result

    @property
    def train_seconds(self) -> Dict[str, float]:
        path = self.out / "train_seconds.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def baseline(self) -> nn.Module:
        if "baseline" not in self.classifiers:
            if self.args.data == "mnist":
                model = mnist_lenet()
            else:
                model = self._fit("baseline", lambda: cifar_cnn(self.args.cifar_width), None,
                                  epochs=self.args.base_epochs, init=None)
            for p in model.parameters():
                p.requires_grad_(False)
            self.classifiers["baseline"] = model.eval()
        return self.classifiers["baseline"]

    def _fit(self, name: str, build, objective_fn, *, epochs: int, init: Optional[nn.Module]) -> nn.Module:
        path = self.out / f"{slug(name)}.pt"
        model = build() if init is None else copy.deepcopy(init)
        for p in model.parameters():
            p.requires_grad_(True)
        if path.exists():
            model.load_state_dict(torch.load(path, weights_only=True))
            return model.eval()
        print(f"[{time.strftime('%H:%M:%S')}] training {name}", flush=True)
        n = self.args.train_images
        data = (self.train[0][:n], self.train[1][:n])

        def run():
            rk.training.fit(model, data, objective_fn(model) if objective_fn else None, epochs=epochs,
                            batch_size=128, optimizer="adam", lr=1e-3, seed=0, progress=False,
                            checkpoint_dir=self.out / "ckpt" / slug(name), resume=True)
        self._timed(name, run)
        torch.save(model.state_dict(), path)
        return model.eval()

    def classifier(self, name: str) -> nn.Module:
        """``baseline``, ``AT``, ``CLP``, ``CLP + AT``, ``ALP``, ``ALP + AT``: fine-tuned from the baseline."""
        if name in self.classifiers:
            return self.classifiers[name]
        base = self.baseline()
        eps, steps = self.eps, self.args.train_pgd_steps
        objectives = {
            "AT": lambda m: AdversarialTraining(RoundRobin(mixture(m, eps, steps)), clean_weight=0.5),
            "CLP": lambda m: LogitPairing(None, clean=0.5, squeeze=0.05),
            "CLP + AT": lambda m: LogitPairing(RoundRobin(mixture(m, eps, steps)), clean=0.5, squeeze=0.05,
                                               clean_weight=0.5),
            "ALP": lambda m: LogitPairing(RoundRobin(mixture(m, eps, steps)), adversarial=0.5, clean_weight=1.0),
            "ALP + AT": lambda m: LogitPairing(RoundRobin(mixture(m, eps, steps)), adversarial=0.5,
                                               clean_weight=0.5)}
        model = self._fit(name, None, objectives[name], epochs=self.args.epochs, init=base)
        for p in model.parameters():
            p.requires_grad_(False)
        self.classifiers[name] = model
        return model

    def denoiser(self, guide: str) -> nn.Module:
        """The HGD denoiser trained in front of classifier ``guide`` on its own mixture of attacks."""
        if guide in self.denoisers:
            return self.denoisers[guide]
        target = self.classifier(guide) if guide != "baseline" else self.baseline()
        den = DUNet(self.channels, self.widths)
        path = self.out / f"dunet-{slug(guide)}.pt"
        if path.exists():
            den.load_state_dict(torch.load(path, weights_only=True))
        else:
            print(f"[{time.strftime('%H:%M:%S')}] training the denoiser for {guide}", flush=True)
            n = self.args.denoiser_images
            attacks = mixture(target, self.eps, self.args.train_pgd_steps)
            self._timed(f"DUNET ({guide})", lambda: train_denoiser(
                den, target, (self.train[0][:n], self.train[1][:n]), attacks, guide="logits",
                epochs=self.args.denoiser_epochs, batch_size=100, optimizer="adam", lr=1e-3, seed=0,
                progress=False, checkpoint_dir=self.out / "ckpt" / f"dunet-{slug(guide)}", resume=True))
            torch.save(den.state_dict(), path)
        for p in den.parameters():
            p.requires_grad_(False)
        self.denoisers[guide] = den.eval()
        return self.denoisers[guide]

    def pipeline(self, row: str):
        """``(model, bpda_model or None, randomized)`` for a row of Table 1 or Table 3."""
        if row in ENSEMBLES:
            members = [self.pipeline(m)[0] for m in ENSEMBLES[row]]
            return ScoreEnsemble(members).eval(), None, False
        adv = row.endswith("+ AT")
        guide = "AT" if adv else "baseline"
        size = tuple(self.x.shape[-2:])
        if row.startswith("DUNET"):
            classifier = self.classifier(guide) if adv else self.baseline()
            hgd = GuidedDenoiser(self.denoiser(guide), classifier).eval()
            bpda = nn.Sequential(rk.attacks.BPDA(hgd.denoise), classifier).eval()
            if "randomization" in row:
                return (RandomResizePad(hgd, size, min_scale=0.75, max_scale=1.0, seed=0).eval(),
                        RandomResizePad(bpda, size, min_scale=0.75, max_scale=1.0, seed=0).eval(), True)
            return hgd, bpda, False
        if row.startswith("randomization"):
            classifier = self.classifier(guide) if adv else self.baseline()
            return RandomResizePad(classifier, size, min_scale=0.75, max_scale=1.0, seed=0).eval(), None, True
        if row == "baseline":
            return self.baseline(), None, False
        name = {"baseline + AT": "AT"}.get(row, row)
        return self.classifier(name), None, False


def evaluate_row(setup: Setup, cache: Cache, row: str, eps: float, seed_adv: torch.Tensor) -> None:
    args = setup.args
    x, y = setup.x, setup.y
    model, bpda, randomized = setup.pipeline(row)
    draws = args.draws if randomized else 1
    half = len(x) // 2

    def seed_cells():
        clean = expected_correct(model, x, y, draws)
        adv = expected_correct(model, seed_adv, y, draws)
        return {"correct": clean.tolist(), "adv": adv.tolist(),
                "half": torch.cat([clean[:half], adv[half:]]).tolist()}
    cache.get(row, "seed", seed_cells)

    def attacked(attack):
        def fn():
            reseed(model)
            x_adv = torch.cat([attack(x[i:i + 500], y[i:i + 500]) for i in range(0, len(x), 500)])
            return {"correct": expected_correct(model, x_adv, y, draws).tolist()}
        return fn
    cache.get(row, "fgsm on the defense", attacked(rk.attacks.FGSM(model, eps=eps)))
    cache.get(row, "pgd-40", attacked(rk.attacks.PGD(model, eps=eps, steps=40, step_size=eps / 10)))
    if bpda is not None:
        def bpda_fn():
            reseed(bpda)
            return attacked(rk.attacks.PGD(bpda, eps=eps, steps=40, step_size=eps / 10))()
        cache.get(row, "pgd-40 bpda", bpda_fn)
    heavy = randomized and row.startswith("DUNET") or (row in ENSEMBLES and "DUNET" in row)
    n_aa = min(len(x), args.heavy_images if heavy else args.aa_images)
    version = "rand" if randomized else args.aa_version

    def aa_fn():
        reseed(model)
        aa = rk.attacks.AutoAttack(model, eps=eps, version=version)
        x_adv = aa(x[:n_aa], y[:n_aa])
        out = {"correct": expected_correct(model, x_adv, y[:n_aa], draws).tolist(), "counts": aa.last_counts,
               "version": version}
        return out
    cache.get(row, "autoattack", aa_fn)


def seed_sets(setup: Setup, eps: float) -> torch.Tensor:
    """The seed's adversarial test set: FGSM crafted once on the undefended classifier (cached)."""
    path = setup.out / f"seed-fgsm-{eps:g}-{len(setup.x)}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    base = setup.baseline()
    adv = torch.cat([rk.attacks.FGSM(base, eps=eps)(setup.x[i:i + 500], setup.y[i:i + 500])
                     for i in range(0, len(setup.x), 500)])
    torch.save(adv, path)
    return adv


def mean(values) -> float:
    return sum(values) / len(values) if values else float("nan")


def summarise(setup: Setup, caches: Dict[float, Cache], rows: List[str]) -> List[dict]:
    """One dict per (row, eps) with every column, the worst case over the adaptive attacks on the AutoAttack
    images, and whether the seed's gain over the baseline survives it (a paired difference over > 2 SE)."""
    out = []
    for eps, cache in caches.items():
        cells = cache.cells

        def cell(row, column):
            return cells.get(f"{row}|{column}")

        def worst(row, n):
            columns = [c for c in ("fgsm on the defense", "pgd-40", "pgd-40 bpda", "autoattack")
                       if cell(row, c) is not None]
            if "autoattack" not in columns:
                return None
            return [min(cell(row, c)["correct"][i] for c in columns) for i in range(n)]

        for row in rows:
            seed = cell(row, "seed")
            if seed is None:
                continue
            entry = {"defense": row, "eps": eps, "images": len(seed["correct"]), "clean": mean(seed["correct"]),
                     "seed fgsm 50%": mean(seed["half"]), "seed fgsm 100%": mean(seed["adv"])}
            for column in ("fgsm on the defense", "pgd-40", "pgd-40 bpda"):
                if cell(row, column) is not None:
                    entry[column] = mean(cell(row, column)["correct"])
            aa = cell(row, "autoattack")
            if aa is not None:
                n = len(aa["correct"])
                entry["autoattack images"] = n
                entry[f"autoattack ({aa['version']})"] = mean(aa["correct"])
                if aa["version"] == "rand":
                    # robust by the 20-draw mean logits after the APGD-CE (EOT-20) stage alone, and after the
                    # suite: its own robust accuracy. The per-draw accuracy above is higher, because samples
                    # already misclassified on average are returned unattacked and some draws still get them
                    entry["apgd-ce eot-20 (autoattack rand's first stage)"] = aa["counts"][1] / n
                    entry["autoattack (rand), the suite's own count"] = aa["counts"][-1] / n
                entry["pgd-40 on the autoattack images"] = mean(cell(row, "pgd-40")["correct"][:n])
                mine = worst(row, n)
                entry["worst case on the autoattack images"] = mean(mine)
                base = worst("baseline", n) if row != "baseline" else None
                if base is not None:
                    diff = [a - b for a, b in zip(mine, base)]
                    d = mean(diff)
                    se = math.sqrt(sum((v - d) ** 2 for v in diff) / max(1, n - 1) / n)
                    seed_gain = entry["seed fgsm 100%"] - mean(cell("baseline", "seed")["adv"])
                    entry["seed gain over baseline"] = seed_gain
                    entry["adaptive gain over baseline"] = d
                    entry["adaptive gain se"] = se
                    entry["seed gain survives"] = ("no seed gain" if seed_gain <= 0 else
                                                   "yes" if d > 2 * se else "no")
            if setup.args.data == "mnist" and abs(eps - 0.12) < 1e-9 and row in SEED_ROW:
                entry["seed paper (clean, 50%, 100%)"] = TABLE1[SEED_ROW[row]]
            if row in TABLE3 and abs(eps - setup.eps[0]) < 1e-9:
                entry["seed paper (Table 3)"] = (TABLE3[row],)
            entry["cpu_s"] = sum(v.get("cpu_s", 0.0) for k, v in cells.items() if k.startswith(row + "|"))
            out.append(entry)
    return out


def markdown(rows: List[dict]) -> str:
    columns = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        def fmt(c):
            v = r.get(c, "–")
            if isinstance(v, float) and c not in ("eps", "cpu_s") and not c.startswith("adaptive gain se"):
                return f"{100 * v:.1f}%" if not c.endswith("gain over baseline") else f"{100 * v:+.1f}"
            if c == "adaptive gain se" and isinstance(v, float):
                return f"{100 * v:.1f}"
            if c == "cpu_s" and isinstance(v, float):
                return f"{v:.0f}"
            return str(v)
        lines.append("| " + " | ".join(fmt(c) for c in columns) + " |")
    return "\n".join(lines) + "\n"


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("mnist", "cifar10"), default="mnist")
    parser.add_argument("--images", type=int, default=1000, help="test images evaluated")
    parser.add_argument("--aa-images", type=int, default=250, help="of those, the first N AutoAttack runs on")
    parser.add_argument("--heavy-images", type=int, default=100,
                        help="AutoAttack's images on the randomized denoiser rows and the denoiser ensembles")
    parser.add_argument("--aa-version", default="fast", choices=("fast", "standard"),
                        help="AutoAttack on the deterministic rows (randomized rows: rand)")
    parser.add_argument("--draws", type=int, default=5, help="draws a randomized model's accuracy averages")
    parser.add_argument("--train-images", type=int, default=60000, help="classifier training images")
    parser.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs of the trained defenses")
    parser.add_argument("--base-epochs", type=int, default=5, help="CIFAR-10 baseline epochs")
    parser.add_argument("--cifar-width", type=int, default=16)
    parser.add_argument("--train-pgd-steps", type=int, default=7, help="PGD steps of the training mixture")
    parser.add_argument("--denoiser-images", type=int, default=20000, help="denoiser training images")
    parser.add_argument("--denoiser-epochs", type=int, default=1, help="denoiser training epochs")
    parser.add_argument("--denoiser-widths", type=int, nargs="+", default=None)
    parser.add_argument("--eps", type=float, nargs="+", default=None,
                        help="budgets (default: the seed's 0.12 and 0.3; x 0.225 on CIFAR-10)")
    parser.add_argument("--rows", nargs="+", default=None, help="rows to run (default: all, ensembles last)")
    parser.add_argument("--summarise-eps", type=float, nargs="+", default=None,
                        help="eps whose cached cells the result file holds (default: --eps)")
    parser.add_argument("--name", default=None, help="result name (default: defendr_input_<data>)")
    parser.add_argument("--out", default=None, help="run folder (default: runs/defendr_input_<data>)")
    args = harness.parse_arguments(parser, threads=None, clock="wall")
    out = pathlib.Path(args.out or f"runs/defendr_input_{args.data}")
    out.mkdir(parents=True, exist_ok=True)
    start = time.process_time()
    setup = Setup(args, out)
    rows = args.rows or TABLE1_ROWS + list(ENSEMBLES)
    unknown = [r for r in rows if r not in TABLE1_ROWS and r not in ENSEMBLES]
    if unknown:
        raise SystemExit(f"--rows: unknown {unknown}; valid: {TABLE1_ROWS + list(ENSEMBLES)}")
    if "baseline" not in rows:
        rows = ["baseline"] + rows       # every row is compared with the baseline on the same images
    for eps in setup.eps:
        cache = Cache(out, eps)
        adv = seed_sets(setup, eps)
        for row in rows:
            evaluate_row(setup, cache, row, eps, adv)
    summary_eps = args.summarise_eps or setup.eps
    caches = {eps: Cache(out, eps) for eps in summary_eps}
    result = summarise(setup, caches, TABLE1_ROWS + list(ENSEMBLES))
    table = markdown(result)
    (out / "tables.md").write_text(table)
    print(table)
    notes = {"args": vars(args), "data": args.data, "test images": len(setup.x),
             "denoiser widths": list(setup.widths), "train_cpu_s": setup.train_seconds,
             "cpu_s this call": time.process_time() - start,
             "cell cpu_s total": sum(v.get("cpu_s", 0) for c in caches.values() for v in c.cells.values())}
    harness.Result(args.name or f"defendr_input_{args.data}", result, notes=notes).write()


if __name__ == "__main__":
    main()
