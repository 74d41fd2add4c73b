"""Deep Defense (Yan et al., NeurIPS 2018) on MNIST: Table 1 and Table 2 for the MLP and the LeNet, and the
layer-wise experiment of Fig. 4.

The recipe (the paper's section 4 and supplementary material):
1. a reference network, trained with cross-entropy (SGD with momentum, a cosine schedule);
2. three fine-tunings of it with the paper's policy (batch 100, SGD lr 5e-4, momentum 0.9, weight decay 5e-4,
   the learning rate halved for the last epoch): Parseval training (beta 1e-4, 30 % of the rows per step),
   "Adv. Train I" (a fixed DeepFool training set next to the clean one) and Deep Defense (lam 15, c 25, d 5);
3. on the test images: accuracy, rho_2 of DeepFool's perturbations (Eq. 7), FGS accuracy at 0.2 / 0.5 / 1.0
   eps_ref (eps_ref: the FGS budget at which the Deep Defense model misclassifies half the images), and
   Table 2's unnormalised DeepFool and C&W L2, rho_inf of the smallest fooling FGS budget and PGD accuracy at
   eps 0.1, with APGD-CE at the same budget as the strong attack the paper did not run.
Fig. 4 fine-tunes the LeNet with Deep Defense's regulariser reaching only one layer's weights (its gradient to
every other layer is masked; the cross-entropy still trains all of them), for several c.
"""
from __future__ import annotations

from typing import Dict

import torch
from torch import nn

import robustkit as rk
from robustkit.eval.eps_ref import fgs_eps_ref, fgs_minimal_eps
from robustkit.metrics import rho
from robustkit.models import CaffeLeNet, DeepDefenseMLP
from robustkit.reproduce.protocol import Context, Paper
from robustkit.training import fit

NETS = {"MLP": DeepDefenseMLP, "LeNet": CaffeLeNet}
METHODS = ("Reference", "Par. Train", "Adv. Train I", "Deep Defense")
# Table 1 (main paper), MNIST rows: accuracy %, rho_2, accuracy % at 0.2 / 0.5 / 1.0 eps_ref.
TABLE1 = {
    ("MLP", "Reference"): (98.31, 0.111, 72.76, 29.08, 3.31),
    ("MLP", "Par. Train"): (98.32, 0.111, 77.44, 28.95, 2.96),
    ("MLP", "Adv. Train I"): (98.49, 0.162, 87.70, 59.69, 22.55),
    ("MLP", "Deep Defense"): (98.65, 0.225, 95.04, 88.93, 50.00),     # the paper's "Ours"
    ("LeNet", "Reference"): (99.02, 0.205, 90.95, 53.88, 19.75),
    ("LeNet", "Par. Train"): (99.10, 0.203, 91.68, 66.48, 19.64),
    ("LeNet", "Adv. Train I"): (99.18, 0.263, 95.20, 74.82, 41.40),
    ("LeNet", "Deep Defense"): (99.34, 0.284, 96.51, 88.93, 50.00),
}
# Table 2 (supplementary), MNIST rows: l2 (DeepFool), rho_inf (FGS), l2 (C&W), accuracy % under PGD at 0.1.
TABLE2 = {
    ("MLP", "Reference"): (0.81, 5.40e-2, 0.84, 1.19),
    ("MLP", "Par. Train"): (0.80, 5.78e-2, 0.83, 1.18),
    ("MLP", "Adv. Train I"): (1.17, 9.46e-2, 1.17, 4.11),
    ("MLP", "Deep Defense"): (1.64, 1.53e-1, 1.58, 33.18),
    ("LeNet", "Reference"): (1.48, 1.29e-1, 1.40, 26.17),
    ("LeNet", "Par. Train"): (1.50, 1.50e-1, 1.58, 23.06),
    ("LeNet", "Adv. Train I"): (1.90, 2.05e-1, 1.71, 50.67),
    ("LeNet", "Deep Defense"): (2.05, 2.36e-1, 1.84, 64.54),
}
FIG4_LAYERS = ("conv1", "conv2", "fc1", "fc2")      # CaffeLeNet's layer names are the paper's
LINF_EPS = 0.1                                      # Table 2's PGD budget on MNIST


def finetune_schedule(epochs: int):
    """The paper's fine-tuning schedule: the learning rate halved for the last epoch."""
    return lambda progress: 0.5 if epochs > 1 and progress >= (epochs - 1) / epochs else 1.0


def run(ctx: Context) -> None:
    s = ctx.scale_settings(
        quick=dict(train_images=5000, reference_epochs=2, finetune_images=1000, epochs=1, test_images=200,
                   deepfool_set_images=1000, fig4_c=[5, 45], fig4_images=500, nets=["MLP", "LeNet"],
                   attack_steps=dict(deepfool=50, cw=100, pgd=40, apgd=100)),
        full=dict(train_images=60000, reference_epochs=10, finetune_images=60000, epochs=5, test_images=10000,
                  deepfool_set_images=60000, fig4_c=[5, 15, 25, 35, 45], fig4_images=60000,
                  nets=["MLP", "LeNet"], attack_steps=dict(deepfool=50, cw=100, pgd=40, apgd=100)))
    x_train, y_train = rk.datasets.mnist("train").tensors
    x_test, y_test = rk.datasets.mnist("test").tensors
    x, y = x_test[:s.test_images].contiguous(), y_test[:s.test_images].contiguous()
    reference_data = (x_train[:s.train_images].contiguous(), y_train[:s.train_images].contiguous())
    tune_data = (x_train[:s.finetune_images].contiguous(), y_train[:s.finetune_images].contiguous())
    finetune = dict(epochs=s.epochs, batch_size=100, optimizer="sgd", lr=5e-4, momentum=0.9, weight_decay=5e-4,
                    seed=ctx.seed)

    def reference(net: str) -> nn.Module:
        recipe = dict(net=net, images=s.train_images, epochs=s.reference_epochs, batch_size=100, optimizer="sgd",
                      lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="cosine", seed=ctx.seed)

        def train(model, ckpt):
            fit(model, reference_data, None, epochs=s.reference_epochs, batch_size=100, optimizer="sgd", lr=0.05,
                momentum=0.9, weight_decay=5e-4, schedule="cosine", seed=ctx.seed, checkpoint_dir=ckpt,
                resume=True, progress=ctx.progress, device=ctx.device)
        return ctx.model(f"deep-defense-{net.lower()}-reference", recipe, lambda: NETS[net](), train)

    def tuned(net: str, label: str, ref: nn.Module, make_data, objective=None, constraints=(), recipe=()):
        """Fine-tuned from ``ref``; ``make_data()`` builds the training set only when the model is not cached."""
        full_recipe = dict(net=net, from_reference=True, **finetune, **dict(recipe))

        def build():
            model = NETS[net]()
            model.load_state_dict(ref.state_dict())
            return model

        def train(model, ckpt):
            fit(model, make_data(), objective, schedule=finetune_schedule(s.epochs), constraints=constraints,
                checkpoint_dir=ckpt, resume=True, progress=ctx.progress, device=ctx.device, **finetune)
        return ctx.model(f"deep-defense-{net.lower()}-{label}", full_recipe, build, train)

    def deep_defense(net: str, c: float = 25.0, layers=None) -> rk.defenses.DeepDefense:
        return rk.defenses.DeepDefense(lam=15.0, c=c, d=5.0, steps=5, overshoot=0.02, candidates=10,
                                       jacobian="batched" if net == "MLP" else "loop", layers=layers)

    for net in s.nets:
        ref = reference(net)
        models: Dict[str, nn.Module] = {"Reference": ref}
        models["Par. Train"] = tuned(net, "parseval", ref, lambda: tune_data,
                                     constraints=[rk.defenses.Parseval(beta=1e-4, fraction=0.3)],
                                     recipe=dict(images=s.finetune_images, parseval_beta=1e-4, fraction=0.3))

        def deepfool_set(ref=ref):   # the DeepFool paper's fixed adversarial training set, beside the clean one
            n = s.deepfool_set_images
            adv = rk.defenses.adversarial_dataset(rk.attacks.DeepFool(ref), (x_train[:n], y_train[:n]),
                                                  include_clean=True, progress=ctx.progress)
            return adv.tensors
        models["Adv. Train I"] = tuned(net, "adv-train-1", ref, deepfool_set,
                                       recipe=dict(deepfool_set_images=s.deepfool_set_images, include_clean=True))
        models["Deep Defense"] = tuned(net, "deep-defense", ref, lambda: tune_data, objective=deep_defense(net),
                                       recipe=dict(images=s.finetune_images, lam=15.0, c=25.0, d=5.0, steps=5,
                                                   candidates=10))
        measure(ctx, net, models, x, y, s.attack_steps)

    if "LeNet" in s.nets:
        layerwise(ctx, s, reference("LeNet"), deep_defense, tuned, x, y)
    ctx.note("Table 1", f"Bundled MNIST; {s.test_images} test images; reference trained on {s.train_images} "
                        f"images for {s.reference_epochs} epochs, fine-tuned on {s.finetune_images} for {s.epochs} "
                        f"(the paper: all 60,000, 5 epochs). rho_2 is over the correctly classified images "
                        f"DeepFool (50 steps) broke.")
    ctx.note("Table 2", "l2 columns are mean perturbation norms over the correctly classified images the attack "
                        "broke (C&W: CW.fast, 5 x 100 iterations, not the paper's CleverHans search). rho_inf is "
                        "the smallest fooling FGS budget on a 0.005 grid. PGD: 40 steps of 0.01, random start; "
                        "APGD-CE: 100 steps (not in the paper). The PASS column is not reproduced (no "
                        "implementation of the PASS score here).")


def measure(ctx: Context, net: str, models: Dict[str, nn.Module], x, y, steps: Dict[str, int]) -> None:
    key = net.lower()
    eps_ref = ctx.step(f"{key}-eps-ref", lambda: {"eps_ref": fgs_eps_ref(models["Deep Defense"], x, y)["eps_ref"]})
    eps_ref = eps_ref["eps_ref"]
    rho2: Dict[str, list] = {"ours": [], "paper": []}        # Table 1's rho_2 column, drawn as bars
    for method, model in models.items():
        slug = f"{key}-{method.lower().replace(' ', '-').replace('.', '')}"
        attacks = {"deepfool": rk.attacks.DeepFool(model, steps=steps["deepfool"]),
                   "cw-l2": rk.attacks.CW.fast(model, steps=steps["cw"]),
                   "pgd": rk.attacks.PGD(model, eps=LINF_EPS, step_size=0.01, steps=steps["pgd"]),
                   "apgd-ce": rk.attacks.APGD(model, eps=LINF_EPS, steps=steps["apgd"])}
        res = ctx.evaluate(slug, model, attacks, x, y, checks="static")
        m = {name: entry["metrics"] for name, entry in res["attacks"].items()}

        def fgs():
            table = fgs_eps_ref(model, x, y, reference=eps_ref)
            minimal = fgs_minimal_eps(model, x, y, grid=200, refine=0)     # the 0.005 grid up to 1
            with torch.no_grad():
                correct = model(x).argmax(1) == y
            x_linf = x.flatten(1).abs().amax(1)
            attacked = correct & torch.isfinite(minimal)
            return {"accuracy": {str(k): v for k, v in table["accuracy"].items()}, "rho_inf": rho(minimal.clamp_max(1.0), x_linf, attacked)}
        f = ctx.step(f"{slug}-fgs", fgs)
        p1, p2 = TABLE1[(net, method)], TABLE2[(net, method)]
        row = f"{net} {method}"
        ctx.cell("Table 1", row=row, column="accuracy (%)", paper=p1[0],
                 ours=100 * res["clean"]["accuracy"], fmt=".2f")
        ctx.cell("Table 1", row=row, column="rho_2", paper=p1[1], ours=m["deepfool"]["rho2"], fmt=".3f")
        for i, multiple in enumerate(("0.2", "0.5", "1.0")):
            ctx.cell("Table 1", row=row, column=f"acc. @{multiple} eps_ref (%)", paper=p1[2 + i],
                     ours=100 * f["accuracy"][multiple], fmt=".2f")
        ctx.cell("Table 1", row=row, column="APGD-CE acc. @0.1 (%)", paper=None,
                 ours=100 * m["apgd-ce"]["robust_accuracy"], fmt=".2f", note="not in the paper")
        ctx.cell("Table 2", row=row, column="l2 (DeepFool)", paper=p2[0], ours=m["deepfool"]["l2_mean"], fmt=".2f")
        ctx.cell("Table 2", row=row, column="rho_inf (FGS)", paper=p2[1], ours=f["rho_inf"], fmt=".3f")
        ctx.cell("Table 2", row=row, column="l2 (C&W)", paper=p2[2], ours=m["cw-l2"]["l2_mean"], fmt=".2f")
        ctx.cell("Table 2", row=row, column="acc. PGD @0.1 (%)", paper=p2[3],
                 ours=100 * m["pgd"]["robust_accuracy"], fmt=".2f")
        ctx.cell("Table 2", row=row, column="acc. APGD-CE @0.1 (%)", paper=None,
                 ours=100 * m["apgd-ce"]["robust_accuracy"], fmt=".2f", note="not in the paper")
        rho2["ours"].append(m["deepfool"]["rho2"])
        rho2["paper"].append(p1[1])
    ctx.bars("Table 1", labels=[f"{net} {method}" for method in models], groups=rho2, ylabel="rho_2 (DeepFool)")
    ctx.note("Table 1", f"{net}: eps_ref = {eps_ref:.4f} (FGS, from our Deep Defense model, as in the paper).")


def layerwise(ctx: Context, s, ref: nn.Module, deep_defense, tuned, x, y) -> None:
    x_train, y_train = rk.datasets.mnist("train").tensors
    data = (x_train[:s.fig4_images].contiguous(), y_train[:s.fig4_images].contiguous())
    for layer in FIG4_LAYERS:
        points = []
        for c in s.fig4_c:
            model = tuned("LeNet", f"fig4-{layer}-c{c:g}", ref, lambda: data,
                          objective=deep_defense("LeNet", c=float(c), layers=layer),
                          recipe=dict(images=s.fig4_images, lam=15.0, c=float(c), d=5.0, steps=5, candidates=10,
                                      only_layer=layer))
            res = ctx.evaluate(f"fig4-{layer}-c{c:g}", model,
                               {"deepfool": rk.attacks.DeepFool(model, steps=s.attack_steps["deepfool"])}, x, y,
                               checks="static")
            rho2, acc = res["attacks"]["deepfool"]["metrics"]["rho2"], 100 * res["clean"]["accuracy"]
            points.append((rho2, acc))
            ctx.cell("Fig. 4", row=f"{layer} only, c = {c:g}", column="rho_2", paper=None, ours=rho2, fmt=".3f")
            ctx.cell("Fig. 4", row=f"{layer} only, c = {c:g}", column="accuracy (%)", paper=None, ours=acc, fmt=".2f")
        ctx.series("Fig. 4", name=layer, x=[p[0] for p in points], y=[p[1] for p in points], xlabel="rho_2",
                   ylabel="accuracy (%)")
    ctx.note("Fig. 4", f"LeNet fine-tuned on {s.fig4_images} images with the regulariser's gradient reaching one "
                       f"layer (lam 15, d 5, c in {list(s.fig4_c)}); the paper plots points only, so there are no "
                       f"typed-in numbers to compare: its finding is that fc1 alone gives the best rho_2 at a "
                       f"given accuracy.")


PAPER = Paper(
    name="deep-defense",
    title="Deep Defense: Training DNNs with Improved Adversarial Robustness (Yan et al., NeurIPS 2018)",
    tables={"Table 1": "MNIST MLP and LeNet: accuracy, rho_2 under DeepFool, FGS accuracy at 0.2/0.5/1.0 eps_ref "
                       "(+ APGD-CE accuracy at eps 0.1)",
            "Table 2": "MNIST MLP and LeNet: l2 under DeepFool and C&W, rho_inf under FGS, PGD accuracy at eps 0.1 "
                       "(+ APGD-CE)",
            "Fig. 4": "LeNet, Deep Defense regularising one layer at a time: rho_2 and accuracy for several c"},
    run=run,
)
