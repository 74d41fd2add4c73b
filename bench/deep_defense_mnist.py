"""The Deep Defense seed's Tables 1 and 2 on MNIST, with robustkit's own training loop and attacks.

For each of the seed's MNIST nets (MLP 784-500-150-10, Caffe LeNet):
1. a reference model trained with ``rk.training.fit`` (plain cross-entropy, SGD with a cosine schedule);
2. fine-tuned from it, with the seed's fine-tuning recipe (batch 100, SGD lr 5e-4 momentum 0.9 weight decay
   5e-4, the learning rate halved for the last epoch of five): plain cross-entropy ("Clean"), Parseval
   training ("Par. Train", beta 1e-4, fraction 0.3), a fixed DeepFool training set concatenated with the
   clean one ("Adv. Train I"), Goodfellow et al.'s objective ("Adv. Train II": 0.5 CE(x) + 0.5 CE(x_FGSM) at
   ``--adv2-eps``; the seed compares against it in its supplement, which gives no numbers we have) and Deep
   Defense (lam 15, c 25, d 5);
3. evaluated on the first ``--test-images`` MNIST test images: accuracy, rho_2 under DeepFool, FGS accuracy at
   0.2 / 0.5 / 1.0 eps_ref (eps_ref: the FGS budget at which the Deep Defense model is 50% wrong), and, as
   Table 2 does for the MLP, DeepFool's median L2, C&W L2 (CW.fast) and PGD accuracy at eps 0.1 (L-inf), plus
   a stronger attack the seed did not run: APGD-CE at eps 0.1 with restarts.

Every stage checkpoints under ``--out`` and a rerun resumes; the tables go to ``--out/tables.md`` and
``bench/results/<machine>/deep_defense_mnist.json``.

    python bench/deep_defense_mnist.py --models mlp --finetune-images 20000 --finetune-epochs 2   # a CPU-sized run

``--fig4 lenet`` runs the layer-wise experiment of the seed's Fig. 4 instead: Deep Defense with the
regulariser's gradient reaching one layer (``DeepDefense(layers=[...])``), for c in 5, 15, 25, 35, 45.
"""
from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import torch

import harness

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
import robustkit as rk  # noqa: E402
from robustkit.eval.eps_ref import fgs_accuracy, fgs_eps_ref, fgs_minimal_eps  # noqa: E402
from robustkit.models import CaffeLeNet, DeepDefenseMLP  # noqa: E402

NETS = {"mlp": DeepDefenseMLP, "lenet": CaffeLeNet}
PAPER = {  # Table 1: accuracy, rho_2, FGS accuracy at 0.2 / 0.5 / 1.0 eps_ref
    ("mlp", "Reference"): (98.31, 0.111, 72.76, 29.08, 3.31),
    ("mlp", "Par. Train"): (98.32, 0.111, 77.44, 28.95, 2.96),
    ("mlp", "Adv. Train I"): (98.49, 0.162, 87.70, 59.69, 22.55),
    ("mlp", "Deep Defense"): (98.65, 0.225, 95.04, 88.93, 50.00),
    ("lenet", "Reference"): (99.02, 0.205, 90.95, 53.88, 19.75),
    ("lenet", "Par. Train"): (99.10, 0.203, 91.68, 66.48, 19.64),
    ("lenet", "Adv. Train I"): (99.18, 0.263, 95.20, 74.82, 41.40),
    ("lenet", "Deep Defense"): (99.34, 0.284, 96.51, 88.93, 50.00),
}
PAPER2 = {  # Table 2 (supplementary): mean DeepFool L2, rho_inf under FGS, mean C&W L2, PGD accuracy at eps 0.1
    ("mlp", "Reference"): (0.81, 5.40e-2, 0.84, 1.19),
    ("mlp", "Par. Train"): (0.80, 5.78e-2, 0.83, 1.18),
    ("mlp", "Adv. Train I"): (1.17, 9.46e-2, 1.17, 4.11),
    ("mlp", "Deep Defense"): (1.64, 1.53e-1, 1.58, 33.18),
    ("lenet", "Reference"): (1.48, 1.29e-1, 1.40, 26.17),
    ("lenet", "Par. Train"): (1.50, 1.50e-1, 1.58, 23.06),
    ("lenet", "Adv. Train I"): (1.90, 2.05e-1, 1.71, 50.67),
    ("lenet", "Deep Defense"): (2.05, 2.36e-1, 1.84, 64.54),
}
VARIANTS = ("Reference", "Clean", "Par. Train", "Adv. Train I", "Adv. Train II", "Deep Defense")


def add_cpu_seconds(out: pathlib.Path, key: str, seconds: float) -> None:
    """Process CPU seconds per stage in ``out/cpu_seconds.json``, summed over resumed invocations (a stage
    loaded from a finished checkpoint adds about nothing)."""
    path = out / "cpu_seconds.json"
    table = json.loads(path.read_text()) if path.exists() else {}
    table[key] = table.get(key, 0.0) + seconds
    path.write_text(json.dumps(table, indent=1))


def train(net: str, variant: str, data, reference_state, args, out: pathlib.Path):
    start = time.process_time()
    try:
        return _train(net, variant, data, reference_state, args, out)
    finally:
        add_cpu_seconds(out, f"{net}/{variant}/train", time.process_time() - start)


def _train(net: str, variant: str, data, reference_state, args, out: pathlib.Path):
    torch.manual_seed(0)
    model = NETS[net]()
    folder = out / f"{net}-{variant.lower().replace(' ', '-').replace('.', '')}"
    if variant == "Reference":
        rk.training.fit(model, data, None, epochs=args.reference_epochs, batch_size=100, optimizer="sgd",
                        lr=args.reference_lr, momentum=0.9, weight_decay=5e-4, schedule="cosine",
                        checkpoint_dir=folder, resume=True, seed=0)
        return model.eval()
    model.load_state_dict(reference_state)
    data = (data[0][:args.finetune_images], data[1][:args.finetune_images])
    objective, constraints, train_data = None, [], data
    if variant == "Par. Train":
        constraints = [rk.defenses.Parseval(beta=1e-4, fraction=0.3)]
    elif variant == "Adv. Train I":
        path = out / f"{net}-deepfool-set.pt"
        if path.exists():
            images, labels = torch.load(path, weights_only=True)
        else:
            reference = NETS[net]()
            reference.load_state_dict(reference_state)
            adv = rk.defenses.adversarial_dataset(rk.attacks.DeepFool(reference.eval()), data, include_clean=True,
                                                  progress=True)
            images, labels = adv.tensors
            torch.save((images, labels), path)
        train_data = (images, labels)
    elif variant == "Adv. Train II":
        objective = rk.defenses.AdversarialTraining(rk.attacks.FGSM(model, eps=args.adv2_eps), clean_weight=0.5)
    elif variant == "Deep Defense":
        objective = rk.defenses.DeepDefense(lam=15.0, c=25.0, d=5.0, steps=5, overshoot=0.02, candidates=10,
                                            jacobian="batched" if net == "mlp" else "loop")
    epochs = args.finetune_epochs
    rk.training.fit(model, train_data, objective, epochs=epochs, batch_size=100, optimizer="sgd", lr=5e-4,
                    momentum=0.9, weight_decay=5e-4, schedule=lambda p: 1.0 if p < (epochs - 1) / epochs or
                    epochs == 1 else 0.5, constraints=constraints, checkpoint_dir=folder, resume=True, seed=0)
    return model.eval()


def evaluate(model, x, y, eps_ref=None):
    with torch.no_grad():
        accuracy = float((model(x).argmax(1) == y).float().mean())
    # rho_2 and the norms over the correctly classified images: DeepFool from a wrong prediction has nothing
    # to do (its perturbation is 0), and the seed's rho_2 (Eq. 7) measures how far the right answers are
    with torch.no_grad():
        right = model(x).argmax(1) == y
    df = rk.attacks.DeepFool(model, steps=50).run(x[right], y[right])
    fgs = fgs_eps_ref(model, x, y, reference=eps_ref)
    row = {"accuracy": accuracy, "rho2": float(df.extras["rho2"][df.success].mean()),
           "deepfool_success": float(df.success.float().mean()),
           "deepfool_l2_mean": float(df.l2[df.success].mean()),
           "deepfool_l2_median": float(df.l2[df.success].median()), "eps_ref": fgs["eps_ref"],
           "fgs_accuracy": fgs["accuracy"]}
    # Table 2's rho_inf (supplementary Eq. 2): each correctly classified image's smallest fooling FGS budget
    # over its L-inf norm, averaged over the images some budget up to 1 fools
    min_eps = fgs_minimal_eps(model, x[right], y[right])
    found = torch.isfinite(min_eps)
    row["rho_inf"] = float((min_eps[found] / x[right].flatten(1).amax(1).double()[found]).mean())
    row["fgs_min_eps_found"] = float(found.double().mean())
    sub_x, sub_y = x[right][:500], y[right][:500]
    cw = rk.attacks.CW.fast(model).run(sub_x, sub_y)
    row["cw_success"] = float(cw.success.float().mean())
    row["cw_l2_median"] = float(cw.l2[cw.success].median()) if bool(cw.success.any()) else float("nan")
    row["cw_l2_mean"] = float(cw.l2[cw.success].mean()) if bool(cw.success.any()) else float("nan")
    row["pgd_0.1_accuracy"] = fgs_accuracy(model, x, y, 0.1, make_attack=lambda m, e: rk.attacks.PGD(
        m, eps=e, step_size=0.01, steps=40))
    if hasattr(rk.attacks, "APGD"):   # accuracy on all of x[:500], like the PGD column
        apgd = rk.attacks.APGD(model, eps=0.1, norm="linf", steps=100, restarts=3)
        xs, ys = x[:500], y[:500]
        with torch.no_grad():
            row["apgd_0.1_accuracy"] = float((model(apgd(xs, ys)).argmax(1) == ys).float().mean())
    return row


LAYERS = {"mlp": ("fc1", "fc2", "fc3"), "lenet": ("conv1", "conv2", "fc1", "fc2")}


def layerwise(args, out: pathlib.Path, data, x, y) -> dict:
    """Fig. 4: Deep Defense (lam 15, d 5) with the regulariser's gradient reaching one layer's parameters
    (``DeepDefense(layers=[layer])``; the cross-entropy still trains every layer), for each c; beside it a
    plain cross-entropy fine-tuning and, with ``all`` in ``--fig4-layers``, the unmasked regulariser, at the
    same budget. Accuracy and rho_2 (DeepFool, 50 steps, over the correctly classified test images)."""
    net = args.fig4
    results_path = out / "fig4.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {}
    reference = train(net, "Reference", data, None, args, out)
    tune = (data[0][:args.fig4_images], data[1][:args.fig4_images])
    epochs = args.fig4_epochs
    layers = [name for name in args.fig4_layers.split(",") if name] if args.fig4_layers else list(LAYERS[net])

    def measure(key, model):
        if key not in results:
            cpu = time.process_time()
            with torch.no_grad():
                right = model(x).argmax(1) == y
            df = rk.attacks.DeepFool(model, steps=50).run(x[right], y[right])
            results[key] = {"accuracy": float(right.float().mean()),
                            "rho2": float(df.extras["rho2"][df.success].mean()),
                            "deepfool_success": float(df.success.float().mean())}
            add_cpu_seconds(out, f"fig4/{key}/evaluate", time.process_time() - cpu)
            results_path.write_text(json.dumps(results, indent=1))
        print(key, results[key], flush=True)

    def tuned(label, objective):
        cpu = time.process_time()
        torch.manual_seed(0)
        model = NETS[net]()
        model.load_state_dict(reference.state_dict())
        rk.training.fit(model, tune, objective, epochs=epochs, batch_size=100, optimizer="sgd", lr=5e-4,
                        momentum=0.9, weight_decay=5e-4, schedule=lambda p: 1.0 if p < (epochs - 1) / epochs or
                        epochs == 1 else 0.5, checkpoint_dir=out / f"fig4-{net}-{label}-n{len(tune[0])}x{epochs}",
                        resume=True, seed=0)
        add_cpu_seconds(out, f"fig4/{net}/{label}/train", time.process_time() - cpu)
        return model.eval()

    measure(f"{net}/reference", reference)
    measure(f"{net}/clean", tuned("clean", None))
    for c in (float(v) for v in args.fig4_c.split(",")):   # c outermost: a partial run compares the layers
        for layer in layers:
            objective = rk.defenses.DeepDefense(lam=15.0, c=c, d=5.0, steps=5, overshoot=0.02, candidates=10,
                                                jacobian="batched" if net == "mlp" else "loop",
                                                layers=None if layer == "all" else [layer])
            measure(f"{net}/{layer}/c{c:g}", tuned(f"{layer}-c{c:g}", objective))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="mlp,lenet")
    parser.add_argument("--train-images", type=int, default=60000)
    parser.add_argument("--test-images", type=int, default=2000)
    parser.add_argument("--reference-epochs", type=int, default=10)
    parser.add_argument("--reference-lr", type=float, default=0.05)
    parser.add_argument("--finetune-images", type=int, default=60000,
                        help="fine-tune on the first N training images (the seed: all 60,000)")
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--adv2-eps", type=float, default=0.1,
                        help="FGSM budget of Adv. Train II (L-inf; 0.1 is Table 2's PGD budget, near eps_ref)")
    parser.add_argument("--out", default="runs/deep_defense_mnist",
                        help="checkpoints and results; one folder per budget (a rerun resumes what is there)")
    parser.add_argument("--name", default="deep_defense_mnist", help="bench/results/<machine>/<name>.json")
    parser.add_argument("--fig4", choices=tuple(NETS), default=None,
                        help="run the layer-wise experiment of Fig. 4 on this net instead of the tables")
    parser.add_argument("--fig4-c", default="5,15,25,35,45")
    parser.add_argument("--fig4-layers", default=None,
                        help="comma-separated layer names (default: every layer of the net); 'all' = unmasked")
    parser.add_argument("--fig4-images", type=int, default=60000)
    parser.add_argument("--fig4-epochs", type=int, default=5)
    args = harness.parse_arguments(parser, threads=None, clock="wall")
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    x_train, y_train = rk.datasets.mnist("train").tensors
    data = (x_train[:args.train_images].contiguous(), y_train[:args.train_images].contiguous())
    x_test, y_test = rk.datasets.mnist("test").tensors
    x, y = x_test[:args.test_images].contiguous(), y_test[:args.test_images].contiguous()
    if args.fig4:
        rows = layerwise(args, out, data, x, y)
        harness.Result(args.name, rows, notes={"args": vars(args),
                                               "cpu_seconds": json.loads((out / "cpu_seconds.json").read_text())}
                       ).write()
        return
    results = {}
    results_path = out / "results.json"
    if results_path.exists():
        results = json.loads(results_path.read_text())
    for net in args.models.split(","):
        start = time.time()
        models = {}
        reference = train(net, "Reference", data, None, args, out)
        models["Reference"] = reference
        for variant in VARIANTS[1:]:
            models[variant] = train(net, variant, data, reference.state_dict(), args, out)
        train_seconds = time.time() - start
        eps_ref = fgs_eps_ref(models["Deep Defense"], x, y)["eps_ref"]
        rows = {}
        for variant, model in models.items():
            key = f"{net}/{variant}"
            if key not in results:
                cpu = time.process_time()
                results[key] = evaluate(model, x, y, eps_ref=eps_ref)
                add_cpu_seconds(out, f"{key}/evaluate", time.process_time() - cpu)
                results_path.write_text(json.dumps(results, indent=1))
            rows[variant] = results[key]
        results[f"{net}/seconds"] = {"train": train_seconds, "total": time.time() - start,
                                     "cpu": json.loads((out / "cpu_seconds.json").read_text())}
        results_path.write_text(json.dumps(results, indent=1))
    lines = ["Table 1", "", "| net | model | accuracy | ρ₂ | FGS 0.2 ε_ref | 0.5 ε_ref | 1.0 ε_ref | PGD-40 ε=0.1 | "
             "APGD-CE ε=0.1 | paper: acc / ρ₂ / 0.2 / 0.5 / 1.0 |", "|" + "---|" * 10]
    table2 = ["Table 2", "", "| net | model | DeepFool L2 mean (median) | ρ∞ (FGS) | C&W L2 mean (median) | "
              "PGD-40 ε=0.1 | paper: L2 / ρ∞ / C&W / PGD |", "|" + "---|" * 7]
    for key, row in results.items():
        if key.endswith("/seconds"):
            continue
        net, variant = key.split("/")
        acc = {str(k): v for k, v in row["fgs_accuracy"].items()}
        paper, paper2 = PAPER.get((net, variant)), PAPER2.get((net, variant))
        apgd = f"{100 * row['apgd_0.1_accuracy']:.2f}%" if "apgd_0.1_accuracy" in row else "–"
        pgd = f"{100 * row['pgd_0.1_accuracy']:.2f}%"
        cells = [net, variant, f"{100 * row['accuracy']:.2f}%", f"{row['rho2']:.3f}",
                 *(f"{100 * acc[m]:.2f}%" for m in ("0.2", "0.5", "1.0")), pgd, apgd,
                 " / ".join(str(v) for v in paper) if paper else "–"]
        lines.append("| " + " | ".join(cells) + " |")
        cells = [net, variant, f"{row.get('deepfool_l2_mean', float('nan')):.2f} ({row['deepfool_l2_median']:.2f})",
                 f"{row['rho_inf']:.3f}" if "rho_inf" in row else "–",
                 f"{row.get('cw_l2_mean', float('nan')):.2f} ({row['cw_l2_median']:.2f})", pgd,
                 f"{paper2[0]} / {paper2[1]:.3g} / {paper2[2]} / {paper2[3]}%" if paper2 else "–"]
        table2.append("| " + " | ".join(cells) + " |")
    lines += [""] + table2
    (out / "tables.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    harness.Result(args.name, results, notes={"args": vars(args)}).write()


if __name__ == "__main__":
    main()
