"""The seeds' claims about logit pairing, defensive distillation and Parseval training, on real MNIST, with
attacks strong enough to believe. Writes ``bench/results/<machine>/defenses_mnist_<part>.json`` (docs/defenses.md
is written from these).

Parts (``--part``; each trains its models once into ``--cache`` and resumes from the per-epoch checkpoints):

- ``distill``: defensive distillation of the LeNet at T in {1, 2, 5, 10, 35, 50, 100} (AML-report seed, Fig. 2;
  its EMNIST is not available here). Accuracy change against the undistilled network; the input-gradient norm
  at T = 1; the report's gradient attack (targeted I-FGSM) vs T; C&W L0 / L2 / L-inf success and median
  distortion; the same I-FGSM and PGD on ``z / T`` (gradient masking removed).
- ``cw``: C&W L-inf and L0 on the students the distill part cached (they cost 10-100x C&W L2).
- ``defendr``: the Defendr seed's Table 1 rows (baseline, CLP, ALP, adversarial training) on clean, 50 % and
  100 % adversarial test sets, under its FGSM (eps 0.12) and under PGD-50 with 10 restarts.
- ``apgd``: APGD-CE and APGD-DLR on the models the defendr part cached.
- ``parseval``: Deep Defense's Table 1 "Reference" and "Par. Train" rows for its MLP (784-500-150-10) and the
  LeNet: accuracy, rho_2 under DeepFool, FGS accuracy at 0.2 / 0.5 / 1.0 eps_ref.

Scale (2 shared CPU cores): a few epochs of Adam instead of the papers' 50, subsets of the test set for the
attacks (``--n-attack``). Every number says how many images it was measured on.

Usage::

    OMP_NUM_THREADS=1 nice python bench/defenses_mnist.py --part distill
    OMP_NUM_THREADS=1 nice python bench/defenses_mnist.py --part defendr
    OMP_NUM_THREADS=1 nice python bench/defenses_mnist.py --part parseval
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import statistics
import sys
import time

import torch
from torch import nn

import robustkit.datasets as rkdata
from robustkit.attacks import CW, FGSM, IFGSM, PGD, DeepFool
from robustkit.defenses import AtTemperature, Distillation, LogitPairing, Parseval, TemperatureCrossEntropy, \
    parseval_tightness
from robustkit.eval.eps_ref import fgs_accuracy, fgs_eps_ref
from robustkit.models.mnist import LeNet, _MnistNet
from robustkit.training.objective import CrossEntropy

TEMPERATURES = (1, 2, 5, 10, 35, 50, 100)
# Trained and attacked in this order, the extremes first, so that a run cut short still spans the range.
RUN_ORDER = (1, 100, 10, 2, 50, 5, 35)
RESULTS = pathlib.Path(__file__).resolve().parent / "results" / f"cpu-{os.cpu_count()}core"


class DeepDefenseMLP(_MnistNet):
    """Deep Defense's MNIST MLP: 784-500-150-10 with ReLU."""

    def __init__(self):
        super().__init__(normalize=True)
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(784, 500), nn.ReLU(), nn.Linear(500, 150), nn.ReLU())
        self.classifier = nn.Linear(150, 10)


# ---- training ---------------------------------------------------------------------------------------------
def train(name, make_model, objective, data, *, epochs, cache, lr=1e-3, batch_size=128, seed=0, constraints=(),
          init=None, monitor=None):
    """Adam, shuffled mini-batches; one checkpoint per epoch under ``cache``; a finished model is loaded, not
    retrained. Returns ``(model in eval mode, CPU seconds spent training in this or earlier runs)``.

    ``monitor``: optional ``(x, y)``; the accuracy on it after every epoch goes into the checkpoint's
    ``history`` (read it back with :func:`history`), to show whether the training has converged. Its cost is
    not counted in the training CPU seconds."""
    from tqdm import tqdm

    path = cache / f"{name}.pt"
    model = make_model()
    if init is not None:
        model.load_state_dict(init.state_dict())
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    state = {"epoch": 0, "cpu_s": 0.0, "history": []}
    if path.exists():
        ckpt = torch.load(path, weights_only=True)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["opt"])
        state = {"epoch": ckpt["epoch"], "cpu_s": ckpt["cpu_s"], "history": list(ckpt.get("history", []))}
    x_all, y_all = data
    gen = torch.Generator().manual_seed(seed)
    for _ in range(state["epoch"]):         # the same shuffles as an uninterrupted run
        torch.randperm(len(x_all), generator=gen)
    for epoch in range(state["epoch"], epochs):
        start = time.process_time()
        torch.manual_seed(seed * 1000 + epoch)
        perm = torch.randperm(len(x_all), generator=gen)
        model.train()
        bar = tqdm(range(0, len(perm), batch_size), desc=f"{name} epoch {epoch + 1}/{epochs}", mininterval=30,
                   file=sys.stderr)
        for i in bar:
            idx = perm[i:i + batch_size]
            out = objective(model, x_all[idx], y_all[idx])
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            for constraint in constraints:
                constraint(model)
        cpu_s = state["cpu_s"] + time.process_time() - start
        if monitor is not None:
            model.eval()
            state["history"].append(round(accuracy(model, *monitor), 4))
        state = {"epoch": epoch + 1, "cpu_s": cpu_s, "history": state["history"]}
        torch.save({"model": model.state_dict(), "opt": opt.state_dict(), **state}, path.with_suffix(".tmp"))
        os.replace(path.with_suffix(".tmp"), path)      # atomic: another part may be reading it
    return model.eval(), state["cpu_s"]


def history(cache, name):
    """The per-epoch monitor accuracies :func:`train` stored for ``name`` (empty without a monitor)."""
    path = cache / f"{name}.pt"
    return list(torch.load(path, weights_only=True).get("history", [])) if path.exists() else []


# ---- measurements -----------------------------------------------------------------------------------------
@torch.no_grad()
def accuracy(model, x, y, batch=1000):
    return sum(int((model(x[i:i + batch]).argmax(1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch)) / len(x)


def input_grad_norm(model, x, y):
    """Median over images of ``||∇x CE(z(x), y)||_2`` at T = 1 (the deployed network)."""
    x = x.clone().requires_grad_(True)
    loss = nn.functional.cross_entropy(model(x), y, reduction="sum")
    (grad,) = torch.autograd.grad(loss, x)
    return float(grad.flatten(1).norm(dim=1).median())


def robust_under(attack_factory, x, y, restarts=1):
    """Per-image bool: correctly classified under every one of ``restarts`` seeded runs of the attack."""
    robust = torch.ones(len(x), dtype=torch.bool)
    for r in range(restarts):
        res = attack_factory(r).run(x, y)
        robust &= ~res.success
    return robust


def cw_stats(model, x, y, norm):
    start = time.process_time()
    res = CW.fast(model, norm=norm).run(x, y)
    delta = (res.adv - x).flatten(1)
    dist = {"l2": delta.norm(dim=1), "linf": delta.abs().amax(dim=1), "l0": (delta.abs() > 1e-4).sum(1).float()}[norm]
    ok = res.success
    return {"success": float(ok.float().mean()), "median_distortion": float(dist[ok].median()) if ok.any() else None,
            "n": len(x), "cpu_s": round(time.process_time() - start, 1)}


def correct_subset(model, x, y, n):
    with torch.no_grad():
        keep = model(x).argmax(1) == y
    return x[keep][:n], y[keep][:n]


# ---- parts ------------------------------------------------------------------------------------------------
def part_distill(args, train_data, test):
    x_test, y_test = test
    config = {"epochs": args.epochs, "train_images": len(train_data[0]), "n_attack": args.n_attack,
              "pgd_n": args.pgd_n, "n_cw": args.n_cw, "n_l0": args.n_l0, "cw_all_at": args.cw_all_at,
              "ifgsm_eps": args.ifgsm_eps, "cache": str(args.cache)}
    results = {"epochs": args.epochs, "train_images": len(train_data[0]), "optimizer": "Adam lr 1e-3, batch 128",
               "config": config, "rows": resumed_rows(args, "distill", config)}
    monitor = (x_test, y_test)      # per-epoch test accuracy, to show where the training has converged
    baseline, base_cpu = train("lenet_ce", LeNet, CrossEntropy(), train_data, epochs=args.epochs, cache=args.cache,
                               monitor=monitor)
    base_acc = accuracy(baseline, x_test, y_test)
    results["baseline"] = {"accuracy": base_acc, "train_cpu_s": round(base_cpu),
                           "history": history(args.cache, "lenet_ce")}
    xa, ya = x_test[:args.n_attack], y_test[:args.n_attack]
    gen = torch.Generator().manual_seed(0)
    targets = (ya + torch.randint(1, 10, ya.shape, generator=gen)) % 10      # a random other class per image
    done = {row["T"] for row in results["rows"]}
    for temperature in args.temperatures or RUN_ORDER:
        if temperature in done and not args.train_only:
            print(f"T = {temperature}: row already in the results file (same settings), skipped", flush=True)
            continue
        teacher_name, student_name = f"lenet_teacher_T{temperature}", f"lenet_student_T{temperature}"
        teacher, t_cpu = train(teacher_name, LeNet, TemperatureCrossEntropy(temperature),
                               train_data, epochs=args.epochs, cache=args.cache, monitor=monitor)
        student, s_cpu = train(student_name, LeNet, Distillation(teacher, temperature=temperature),
                               train_data, epochs=args.epochs, cache=args.cache, monitor=monitor)
        if args.train_only:     # a second process can train models ahead of the one that evaluates them
            continue
        row = {"T": temperature, "train_cpu_s": round(t_cpu + s_cpu), "teacher_train_cpu_s": round(t_cpu),
               "student_train_cpu_s": round(s_cpu), "teacher_accuracy": accuracy(teacher, x_test, y_test),
               "teacher_history": history(args.cache, teacher_name),
               "student_history": history(args.cache, student_name)}
        start = time.process_time()
        row["accuracy"] = accuracy(student, x_test, y_test)
        row["accuracy_change"] = row["accuracy"] - base_acc
        row["grad_norm_T1"] = input_grad_norm(student, xa, ya)
        with torch.no_grad():
            row["median_max_logit"] = float(student(xa).amax(1).median())
        at_t = AtTemperature(student, temperature).eval()
        for label, net in (("", student), ("_zT", at_t)):
            ifgsm = IFGSM(net, eps=args.ifgsm_eps, steps=10).run(xa, ya, target=targets)
            row[f"ifgsm_targeted_success{label}"] = float(ifgsm.success.float().mean())
            n_pgd = args.pgd_n or len(xa)
            robust = robust_under(lambda r: PGD(net, eps=args.ifgsm_eps, step_size=args.ifgsm_eps / 20, steps=40,
                                                seed=r), xa[:n_pgd], ya[:n_pgd])
            row[f"pgd40_accuracy{label}"] = float(robust.float().mean())
        xc, yc = correct_subset(student, xa, ya, args.n_cw)
        for norm in ("l2", "linf", "l0"):
            if norm != "l2" and temperature not in args.cw_all_at:
                continue    # L-inf and L0 cost 10-100x L2: only at the temperatures asked for
            n = args.n_cw if norm != "l0" else args.n_l0
            row[f"cw_{norm}"] = cw_stats(student, xc[:n], yc[:n], norm)
        add_row(args, "distill", results, row, start)
    return results


def part_cw(args, train_data, test):
    """C&W L-inf and L0 (10-100x the cost of L2) on the distilled students of ``--temperatures``, which the
    distill part has trained and cached."""
    x_test, y_test = test
    config = {"epochs": args.epochs, "train_images": len(train_data[0]), "n_attack": args.n_attack,
              "n_cw": args.n_cw, "n_l0": args.n_l0, "cache": str(args.cache)}
    results = {"config": config, "rows": resumed_rows(args, "cw", config)}
    done = {row["T"] for row in results["rows"]}
    for temperature in args.temperatures or RUN_ORDER:
        if temperature in done:
            print(f"T = {temperature}: row already in the results file (same settings), skipped", flush=True)
            continue
        path = args.cache / f"lenet_student_T{temperature}.pt"
        while args.wait and not (path.exists() and torch.load(path, weights_only=True)["epoch"] >= args.epochs):
            time.sleep(30)      # a distill run in another process is still training this student
        if not path.exists() or torch.load(path, weights_only=True)["epoch"] < args.epochs:
            raise SystemExit(f"--part cw: run --part distill first (no student trained {args.epochs} epochs "
                             f"at T = {temperature} in {args.cache})")
        student, _ = train(f"lenet_student_T{temperature}", LeNet, None, train_data, epochs=args.epochs,
                           cache=args.cache)
        xc, yc = correct_subset(student, x_test[:args.n_attack], y_test[:args.n_attack], args.n_cw)
        row = {"T": temperature}
        start = time.process_time()
        for norm in ("linf", "l0"):
            n = args.n_cw if norm == "linf" else args.n_l0
            row[f"cw_{norm}"] = cw_stats(student, xc[:n], yc[:n], norm)
        add_row(args, "cw", results, row, start)
    return results


def part_defendr(args, train_data, test):
    x_test, y_test = test
    eps = args.defendr_eps
    step = eps / 4

    def train_attack(model):
        return PGD(model, eps=eps, step_size=step, steps=args.train_steps)

    recipes = {
        "baseline": lambda m: CrossEntropy(),
        "clp": lambda m: LogitPairing(None, clean=args.clp, squeeze=args.squeeze),
        "alp": lambda m: LogitPairing(train_attack(m), adversarial=args.alp),
        "adv_train": lambda m: LogitPairing(train_attack(m)),       # the same 50/50 mixed minibatch, no pairing
    }
    results = {"epochs": args.epochs, "eps": eps, "train_attack": f"PGD-{args.train_steps} step {step:g}",
               "rows": []}
    xa, ya = x_test[:args.n_attack], y_test[:args.n_attack]
    half = len(xa) // 2
    for name, recipe in recipes.items():
        holder = {}

        def make():
            holder["m"] = LeNet()
            holder["obj"] = recipe(holder["m"])
            return holder["m"]

        def objective(model, x, y):
            return holder["obj"](model, x, y)

        model, cpu = train(f"defendr_{name}" if name != "baseline" else "lenet_ce", make, objective, train_data,
                           epochs=args.epochs, cache=args.cache)
        row = {"model": name, "train_cpu_s": round(cpu), "clean": accuracy(model, x_test, y_test)}
        start = time.process_time()
        x_fgsm = FGSM(model, eps=eps)(xa, ya)
        with torch.no_grad():   # ALP's claim: clean and adversarial logits closer together
            row["logit_distance_fgsm"] = float((model(xa) - model(x_fgsm)).norm(dim=1).mean())
        fgsm_ok = ~FGSM(model, eps=eps).run(xa, ya).success
        pgd_ok = robust_under(lambda r: PGD(model, eps=eps, step_size=eps / 20, steps=50, seed=r), xa, ya,
                              restarts=args.restarts)
        with torch.no_grad():
            clean_ok = model(xa).argmax(1) == ya
        for label, ok in (("fgsm", fgsm_ok), ("pgd50x%d" % args.restarts, pgd_ok)):
            mixed = torch.cat([clean_ok[:half], ok[half:]])         # half of the test set adversarial
            row[label] = {"clean": float(clean_ok.float().mean()), "50%": float(mixed.float().mean()),
                          "100%": float(ok.float().mean())}
        try:
            from robustkit.attacks import APGD  # the adaptive-evaluation attack, where it has landed
            apgd_ok = ~APGD(model, eps=eps).run(xa, ya).success
            row["apgd"] = {"100%": float(apgd_ok.float().mean())}
        except ImportError:
            row["apgd"] = None
        row["n"] = len(xa)
        add_row(args, "defendr", results, row, start)
    return results


def part_apgd(args, train_data, test):
    """APGD-CE and APGD-DLR (Croce & Hein 2020) on the Defendr-part models the defendr part cached."""
    from robustkit.attacks import APGD

    x_test, y_test = test
    xa, ya = x_test[:args.n_attack], y_test[:args.n_attack]
    results = {"eps": args.defendr_eps, "rows": []}
    for name in ("baseline", "clp", "alp", "adv_train"):
        file = "lenet_ce" if name == "baseline" else f"defendr_{name}"
        if not (args.cache / f"{file}.pt").exists():
            raise SystemExit(f"--part apgd: run --part defendr first (no cached {file})")
        model, _ = train(file, LeNet, None, train_data, epochs=args.epochs, cache=args.cache)
        start = time.process_time()
        row = {"model": name, "n": len(xa)}
        both = torch.ones(len(xa), dtype=torch.bool)
        for loss in ("ce", "dlr"):
            ok = ~APGD(model, eps=args.defendr_eps, steps=100, restarts=args.apgd_restarts, loss=loss).run(xa, ya).success
            row[f"apgd_{loss}"] = float(ok.float().mean())
            both &= ok
        row["apgd_ce_and_dlr"] = float(both.float().mean())
        add_row(args, "apgd", results, row, start)
    return results


def part_parseval(args, train_data, test):
    x_test, y_test = test
    results = {"pretrain_epochs": args.epochs, "finetune_epochs": args.finetune_epochs, "beta": args.beta,
               "fraction": 0.3, "rows": []}
    xa, ya = x_test[:args.n_attack], y_test[:args.n_attack]
    for arch, make in (("mlp", DeepDefenseMLP), ("lenet", LeNet)):
        pre, pre_cpu = train(f"dd_{arch}_pre", make, CrossEntropy(), train_data,
                             epochs=args.epochs, cache=args.cache)
        ref_eps = None
        for method, constraints in (("reference", ()), ("par_train", (Parseval(beta=args.beta, fraction=0.3),))):
            # identical fine-tuning for both (Deep Defense: lr halved after 4 epochs; here lr 1e-4 throughout)
            model, cpu = train(f"dd_{arch}_{method}", make, CrossEntropy(), train_data, epochs=args.finetune_epochs,
                               cache=args.cache, lr=1e-4, seed=1, constraints=constraints, init=pre)
            start = time.process_time()
            row = {"arch": arch, "method": method, "train_cpu_s": round(pre_cpu + cpu),
                   "accuracy": accuracy(model, x_test, y_test)}
            row["tightness"] = {k: round(v, 3) for k, v in parseval_tightness(model).items()}
            row["tightness_before_finetune"] = {k: round(v, 3) for k, v in parseval_tightness(pre).items()}
            xc, yc = correct_subset(model, xa, ya, len(xa))
            df = DeepFool(model).run(xc, yc)
            rho = df.extras["rho2"][df.success]
            row["rho2"] = float(rho.mean())
            row["deepfool_success"] = float(df.success.float().mean())
            table = fgs_eps_ref(model, xa, ya, reference=ref_eps)
            if ref_eps is None:
                ref_eps = table["eps_ref"]
            row["eps_ref"] = ref_eps
            row["acc_at_eps_ref"] = table["accuracy"]
            row["n"] = len(xa)
            add_row(args, "parseval", results, row, start)
    return results


def resumed_rows(args, part, config):
    """The rows of an earlier run of ``part`` with the same ``config`` (so a killed run continues where it
    stopped); none when the settings differ or ``--fresh`` is given."""
    path = RESULTS / f"defenses_mnist_{part}.json"
    if args.fresh or not path.exists():
        return []
    old = json.loads(path.read_text())
    if old.get("config") != config:
        return []
    print(f"resuming {path.name}: {len(old['rows'])} finished rows kept", flush=True)
    return old["rows"]


def add_row(args, part, results, row, start=None):
    """Appends a finished row (with its evaluation CPU time since ``start``), prints it and rewrites the part's
    JSON, so a killed run keeps every row it finished."""
    if start is not None:
        row["eval_cpu_s"] = round(time.process_time() - start)
    results["rows"].append(row)
    print(json.dumps(row), flush=True)
    write(args, part, results)


def write(args, part, results):
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = {"command": " ".join(["python"] + sys.argv), "torch": torch.__version__,
               "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(),
               "machine_note": "2 cores shared with other jobs; CPU seconds are process time",
               "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **results}
    (RESULTS / f"defenses_mnist_{part}.json").write_text(json.dumps(payload, indent=1))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=("distill", "cw", "defendr", "apgd", "parseval"), required=True)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--finetune-epochs", type=int, default=1)
    p.add_argument("--n-attack", type=int, default=1000, help="test images the gradient attacks run on")
    p.add_argument("--n-cw", type=int, default=50, help="images for C&W L2 and L-inf")
    p.add_argument("--n-l0", type=int, default=10, help="images for C&W L0")
    p.add_argument("--cw-all-at", type=lambda t: [float(v) for v in t.split(",")], default=[1, 100],
                   help="temperatures that get C&W L-inf and L0 too (comma-separated; L2 runs at every T)")
    p.add_argument("--temperatures", type=lambda t: [int(v) for v in t.split(",")], default=None,
                   help="distill: the temperatures to run, in this order (default: all, extremes first)")
    p.add_argument("--train-only", action="store_true", help="distill: train (and cache) the models, measure nothing")
    p.add_argument("--wait", action="store_true",
                   help="cw: wait for a distill run in another process to finish training each student")
    p.add_argument("--fresh", action="store_true",
                   help="distill, cw: start a new results file (default: keep the finished rows of an earlier run "
                        "with the same settings)")
    p.add_argument("--pgd-n", type=int, default=None, help="images for PGD-40 (default: --n-attack)")
    p.add_argument("--ifgsm-eps", type=float, default=0.1)
    p.add_argument("--defendr-eps", type=float, default=0.12)
    p.add_argument("--train-steps", type=int, default=5)
    p.add_argument("--restarts", type=int, default=10)
    p.add_argument("--apgd-restarts", type=int, default=5)
    p.add_argument("--alp", type=float, default=0.5)
    p.add_argument("--clp", type=float, default=0.5)
    p.add_argument("--squeeze", type=float, default=0.05)
    p.add_argument("--beta", type=float, default=1e-4)
    p.add_argument("--train-subset", type=int, default=None, help="first N training images (smoke runs)")
    p.add_argument("--cache", type=pathlib.Path,
                   default=pathlib.Path(os.environ.get("ROBUSTKIT_CACHE", "~/.cache/robustkit")).expanduser()
                   / "defenses_mnist")
    args = p.parse_args(argv)
    args.cache.mkdir(parents=True, exist_ok=True)
    train_set, test_set = rkdata.mnist("train"), rkdata.mnist("test")
    train_data, test = train_set.tensors, test_set.tensors
    if args.train_subset:
        train_data = (train_data[0][:args.train_subset], train_data[1][:args.train_subset])
    parts = {"distill": part_distill, "cw": part_cw, "defendr": part_defendr, "apgd": part_apgd,
             "parseval": part_parseval}
    parts[args.part](args, train_data, test)


if __name__ == "__main__":
    main()
