"""Evaluating a simple retraining strategy as a defense against adversarial attacks (Thakur, Ding and Li):
generate adversarial images with four attackers, label them with PCA + 1-nearest-neighbour (the true-label
generator, no access to the attacker), retrain the classifier on original + labelled adversarial images and
attack it again.

The paper's tables are CIFAR-10 (VGG16, 50,000 originals) and TinyImageNet. Here: MNIST with the cached
LeNet (:func:`robustkit.zoo.trained_mnist_model`) always, and CIFAR-10 with a small CNN trained by the
recipe when ``--data`` holds ``cifar10/``; the adversarial image counts keep the paper's ratios to the
original images (1, 1/2, 1/4, 0.18) at a size two CPU cores fine-tune in minutes.

- Table 1 (GAP), Table 3 (DeepFool), Table 4 (C&W L2, least-likely target), Table 5 (FGSM, eps = 0.07):
  accuracy on original and adversarial test images after retraining, fooling ratio before and after;
- Table 7: PCA + 1-NN label accuracy on adversarial images;
- Fooling class: the paper's proposal that fooling images get a class of their own (an auto threshold on the
  distance to the nearest training image), measured and used for retraining.
"""
from __future__ import annotations

import functools

import torch
from torch import nn

from robustkit.attacks import CW, FGSM, GAP, DeepFool
from robustkit.datasets import cifar10, mnist
from robustkit.defenses import KNNLabeler, Retrainer
from robustkit.metrics import fooling_ratio
from robustkit.models import CIFAR10_MEAN, CIFAR10_STD
from robustkit.nn import Normalize
from robustkit.reproduce.protocol import Context, Paper
from robustkit.training import fit
from robustkit.zoo import trained_mnist_model

# The paper's numbers (CIFAR-10, VGG16 at 92.37% test accuracy), as fractions, typed in from its tables.
#: Tables 1 and 5: adversarial images / 50,000 originals -> (acc. original, acc. adversarial, fooling ratio
#: after retraining); rows 50,000 / 25,000 / 12,500 / 9,000
PAPER_GAP = {1.0: (0.9225, 0.9109, 0.13), 0.5: (0.924, 0.9018, 0.16), 0.25: (0.915, 0.885, 0.24),
             0.18: (0.9052, 0.8664, 0.26)}
PAPER_FGSM = {1.0: (0.9245, 0.9024, 0.4472), 0.5: (0.9254, 0.903, 0.4395), 0.25: (0.9278, 0.885, 0.4672),
              0.18: (0.9257, 0.861, 0.478)}
#: Tables 3 and 4, row CIFAR-10 -> (acc. original, acc. adversarial, fooling ratio after retraining)
PAPER_DEEPFOOL, PAPER_CW = (0.9202, 0.9013, 0.99), (0.9237, 0.908, 0.99)
#: Section 4: the initial fooling ratios on CIFAR-10 (GAP 4.1.1, DeepFool 4.2.1, C&W 4.2.2, FGSM 4.2.3)
PAPER_BEFORE = {"GAP": 0.82, "DeepFool": 0.99, "C&W": 1.0, "FGSM": 0.9282}
PAPER_CLEAN_ACCURACY = 0.9237            # Section 4: VGG16 on CIFAR-10
PAPER_LABEL_ACCURACY = 0.9829            # Table 7, row CIFAR-10 (GAP images, PCA to 300 dimensions, K = 1)


def cifar_cnn() -> nn.Module:
    """A 3-conv CNN (the paper's VGG16 does not train on two CPU cores in minutes)."""
    return nn.Sequential(Normalize(CIFAR10_MEAN, CIFAR10_STD, persistent=False),
                         nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(64 * 16, 128), nn.ReLU(), nn.Linear(128, 10))


def mnist_setup(ctx: Context, s) -> dict:
    x_train, y_train = mnist("train")[:s.train_images]
    x_test, y_test = mnist("test")[:s.test_images]
    n_train = None if s.train_images >= 60000 else s.train_images     # None: the zoo's cached full LeNet
    model = trained_mnist_model("lenet", seed=ctx.seed, n_train=n_train, device=ctx.device, progress=ctx.progress)
    return {"name": "MNIST", "train": (x_train, y_train), "test": (x_test, y_test), "model": model,
            "pca_dim": 50, "gap_eps": 0.3}


def cifar_setup(ctx: Context, s) -> dict:
    """CIFAR-10 from ``data_dir/cifar10``: the first ``cifar_train_images`` training images train the CNN;
    the test images are held out from the training batches (indices 40,000 on), because the shared copy
    has only 1,000 of the official test images."""
    x, y = cifar10(ctx.data_dir / "cifar10", "train").tensors
    train = (x[:s.cifar_train_images], y[:s.cifar_train_images])
    test = (x[40000:40000 + s.test_images], y[40000:40000 + s.test_images])
    recipe = {"data": "cifar10", "train_images": s.cifar_train_images, "epochs": s.cifar_epochs,
              "optimizer": "adam", "lr": 1e-3, "batch_size": 128, "seed": ctx.seed}
    model = ctx.model("retraining-cifar-cnn", recipe=recipe, build=cifar_cnn, train=lambda m, ckpt: fit(
        m, train, epochs=s.cifar_epochs, optimizer="adam", lr=1e-3, batch_size=128, seed=ctx.seed,
        checkpoint_dir=ckpt, resume=True, progress=ctx.progress, device=ctx.device))
    return {"name": "CIFAR-10", "train": train, "test": test, "model": model, "pca_dim": 300, "gap_eps": 10 / 255}


def gap(x_fit: torch.Tensor, eps: float, epochs: int):
    """GAP's universal-perturbation generator trained on ``x_fit`` (loss="prediction": on MNIST it fools
    2.5-4x more held-out images than the least-likely loss of the authors' code)."""
    batches = [x_fit[i:i + 64] for i in range(0, x_fit.shape[0], 64)]
    return lambda m: GAP(m, eps=eps, loss="prediction", width=16, blocks=3, seed=0).fit(
        batches, epochs=epochs, lr=2e-3, progress=False)


def attackers(setup: dict, s) -> dict:
    """name -> factory ``model -> attack(x, y)`` for the paper's four attackers."""
    x_fit = setup["train"][0][:s.gap_fit]
    return {"GAP": gap(x_fit, setup["gap_eps"], s.gap_epochs),
            "FGSM": lambda m: FGSM(m, eps=0.07),
            "DeepFool": lambda m: DeepFool(m, steps=50),
            "C&W": lambda m: functools.partial(CW(m, binary_search_steps=s.cw_searches, steps=s.cw_steps, lr=0.05,
                                                  initial_const=1.0), target="least_likely")}


def batched(attack, x, y, batch: int = 250) -> torch.Tensor:
    return torch.cat([attack(x[i:i + batch], y[i:i + batch]) for i in range(0, x.shape[0], batch)])


def label_accuracy(setup: dict, labeler: KNNLabeler, factory, n: int) -> dict:
    """PCA + 1-NN label accuracy on adversarial versions of ``n`` training images and ``n`` held-out images."""
    (x_train, y_train), (x_test, y_test), model = setup["train"], setup["test"], setup["model"]
    index = torch.randperm(x_train.shape[0])[:n]
    n = min(n, x_test.shape[0])
    attack = factory(model)
    adv_train = batched(attack, x_train[index], y_train[index])
    adv_test = batched(attack, x_test[:n], y_test[:n])
    with torch.no_grad():
        clean = model(x_train[index]).argmax(1)
        fooled = fooling_ratio(clean, model(adv_train).argmax(1))
    return {"adversarial training images": (labeler.predict(adv_train) == y_train[index]).double().mean().item(),
            "adversarial held-out images": (labeler.predict(adv_test) == y_test[:n]).double().mean().item(),
            "clean held-out images": (labeler.predict(x_test[:n]) == y_test[:n]).double().mean().item(),
            "fooling ratio": fooled}


def fooling_mechanism(setup: dict, s) -> dict:
    """Which images the auto threshold flags as fooling images, and how two fooling clusters split them."""
    (x_train, y_train), x_test, model = setup["train"], setup["test"][0][:s.fooling_images], setup["model"]
    labeler = KNNLabeler(pca_dim=setup["pca_dim"], fooling_threshold="auto").fit(x_train, y_train)
    n = x_test.shape[0]
    noise = torch.rand(n, *x_train.shape[1:])
    big_gap = gap(x_train[:s.gap_fit], 0.5, s.gap_epochs)(model)
    sets = {"held-out images": x_test, "FGSM eps=0.07 training images": FGSM(model, eps=0.07)(
        x_train[:n], y_train[:n]), "uniform noise": noise, "GAP eps=0.5 held-out images": big_gap(x_test)}
    flagged = {k: labeler.fooling_mask(v).double().mean().item() for k, v in sets.items()}
    two = KNNLabeler(pca_dim=setup["pca_dim"], fooling_threshold="auto", fooling_clusters=2).fit(x_train, y_train)
    labels = two.predict(torch.cat([noise, sets["GAP eps=0.5 held-out images"]]))
    classes = int(y_train.max()) + 1
    # each set's share in its most common fooling class, and whether the two sets got different classes
    noise_class, gap_class = (torch.bincount(part, minlength=classes + 2)[classes:].argmax().item() + classes
                              for part in (labels[:n], labels[n:]))
    return {"threshold": labeler.threshold_, "flagged": flagged,
            "noise in its fooling class": (labels[:n] == noise_class).double().mean().item(),
            "GAP in its fooling class": (labels[n:] == gap_class).double().mean().item(),
            "separate classes": float(noise_class != gap_class)}


def retrain(setup: dict, factory, labeler, s, n: int, labels: str = "labeler", fooling: str = "new_class") -> dict:
    # the same original images in every row (the adversarial subset is the Retrainer's, seeded too)
    original = torch.randperm(setup["train"][0].shape[0], generator=torch.Generator().manual_seed(0))[
        :s.original_images]
    report = Retrainer(setup["model"], factory, labeler, n_adversarial=n, epochs=s.retrain_epochs, lr=5e-4,
                       labels=labels, fooling=fooling, seed=0).run(
        (setup["train"][0][original], setup["train"][1][original]), setup["test"])
    return report.as_dict()


def record_retraining(ctx: Context, table: str, prefix: str, row: str, result: dict, paper, gap_like: bool):
    """One row of Tables 1/3/4/5. ``paper`` = (acc. original, acc. adversarial, fooling after) or None. The
    paper re-attacks the retrained classifier with the white-box attackers; for GAP it does not say whether
    the generator was retrained, so its number stands beside both fooling-ratio columns."""
    acc_original, acc_adversarial, fooled_after = paper if paper is not None else (None, None, None)
    row = f"{prefix}{row}"
    percent = dict(fmt=".1%")
    ctx.cell(table, row=row, column="acc. original after", paper=acc_original, ours=result["accuracy_original"],
             **percent)
    ctx.cell(table, row=row, column="acc. adversarial after", paper=acc_adversarial,
             ours=result["accuracy_adversarial"], **percent)
    ctx.cell(table, row=row, column="fooling ratio, re-attacked", paper=fooled_after,
             ours=result["fooling_ratio_after"], **percent)
    ctx.cell(table, row=row, column="fooling ratio, old adversarial images", paper=fooled_after if gap_like else None,
             ours=result["fooling_ratio_after_transfer"], **percent)


def record_before(ctx: Context, table: str, prefix: str, result: dict, attacker: str) -> None:
    ctx.cell(table, row=f"{prefix}before retraining", column="acc. original", paper=PAPER_CLEAN_ACCURACY,
             ours=result["accuracy_original_before"], fmt=".1%")
    ctx.cell(table, row=f"{prefix}before retraining", column="acc. adversarial", paper=None,
             ours=result["accuracy_adversarial_before"], fmt=".1%")
    ctx.cell(table, row=f"{prefix}before retraining", column="fooling ratio", paper=PAPER_BEFORE[attacker],
             ours=result["fooling_ratio_before"], fmt=".1%")


def run_dataset(ctx: Context, setup: dict, s, prefix: str) -> None:
    name = setup["name"]
    key = name.lower().replace("-", "")
    x_train, y_train = setup["train"]
    labeler = KNNLabeler(pca_dim=setup["pca_dim"]).fit(x_train, y_train)
    factories = attackers(setup, s)

    # Table 7: label accuracy of PCA + 1-NN on each attacker's images
    for attacker, factory in factories.items():
        result = ctx.step(f"{key}-labels-{attacker}", lambda: label_accuracy(setup, labeler, factory, s.label_images))
        for column, value in result.items():
            paper = PAPER_LABEL_ACCURACY if (attacker, column) == ("GAP", "adversarial training images") else None
            ctx.cell("Table 7", row=f"{prefix}{attacker}", column=column, paper=paper, ours=value, fmt=".1%")

    # Tables 1 and 5: GAP and FGSM, adversarial images in the paper's ratios to the original images
    for attacker, table, paper_rows in (("GAP", "Table 1", PAPER_GAP), ("FGSM", "Table 5", PAPER_FGSM)):
        for ratio in s.ratios:
            n = max(1, round(ratio * s.original_images))
            result = ctx.step(f"{key}-retrain-{attacker}-n{n}",
                              lambda: retrain(setup, factories[attacker], labeler, s, n))
            if ratio == s.ratios[0]:
                record_before(ctx, table, prefix, result, attacker)
            record_retraining(ctx, table, prefix, f"{n} adversarial ({ratio:g} x originals)", result,
                              paper_rows.get(ratio), gap_like=attacker == "GAP")
        if attacker == "FGSM":   # the labeler's labels against the images' own labels
            n = max(1, round(s.ratios[0] * s.original_images))
            result = ctx.step(f"{key}-retrain-FGSM-n{n}-source-labels",
                              lambda: retrain(setup, factories["FGSM"], labeler, s, n, labels="source"))
            record_retraining(ctx, table, prefix, f"{n} adversarial, source labels", result, None, gap_like=False)

    # Tables 3 and 4: DeepFool and C&W, one (costly) size
    for attacker, table, paper in (("DeepFool", "Table 3", PAPER_DEEPFOOL), ("C&W", "Table 4", PAPER_CW)):
        n = s.whitebox_images
        result = ctx.step(f"{key}-retrain-{attacker}-n{n}", lambda: retrain(setup, factories[attacker], labeler, s, n))
        record_before(ctx, table, prefix, result, attacker)
        record_retraining(ctx, table, prefix, f"{n} adversarial", result, paper, gap_like=False)

    # The fooling class: what the auto threshold flags, then retraining with a large-budget GAP's images
    mechanism = ctx.step(f"{key}-fooling-mechanism", lambda: fooling_mechanism(setup, s))
    for images, share in mechanism["flagged"].items():
        ctx.cell("Fooling class", row=f"{prefix}{images}", column="flagged as fooling", paper=None, ours=share,
                 fmt=".1%")
    for column, fmt in (("noise in its fooling class", ".1%"), ("GAP in its fooling class", ".1%"),
                        ("separate classes", ".0f")):      # separate classes: 1 when noise and GAP differ
        ctx.cell("Fooling class", row=f"{prefix}two fooling clusters", column=column, paper=None,
                 ours=mechanism[column], fmt=fmt)
    fooling_labeler = KNNLabeler(pca_dim=setup["pca_dim"], fooling_threshold="auto").fit(x_train, y_train)
    big_gap = gap(x_train[:s.gap_fit], 0.5, s.gap_epochs)
    n = max(1, round(s.ratios[-1] * s.original_images))
    for fooling in ("new_class", "drop"):
        result = ctx.step(f"{key}-retrain-GAP0.5-n{n}-{fooling}",
                          lambda: retrain(setup, big_gap, fooling_labeler, s, n, fooling=fooling))
        row = f"{prefix}GAP eps=0.5, {n} adversarial, fooling={fooling}"
        for column, value in (("fooling ratio before", result["fooling_ratio_before"]),
                              ("fooling ratio, re-attacked", result["fooling_ratio_after"]),
                              ("fooling ratio, old adversarial images", result["fooling_ratio_after_transfer"]),
                              ("detected, re-attacked", result["detected_after"]),
                              ("acc. original after", result["accuracy_original"])):
            ctx.cell("Fooling class", row=row, column=column, paper=None, ours=value, fmt=".1%")
    ctx.note("Fooling class", f"{name}: auto threshold {mechanism['threshold']:.2f} (1.1 x the 99th percentile "
                              "of the training images' leave-one-out fooling distances). The paper proposes the "
                              "fooling class without measuring it, so there is no paper column.")


def run(ctx: Context) -> None:
    s = ctx.scale_settings(
        quick=dict(train_images=60000, test_images=300, label_images=200, original_images=2000,
                   ratios=[1.0, 0.5, 0.25, 0.18], whitebox_images=200, cw_searches=3, cw_steps=100, gap_fit=1000,
                   gap_epochs=4, retrain_epochs=1, fooling_images=300, cifar_train_images=10000, cifar_epochs=3),
        full=dict(train_images=60000, test_images=500, label_images=300, original_images=3000,
                  ratios=[1.0, 0.5, 0.25, 0.18], whitebox_images=300, cw_searches=3, cw_steps=100, gap_fit=2000,
                  gap_epochs=4, retrain_epochs=1, fooling_images=1000, cifar_train_images=10000, cifar_epochs=3))
    cifar = ctx.data_dir is not None and (ctx.data_dir / "cifar10").is_dir()
    run_dataset(ctx, mnist_setup(ctx, s), s, "MNIST: " if cifar else "")
    if cifar:
        run_dataset(ctx, cifar_setup(ctx, s), s, "CIFAR-10: ")
    where = "MNIST and CIFAR-10" if cifar else "MNIST (CIFAR-10 with --data DIR holding cifar10/)"
    substitution = (f"Ours: {where}; the paper's numbers are CIFAR-10 with VGG16 (92.37%) and 50,000 originals. "
                    f"Here LeNet (MNIST) / a 3-conv CNN (CIFAR-10), {s.original_images} original images "
                    f"fine-tuned {s.retrain_epochs} epoch with the adversarial ones, {s.test_images} test images. "
                    "TinyImageNet (Tables 2 and 6) is not available here.")
    for table in ("Table 1", "Table 5"):
        ctx.note(table, substitution)
        ctx.note(table, "Adversarial image counts keep the paper's ratios to the originals (50,000 / 25,000 / "
                        "12,500 / 9,000 of 50,000). Re-attacked: the attack rebuilt against the retrained "
                        "classifier; old adversarial images: the original classifier's, replayed.")
    ctx.note("Table 1", f"GAP eps = 0.3 on MNIST (at 10/255 it fools LeNet on under 1% of the images), 10/255 on "
                        f"CIFAR-10 as in the paper; generator trained {s.gap_epochs} epochs on {s.gap_fit} images. "
                        "The paper does not say whether it retrained the generator, so its fooling ratio stands "
                        "beside both columns.")
    for table in ("Table 3", "Table 4"):
        ctx.note(table, substitution + f" The paper retrains with as many adversarial as original images; here "
                                       f"{s.whitebox_images} (their cost on a CPU).")
    ctx.note("Table 4", f"C&W L2 toward the least-likely class; budget {s.cw_searches} binary-search x "
                        f"{s.cw_steps} Adam steps (the paper does not give its budget).")
    ctx.note("Table 7", f"PCA to 50 (MNIST) / 300 (CIFAR-10, as the paper) dimensions, 1-NN over the training "
                        f"set; {s.label_images} images per attacker. The paper reports GAP images only; an "
                        "adversarial version of a training image finds its source in the index, a held-out one "
                        "cannot.")


PAPER = Paper(
    name="retraining",
    title="Evaluating a Simple Retraining Strategy as a Defense Against Adversarial Attacks (Thakur, Ding and Li)",
    tables={"Table 1": "GAP (universal perturbation): retraining with PCA + 1-NN labelled adversarial images",
            "Table 3": "DeepFool: retraining, then re-attacking the retrained classifier",
            "Table 4": "C&W L2 (least-likely target): retraining, then re-attacking",
            "Table 5": "FGSM (eps = 0.07): retraining with several numbers of adversarial images",
            "Table 7": "true labels of adversarial images from PCA + 1-NN",
            "Fooling class": "fooling images flagged by the distance threshold, and retraining with them as a class"},
    run=run,
)
