"""The retraining seed's claims on real data (Thakur, Ding and Li; Tables 1-7), at a scale two shared CPU cores
can run in minutes: small models, subsets, short fine-tuning. See docs/retraining.md for the tables.

MNIST: the cached LeNet (robustkit.zoo.trained_mnist_model), train = the 60,000 training images,
test = the first --n-test MNIST test images.
CIFAR-10: the shared copy has 1,000 test images only, so the first 40,000 training images are the training
set (or the first --n-train of them) and --n-test images of the last 10,000 are held out as the test
set; a small CNN is trained here (3 epochs).

Per attacker (GAP universal, FGSM eps=0.07, DeepFool L2, C&W L2 toward the least-likely class):
  1. label accuracy of PCA + 1-NN on adversarial versions of training images and of held-out images;
  2. retrain (fine-tune on --n-original training images + n labelled adversarial images) and re-attack,
     for several n (GAP, FGSM) or one n (DeepFool, C&W: their cost);
  3. the fooling-class mechanism: which images an "auto" threshold flags (held-out, adversarial, uniform
     noise, a large-budget GAP), and how 2 fooling clusters split noise from GAP outputs;
  4. retraining with those fooling images as a new class (fooling="new_class") or left out ("drop").

    python bench/retraining.py --dataset mnist|cifar10 [--n-test 1000]
    python bench/retraining.py --dataset mnist --tiny   # 6,000 training images, small n, GAP 1 epoch, C&W 1x10

Writes bench/results/<machine label>/retraining_<dataset>.json after every row (parts run separately merge
into it).
"""
from __future__ import annotations

import argparse
import functools
import json
import pathlib
import time

import torch
from torch import nn

import harness
from data import mnist_lenet
from robustkit.attacks import FGSM, GAP
from robustkit.datasets import cifar10, mnist
from robustkit.defenses import KNNLabeler, Retrainer
from robustkit.metrics import fooling_ratio
from robustkit.training import train_classifier
from robustkit.zoo import default_cache_dir

REPO = pathlib.Path(__file__).resolve().parents[1]
CIFAR_ROOT = REPO.parent / "shared" / "data" / "cifar10"
GAP_EPS_MNIST = 0.3  # at 10/255 GAP fools LeNet on under 1% of held-out MNIST images (bench/gap.py)


def cifar_cnn() -> nn.Module:
    from robustkit.models import CIFAR10_MEAN, CIFAR10_STD
    from robustkit.nn import Normalize
    return nn.Sequential(Normalize(CIFAR10_MEAN, CIFAR10_STD, persistent=False),
                         nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                         nn.Linear(64 * 16, 128), nn.ReLU(), nn.Linear(128, 10))


def load(dataset: str, n_test: int, n_train: int):
    if dataset == "mnist":
        x_tr, y_tr = mnist("train").tensors
        x_te, y_te = mnist("test").tensors
        return (x_tr, y_tr), (x_te[:n_test], y_te[:n_test]), mnist_lenet()
    x, y = cifar10(CIFAR_ROOT, "train").tensors
    train, test = (x[:n_train], y[:n_train]), (x[40000:40000 + n_test], y[40000:40000 + n_test])
    path = default_cache_dir() / f"retraining-cifar-cnn-n{n_train}-e3-s0.pt"
    model = cifar_cnn()
    if path.is_file():
        model.load_state_dict(torch.load(path, weights_only=True))
    else:
        model = train_classifier(model, torch.utils.data.TensorDataset(*train), epochs=3, lr=1e-3, batch_size=128,
                                 progress=False)
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    return train, test, model.eval()


def gap_factory(x_fit: torch.Tensor, eps: float, epochs: int = 4):
    # loss="prediction": on MNIST it fools 2.5-4x more held-out images than the least-likely loss of the
    # authors' code (bench/gap.py); 4 epochs of 32 steps: the held-out fooling ratio has plateaued by then
    batches = [x_fit[i:i + 64] for i in range(0, x_fit.shape[0], 64)]
    return lambda m: GAP(m, eps=eps, loss="prediction", width=16, blocks=3, seed=0).fit(
        batches, epochs=epochs, lr=2e-3, progress=False)


def attackers(x_train, dataset, cw_budget, gap_fit=2000, gap_epochs=4):
    out = {"GAP": (gap_factory(x_train[:gap_fit], 10 / 255 if dataset == "cifar10" else GAP_EPS_MNIST,
                               gap_epochs), None),
           "FGSM": (lambda m: FGSM(m, eps=0.07), None)}
    try:
        from robustkit.attacks.deepfool import DeepFool
        out["DeepFool"] = (lambda m: DeepFool(m, steps=50), None)
    except ImportError as error:
        print(f"DeepFool unavailable: {error}")
    try:
        from robustkit.attacks.cw import CW
        out["CW-L2 least-likely"] = (lambda m: functools.partial(
            CW(m, binary_search_steps=cw_budget[0], steps=cw_budget[1], lr=0.05, initial_const=1.0), target="least_likely"), None)
    except ImportError as error:
        print(f"C&W unavailable: {error}")
    return {k: v[0] for k, v in out.items()}


def batched(attack, x, y, batch=250):
    return torch.cat([attack(x[i:i + batch], y[i:i + batch]) for i in range(0, x.shape[0], batch)])


def label_accuracy(name, factory, model, labeler, train, test, n):
    g = torch.Generator().manual_seed(1)
    idx = torch.randperm(train[0].shape[0], generator=g)[:n]
    attack = factory(model)
    adv_tr = batched(attack, train[0][idx], train[1][idx])
    adv_te = batched(attack, test[0][:n], test[1][:n])
    pred_tr, pred_te = labeler.predict(adv_tr), labeler.predict(adv_te)
    clean_tr = model(train[0][idx]).argmax(1)
    return {"attacker": name, "n": n,
            "fooling_ratio_on_train_images": fooling_ratio(clean_tr, model(adv_tr).argmax(1)),
            "label_accuracy_adv_train": (pred_tr == train[1][idx]).double().mean().item(),
            "label_accuracy_adv_heldout": (pred_te == test[1][:n]).double().mean().item(),
            "label_accuracy_clean_heldout": (labeler.predict(test[0][:n]) == test[1][:n]).double().mean().item(),
            "linf_mean": (adv_tr - train[0][idx]).flatten(1).abs().amax(1).mean().item(),
            "l2_mean": (adv_tr - train[0][idx]).flatten(1).norm(dim=1).mean().item()}


def fooling_mechanism(model, train, test, dataset, gap_fit=2000, gap_epochs=4):
    labeler = KNNLabeler(pca_dim=50 if dataset == "mnist" else 300, fooling_threshold="auto").fit(*train)
    n = min(1000, test[0].shape[0])
    noise = torch.rand(n, *train[0].shape[1:], generator=torch.Generator().manual_seed(2))
    big_gap = gap_factory(train[0][:gap_fit], eps=0.5, epochs=gap_epochs)(model)
    sets = {"held-out images": test[0][:n], "FGSM eps=0.07 train images": FGSM(model, eps=0.07)(
        train[0][:n], train[1][:n]), "uniform noise": noise, "GAP eps=0.5 held-out": big_gap(test[0][:n])}
    out = {"threshold": labeler.threshold_, "rule": "auto: 1.1 x 99th percentile of leave-one-out fooling distances",
           "flagged": {k: labeler.fooling_mask(v).double().mean().item() for k, v in sets.items()},
           "median_fooling_distance": {k: labeler.fooling_distance(v).median().item() for k, v in sets.items()}}
    two = KNNLabeler(pca_dim=labeler.pca_dim, fooling_threshold="auto", fooling_clusters=2).fit(*train)
    labels = two.predict(torch.cat([sets["uniform noise"], sets["GAP eps=0.5 held-out"]]))
    noise_lab, gap_lab = labels[:n], labels[n:]
    out["two_clusters"] = {"noise_labels": torch.bincount(noise_lab, minlength=12).tolist(),
                           "gap_labels": torch.bincount(gap_lab, minlength=12).tolist()}
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=["mnist", "cifar10"], required=True)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--n-train", type=int, default=40000,
                        help="CIFAR-10: training images (the first ones; the held-out test images come from 40000 on)")
    parser.add_argument("--cw-budget", type=int, nargs=2, default=[3, 100], metavar=("SEARCHES", "STEPS"))
    parser.add_argument("--n-label", type=int, default=300, help="images per attacker for the label accuracy")
    parser.add_argument("--n-original", type=int, default=3000, help="original images in the retraining set")
    parser.add_argument("--n-sweep", type=int, nargs="+", default=[3000, 1500, 750, 540],
                        help="adversarial images for the GAP and FGSM retraining sweeps (the seed's 50k/25k/12.5k/9k)")
    parser.add_argument("--n-whitebox", type=int, default=300, help="adversarial images for DeepFool and C&W")
    parser.add_argument("--parts", nargs="+", default=["labels", "fooling", "retrain", "fooling-retrain"],
                        help="fooling-retrain (with retrain): also retrain with a large-budget GAP's fooling images")
    parser.add_argument("--tiny", action="store_true",
                        help="checks the script: 6,000 training images, 100 test, n of 20-200, GAP 1 epoch on 256, "
                             "C&W 1x10")
    harness.add_arguments(parser, threads=1, clock="wall")
    args = parser.parse_args()
    harness.apply_arguments(args)
    gap_fit, gap_epochs = 2000, 4
    if args.tiny:
        args.n_test, args.n_label, args.n_original, args.n_sweep, args.n_whitebox = 100, 20, 200, [100], 20
        args.cw_budget, gap_fit, gap_epochs = [1, 10], 256, 1
    torch.manual_seed(0)
    start = time.perf_counter()
    train, test, model = load(args.dataset, args.n_test, args.n_train)
    if args.tiny:
        train = (train[0][:6000], train[1][:6000])
    dim = 50 if args.dataset == "mnist" else 300
    labeler = KNNLabeler(pca_dim=dim).fit(*train)
    factories = attackers(train[0], args.dataset, args.cw_budget, gap_fit, gap_epochs)
    result = {"command": harness.environment()["command"], "dataset": args.dataset, "pca_dim": dim,
              "n_train": train[0].shape[0], "n_test": test[0].shape[0],
              "clean_test_accuracy": (model(test[0]).argmax(1) == test[1]).double().mean().item(),
              "attackers": list(factories), "cw_budget": args.cw_budget, "n_sweep": args.n_sweep,
              "n_original": args.n_original}
    output = harness.Result(f"retraining_{args.dataset}" + ("-quick" if args.tiny else ""), rows={})
    # parts run separately merge into one file (the rows of an older file without the harness's layout: all of it)
    previous = json.loads(output.path().read_text()) if output.path().is_file() else {}
    previous = previous.get("rows", previous) if "environment" in previous else previous
    result = {**previous, **result, "commands": previous.get("commands", []) + [result.pop("command")]}

    def save():
        result["seconds"] = time.perf_counter() - start
        output.rows = result
        output.write()

    if "labels" in args.parts:
        result["label_accuracy"] = []
        for name, factory in factories.items():
            result["label_accuracy"].append(label_accuracy(name, factory, model, labeler, train, test, args.n_label))
            print(result["label_accuracy"][-1], flush=True)
            save()
    if "fooling" in args.parts:
        result["fooling_mechanism"] = fooling_mechanism(model, train, test, args.dataset, gap_fit, gap_epochs)
        print(result["fooling_mechanism"], flush=True)
        save()
    if "retrain" in args.parts:
        g = torch.Generator().manual_seed(0)
        subset = torch.randperm(train[0].shape[0], generator=g)[:args.n_original]
        original = (train[0][subset], train[1][subset])
        result["retraining"] = []
        plan = [(name, n) for name in ("GAP", "FGSM") for n in args.n_sweep]
        plan += [(name, args.n_whitebox) for name in factories if name not in ("GAP", "FGSM")]
        plan = [(name, n, labels, labeler) for name, n in plan
                for labels in (("labeler", "source") if (name, n) == ("FGSM", args.n_sweep[0]) else ("labeler",))]
        if "fooling-retrain" in args.parts:
            # the seed's fooling-image class on real data: a large-budget GAP's outputs are flagged by the auto
            # threshold and become class 10 (new_class) or are left out (drop)
            fooling_labeler = KNNLabeler(pca_dim=dim, fooling_threshold="auto").fit(*train)
            factories["GAP eps=0.5 (fooling)"] = gap_factory(train[0][:gap_fit], eps=0.5, epochs=gap_epochs)
            plan += [("GAP eps=0.5 (fooling)", args.n_sweep[-1], "labeler", fooling_labeler)]
        for name, n, labels, row_labeler in plan:
            for fooling in (("new_class", "drop") if name.endswith("(fooling)") else ("new_class",)):
                t = time.perf_counter()
                report = Retrainer(model, factories[name], row_labeler, n_adversarial=n, epochs=1, lr=5e-4,
                                   labels=labels, fooling=fooling).run(original, test)
                row = {"attacker": name, **report.as_dict(), "seconds": time.perf_counter() - t}
                result["retraining"].append(row)
                print(row, flush=True)
                save()
    save()


if __name__ == "__main__":
    main()
