"""Defendr (Dornadula, Pokle and Yerukola, CS231n 2018): its Tables 1-4, the confusion matrix and Grad-CAM,
on MNIST (and CIFAR-10 when ``--data`` holds it), each table with an adaptive-attack column beside the seed's.

The recipe (the seed's sections 4-6):
- classifiers: a baseline (cross-entropy), adversarial training on a 50/50 clean/adversarial minibatch with
  FGSM or PGD at eps 0.12, clean logit pairing with logit squeezing (CLP), and adversarial logit pairing on
  FGSM examples (ALP);
- HGD: a DUNet denoiser trained with the high-level guide (the baseline's logits) in front of the baseline, on
  FGSM or PGD examples at eps 0.12 or 0.3;
- randomisation: random resize and zero-padding (Xie et al.) around the baseline and the adversarially trained
  baseline;
- the normalised-score ensembles of Table 3 (the last one is Defendr itself).
The seed's attack images were generated once, offline, and fed to every model: here FGSM and PGD crafted on
the undefended baseline, the same images for every model ("seed" columns). The adaptive column attacks each
defence itself: AutoAttack (APGD-CE + APGD-T; APGD-CE alone at the quick scale) on the classifiers and
ensembles, the same through the whole denoiser pipeline plus PGD with BPDA (the denoiser's backward replaced by
the identity) on HGD, APGD-CE with EOT on the randomised models; it reports the worst case over those attacks.
"""
from __future__ import annotations

import dataclasses
import pathlib
from typing import Callable, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

import robustkit as rk
from robustkit.defenses import (AdversarialTraining, DUNet, GuidedDenoiser, LogitPairing, RandomResizePad,
                                ScoreEnsemble, train_denoiser)
from robustkit.eval.gradcam import grad_cam
from robustkit.metrics import confusion_matrix
from robustkit.models import LeNet
from robustkit.reproduce.protocol import Context, Paper
from robustkit.training import fit

# Table 1 (single architectures, FGSM eps 0.12): accuracy % on the clean, half and fully adversarial test sets.
TABLE1 = {"Baseline, No Adv. Train": (90.70, 78.46, 66.22), "Baseline, Adv. Train": (90.40, 80.70, 70.00),
          "CLP, No Adv. Train": (90.85, 78.66, 66.47), "ALP, Adv. Train": (90.75, 80.65, 70.55),
          "DUNET, Adv. Train": (92.4, None, 86.6), "Randomization, No Adv. Train": (85.92, 75.55, 65.82),
          "Randomization, Adv. Train": (85.47, 76.69, 68.01)}
# Table 2 (fully adversarial test set): FGSM 0.12, FGSM 0.3, PGD 0.12, PGD 0.3.
TABLE2 = {"Baseline": (70.00, 47.81, 80.00, 63.88), "ALP": (70.55, 48.91, 80.95, 62.64),
          "DUNET": (86.6, 72.5, 85.8, 79.0)}
# Table 3 (ensembles; accuracy, read as on the fully adversarial FGSM 0.12 set like Tables 1-2).
TABLE3 = {"ALP + CLP": 66.22, "DUNET + CLP": 77.71, "DUNET + ALP": 77.71, "DUNET + ALP + CLP": 84.86}
# Table 4 (models trained on one attack, tested on FGSM and PGD; fully adversarial).
TABLE4 = {"Baseline FGSM (0.12)": (71, 80), "Baseline PGD (0.12)": (69.35, 81), "ALP FGSM (0.12)": (69.55, 79.40),
          "DUNET FGSM (0.12)": (86.6, 82.9), "DUNET FGSM (0.3)": (72.5, 68.0), "DUNET PGD (0.12)": (70.9, 85.8),
          "DUNET PGD (0.3)": (49.7, 79.0)}


def cifar_cnn(width: int = 32) -> nn.Module:
    """A small CIFAR-10 CNN (conv3 x2, pool, conv3 x2, pool, fc): the CPU stand-in for the seed's ResNet-101."""
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, width, 3, padding=1),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(2 * width * 8 * 8, 256), nn.ReLU(), nn.Linear(256, 10))


@dataclasses.dataclass
class Data:
    """One data set the tables run on, with its classifier and denoiser and its two attack budgets (the seed's
    0.12 and 0.3)."""
    name: str
    train: Tuple[Tensor, Tensor]
    test: Tuple[Tensor, Tensor]
    classifier: Callable[[], nn.Module]
    denoiser: Callable[[], nn.Module]
    eps: Tuple[float, float]


def datasets(ctx: Context, s) -> List[Data]:
    x, y = rk.datasets.mnist("train").tensors
    xt, yt = rk.datasets.mnist("test").tensors
    found = [Data("MNIST", (x[:s.train_images], y[:s.train_images]), (xt[:s.test_images], yt[:s.test_images]),
                  LeNet, lambda: DUNet(1, tuple(s.denoiser_widths)), (0.12, 0.3))]
    root = _cifar_root(ctx.data_dir)
    if root is not None:
        cx, cy = rk.datasets.cifar10(root, "train").tensors
        cxt, cyt = rk.datasets.cifar10(root, "test").tensors
        # the seed's budgets were on inputs normalised by std ~0.225: 0.12 and 0.3 of those in [0, 1] pixels
        found.append(Data("CIFAR-10", (cx[:s.train_images], cy[:s.train_images]),
                          (cxt[:s.test_images], cyt[:s.test_images]), lambda: cifar_cnn(s.cifar_width),
                          lambda: DUNet(3, tuple(s.denoiser_widths)), (0.12 * 0.225, 0.3 * 0.225)))
    return found


def _cifar_root(data_dir: Optional[pathlib.Path]) -> Optional[pathlib.Path]:
    if data_dir is None:
        return None
    for folder in (data_dir / "cifar10", data_dir):
        if (folder / "data_batch_1.bin").is_file():
            return folder
    return None


def run(ctx: Context) -> None:
    s = ctx.scale_settings(
        # quick: APGD-CE alone as the white-box attack (AutoAttack through a denoiser ensemble costs ~10 min
        # of wall time per model on the shared 2-core machine); full: AutoAttack
        quick=dict(train_images=10000, epochs=1, test_images=100, denoiser_images=6000, denoiser_epochs=1,
                   denoiser_widths=[8, 16, 32, 32], pgd_steps=10, bpda_steps=20, eot=10, draws=5,
                   cifar_width=16, white_box="apgd-ce"),
        full=dict(train_images=60000, epochs=10, test_images=10000, denoiser_images=60000, denoiser_epochs=5,
                  denoiser_widths=[16, 32, 64, 64], pgd_steps=10, bpda_steps=100, eot=20, draws=5,
                  cifar_width=32, white_box="autoattack"))
    for data in datasets(ctx, s):
        tables(ctx, s, data)
    white_box = {"autoattack": "AutoAttack (fast: APGD-CE + APGD-T)", "apgd-ce": "APGD-CE (100 steps)"}[s.white_box]
    ctx.note("Table 1", "The seed's ImageNet subset (201 classes, ResNet-101) is not available here: MNIST with "
                        "the LeNet is substituted (and CIFAR-10 with a small CNN when --data holds cifar10/; the "
                        "shared copy has its first 1,000 test images). eps 0.12 and 0.3 in [0, 1] pixels on MNIST; "
                        "on CIFAR-10 0.12 and 0.3 times 0.225, the seed's budgets on its normalised inputs.")
    ctx.note("Table 1", f"Seed columns: FGSM (and in Table 2 PGD-{s.pgd_steps}, step eps/4, random start) crafted "
                        f"once on the undefended baseline and fed to every model, as the seed's offline adversarial "
                        f"sets; '50 %' keeps the first half of the {s.test_images} test images clean. Randomised "
                        f"models: mean over {s.draws} draws. Adaptive column: worst case over {white_box} on the "
                        f"classifiers and ensembles; {white_box} through the denoiser and PGD-{s.bpda_steps} with "
                        f"BPDA on HGD; APGD-CE (100 steps) with EOT-{s.eot} on random resize+pad.")
    ctx.note("Table 3", "Normalised-score ensembles (rk.defenses.ScoreEnsemble, softmax-mean); DUNET is the HGD "
                        "trained on FGSM 0.12. The seed does not say which test set its ensemble accuracies are on; "
                        "ours are on the fully adversarial FGSM 0.12 set.")
    ctx.note("Table 4", "Rows name the training attack: the baseline adversarially trained on FGSM or PGD, ALP on "
                        "FGSM, the HGD denoiser trained on FGSM or PGD examples, at the given eps; tested on "
                        "FGSM and PGD at eps 0.12 (the seed's table does not state its test eps).")


def tables(ctx: Context, s, data: Data) -> None:
    tag = data.name
    small, large = data.eps
    x, y = data.test
    training = dict(epochs=s.epochs, batch_size=128, optimizer="adam", lr=1e-3, seed=ctx.seed)

    def classifier(name: str, objective: Callable[[nn.Module], object], recipe: dict) -> nn.Module:
        def train(model, ckpt):
            fit(model, data.train, objective(model), checkpoint_dir=ckpt, resume=True, progress=ctx.progress,
                device=ctx.device, **training)
        return ctx.model(f"defendr-{tag.lower()}-{name}", dict(images=len(data.train[0]), **training, **recipe),
                         data.classifier, train)

    def pgd(model, eps, steps=s.pgd_steps):
        return rk.attacks.PGD(model, eps=eps, step_size=eps / 4, steps=steps)

    baseline = classifier("baseline", lambda m: None, dict(objective="cross-entropy"))
    models: Dict[str, nn.Module] = {"Baseline": baseline}
    models["Adv. FGSM"] = classifier("adv-fgsm", lambda m: AdversarialTraining(rk.attacks.FGSM(m, eps=small),
                                                                               clean_weight=0.5),
                                     dict(objective="adversarial-training", attack="fgsm", eps=small, clean=0.5))
    models["Adv. PGD"] = classifier("adv-pgd", lambda m: AdversarialTraining(pgd(m, small), clean_weight=0.5),
                                    dict(objective="adversarial-training", attack=f"pgd-{s.pgd_steps}", eps=small,
                                         clean=0.5))
    models["CLP"] = classifier("clp", lambda m: LogitPairing(None, clean=0.5, squeeze=0.05),
                               dict(objective="clean-logit-pairing", clean=0.5, squeeze=0.05))
    models["ALP"] = classifier("alp", lambda m: LogitPairing(rk.attacks.FGSM(m, eps=small), adversarial=0.5),
                               dict(objective="adversarial-logit-pairing", attack="fgsm", eps=small, pairing=0.5))
    def hgd(attack: str, eps: float) -> nn.Module:
        n = s.denoiser_images

        def train(den, ckpt):
            attacks = [rk.attacks.FGSM(baseline, eps=eps) if attack == "fgsm" else pgd(baseline, eps)]
            train_denoiser(den, baseline, (data.train[0][:n], data.train[1][:n]), attacks, guide="logits",
                           epochs=s.denoiser_epochs, batch_size=100, optimizer="adam", lr=1e-3, seed=ctx.seed,
                           checkpoint_dir=ckpt, resume=True, progress=ctx.progress, device=ctx.device)
        den = ctx.model(f"defendr-{tag.lower()}-dunet-{attack}-{eps:g}",
                        dict(images=n, epochs=s.denoiser_epochs, widths=list(s.denoiser_widths), guide="logits",
                             attack=attack, eps=eps, classifier="baseline", batch_size=100, optimizer="adam",
                             lr=1e-3, seed=ctx.seed), data.denoiser, train)
        return GuidedDenoiser(den, baseline).eval()

    denoised = {(a, e): hgd(a, e) for a in ("fgsm", "pgd") for e in (small, large)}
    models["DUNET"] = denoised[("fgsm", small)]
    size = tuple(x.shape[-2:])
    models["Random"] = RandomResizePad(baseline, size, min_scale=0.75, max_scale=1.0, seed=0).eval()
    models["Random + Adv."] = RandomResizePad(models["Adv. FGSM"], size, min_scale=0.75, max_scale=1.0,
                                              seed=0).eval()
    randomised = {"Random", "Random + Adv."}

    # The seed's adversarial test sets: crafted once on the undefended baseline.
    seed_sets = {("fgsm", small): rk.attacks.FGSM(baseline, eps=small)(x, y),
                 ("fgsm", large): rk.attacks.FGSM(baseline, eps=large)(x, y),
                 ("pgd", small): pgd(baseline, small)(x, y), ("pgd", large): pgd(baseline, large)(x, y)}
    half = len(x) // 2

    def seed_accuracy(name: str, model: nn.Module) -> dict:
        """Accuracy on the clean set, the 50 % and the 100 % adversarial sets of each seed attack."""
        def fn():
            draws = s.draws if name in randomised else 1
            reseed(model)
            with torch.no_grad():
                right = {key: torch.stack([model(images).argmax(1) == y for _ in range(draws)]).float().mean(0)
                         for key, images in [(("clean", 0), x)] + list(seed_sets.items())}
            out = {"clean": float(right[("clean", 0)].mean())}
            for (attack, eps), ok in right.items():
                if attack != "clean":
                    out[f"{attack}-{eps:g}"] = float(ok.mean())
                    out[f"{attack}-{eps:g}-50"] = float(torch.cat([right[("clean", 0)][:half], ok[half:]]).mean())
            return out
        return ctx.step(f"{tag.lower()}-seed-{slug(name)}", fn)

    done: Dict[Tuple[int, float], float] = {}     # a model in two tables is attacked once

    def adaptive(name: str, model: nn.Module, eps: float, kind: str) -> float:
        """Worst-case robust accuracy over the adaptive attacks for this kind of defence."""
        if (id(model), eps) in done:
            return done[(id(model), eps)]
        reseed(model)
        if kind == "random":
            attacks = {"apgd-ce-eot": rk.attacks.APGD(model, eps=eps, steps=100, eot=s.eot)}
        elif s.white_box == "autoattack":
            attacks = {"autoattack": rk.attacks.AutoAttack(model, eps=eps, version="fast")}
        else:
            attacks = {"apgd-ce": rk.attacks.APGD(model, eps=eps, steps=100)}
        if kind == "hgd":
            through = nn.Sequential(rk.attacks.BPDA(model.denoise), model.model).eval()
            attacks["bpda-pgd"] = rk.attacks.PGD(through, eps=eps, step_size=eps / 10, steps=s.bpda_steps)
        res = ctx.evaluate(f"{tag.lower()}-{slug(name)}-{eps:g}", model, attacks, x, y, checks="static",
                           metrics=())
        done[(id(model), eps)] = res["worst_case"]["robust_accuracy"]
        return done[(id(model), eps)]

    def kind_of(model: nn.Module) -> str:
        return "hgd" if isinstance(model, GuidedDenoiser) else "random" if isinstance(model, RandomResizePad) \
            else "plain"

    # Table 1
    table1 = {"Baseline, No Adv. Train": "Baseline", "Baseline, Adv. Train": "Adv. FGSM",
              "CLP, No Adv. Train": "CLP", "ALP, Adv. Train": "ALP", "DUNET, Adv. Train": "DUNET",
              "Randomization, No Adv. Train": "Random", "Randomization, Adv. Train": "Random + Adv."}
    for row, name in table1.items():
        acc = seed_accuracy(name, models[name])
        paper = TABLE1[row]
        key = f"fgsm-{small:g}"
        for column, ours, value in (("no adv. (%)", acc["clean"], paper[0]), ("50% adv. (%)", acc[key + "-50"],
                                    paper[1]), ("100% adv. (%)", acc[key], paper[2])):
            ctx.cell("Table 1", row=f"{tag} {row}", column=column, paper=value, ours=100 * ours, fmt=".2f")
        ctx.cell("Table 1", row=f"{tag} {row}", column="adaptive, 100% adv. (%)", paper=None,
                 ours=100 * adaptive(name, models[name], small, kind_of(models[name])), fmt=".2f")

    # Table 2
    table2 = {"Baseline": "Adv. FGSM", "ALP": "ALP", "DUNET": "DUNET"}
    for row, name in table2.items():
        acc = seed_accuracy(name, models[name])
        columns = [("fgsm", small), ("fgsm", large), ("pgd", small), ("pgd", large)]
        for (attack, eps), paper in zip(columns, TABLE2[row]):
            ctx.cell("Table 2", row=f"{tag} {row}", column=f"{attack.upper()} ({eps:g}) (%)", paper=paper,
                     ours=100 * acc[f"{attack}-{eps:g}"], fmt=".2f")
        for eps in (small, large):
            ctx.cell("Table 2", row=f"{tag} {row}", column=f"adaptive ({eps:g}) (%)", paper=None,
                     ours=100 * adaptive(name, models[name], eps, kind_of(models[name])), fmt=".2f")

    # Table 3: Defendr's ensembles
    members = {"ALP + CLP": ("ALP", "CLP"), "DUNET + CLP": ("DUNET", "CLP"), "DUNET + ALP": ("DUNET", "ALP"),
               "DUNET + ALP + CLP": ("DUNET", "ALP", "CLP")}
    for row, names in members.items():
        ensemble = ScoreEnsemble([models[n] for n in names]).eval()
        acc = seed_accuracy(row, ensemble)
        ctx.cell("Table 3", row=f"{tag} {row}", column=f"FGSM ({small:g}), 100% adv. (%)", paper=TABLE3[row],
                 ours=100 * acc[f"fgsm-{small:g}"], fmt=".2f")
        ctx.cell("Table 3", row=f"{tag} {row}", column="clean (%)", paper=None, ours=100 * acc["clean"], fmt=".2f")
        ctx.cell("Table 3", row=f"{tag} {row}", column="adaptive (%)", paper=None,
                 ours=100 * adaptive(row, ensemble, small, "plain"), fmt=".2f")
        if row == "DUNET + ALP + CLP":
            defendr = ensemble

    # Table 4: robustness to the attack a model was not trained on
    trained_on = {"Baseline FGSM (0.12)": models["Adv. FGSM"], "Baseline PGD (0.12)": models["Adv. PGD"],
                  "ALP FGSM (0.12)": models["ALP"], "DUNET FGSM (0.12)": denoised[("fgsm", small)],
                  "DUNET FGSM (0.3)": denoised[("fgsm", large)], "DUNET PGD (0.12)": denoised[("pgd", small)],
                  "DUNET PGD (0.3)": denoised[("pgd", large)]}
    for row, model in trained_on.items():
        label = row.replace("0.12", f"{small:g}").replace("0.3", f"{large:g}")
        acc = seed_accuracy(row, model)
        for attack, paper in zip(("fgsm", "pgd"), TABLE4[row]):
            ctx.cell("Table 4", row=f"{tag} {label}", column=f"{attack.upper()} (%)", paper=paper,
                     ours=100 * acc[f"{attack}-{small:g}"], fmt=".2f")
        ctx.cell("Table 4", row=f"{tag} {label}", column="adaptive (%)", paper=None,
                 ours=100 * adaptive(row, model, small, kind_of(model)), fmt=".2f")

    confusion(ctx, tag, defendr, x, seed_sets[("fgsm", small)])
    gradcam(ctx, tag, baseline, x, y, seed_sets[("fgsm", small)])


def confusion(ctx: Context, tag: str, defendr: nn.Module, x: Tensor, adv: Tensor) -> None:
    """The seed's Fig. 15: Defendr's predictions on the clean images against those on their adversarial
    versions."""
    def fn():
        with torch.no_grad():
            clean, attacked = defendr(x).argmax(1), defendr(adv).argmax(1)
        return {"matrix": confusion_matrix(clean, attacked, 10).tolist(),
                "unchanged": float((clean == attacked).float().mean())}
    m = ctx.step(f"{tag.lower()}-confusion", fn)
    classes = [str(c) for c in range(10)]
    ctx.heatmap(f"Confusion matrix ({tag})", rows=classes, cols=classes, values=m["matrix"],
                label="rows: prediction on the clean image; columns: on its FGSM image")
    ctx.cell("Confusion matrix", row=f"{tag} DUNET + ALP + CLP", column="prediction unchanged (%)", paper=None,
             ours=100 * m["unchanged"], fmt=".1f")
    ctx.note("Confusion matrix", "The seed shows the matrix without a summary number (201 classes, noisy "
                                 "clusters among the dog breeds); the heat map is in report.html.")


def gradcam(ctx: Context, tag: str, model: nn.Module, x: Tensor, y: Tensor, adv: Tensor) -> None:
    """The seed's Figs. 11-14: where the model looks on a clean image and on its adversarial version. Summarised
    as the cosine similarity of the two Grad-CAM maps (each for the class predicted on that image), over all
    test images and over the correctly classified ones the attack fooled."""
    def fn():
        clean_cam, adv_cam = grad_cam(model, x), grad_cam(model, adv)
        if clean_cam is None:
            return None
        with torch.no_grad():
            fooled = (model(x).argmax(1) == y) & (model(adv).argmax(1) != y)
        cosine = nn.functional.cosine_similarity(clean_cam.flatten(1), adv_cam.flatten(1), dim=1)
        first = int(fooled.nonzero()[0]) if bool(fooled.any()) else 0
        return {"all": float(cosine.mean()), "fooled": float(cosine[fooled].mean()) if bool(fooled.any()) else None,
                "example": first, "clean_map": clean_cam[first].tolist(), "adv_map": adv_cam[first].tolist()}
    m = ctx.step(f"{tag.lower()}-gradcam", fn)
    if m is None:
        ctx.note("Grad-CAM", f"{tag}: the classifier has no convolution, so there is no Grad-CAM map.")
        return
    for key, label in (("all", "all test images"), ("fooled", "images the attack fooled")):
        ctx.cell("Grad-CAM", row=f"{tag} baseline, {label}", column="clean/adversarial map cosine", paper=None,
                 ours=m[key], fmt=".3f")
    rows = [str(i) for i in range(len(m["clean_map"]))]
    cols = [str(j) for j in range(len(m["clean_map"][0]))]
    ctx.heatmap(f"Grad-CAM ({tag}), clean test image {m['example']}", rows=rows, cols=cols, values=m["clean_map"],
                label="Grad-CAM of the predicted class")
    ctx.heatmap(f"Grad-CAM ({tag}), its FGSM image", rows=rows, cols=cols, values=m["adv_map"],
                label="Grad-CAM of the predicted class")
    ctx.note("Grad-CAM", "The seed shows maps only (the activation moves off the object when the image is "
                         "misclassified); a lower cosine for the fooled images is that finding in one number.")


def reseed(model: nn.Module) -> None:
    """Restart a randomised model's own generator, so that each measurement sees the same draws whether or not
    the steps before it were read back from a resumed run."""
    if isinstance(model, RandomResizePad) and model.generator is not None:
        model.generator.manual_seed(0)


def slug(name: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-").replace("--", "-")


PAPER = Paper(
    name="defendr",
    title="Defendr: A Robust Model for Image Classification (Dornadula, Pokle and Yerukola, Stanford CS231n)",
    tables={"Table 1": "single defences: accuracy on clean, 50% and 100% FGSM test sets (+ adaptive attack)",
            "Table 2": "baseline, ALP and HGD (DUNET) under FGSM and PGD at two budgets (+ adaptive)",
            "Table 3": "normalised-score ensembles on the FGSM test set (+ adaptive)",
            "Table 4": "models trained on one attack, tested on FGSM and PGD (+ adaptive)",
            "Confusion matrix": "Defendr's predictions, clean vs adversarial",
            "Grad-CAM": "Grad-CAM maps on clean and adversarial images"},
    run=run,
)
