"""KNNLabeler (PCA + exact 1-NN) against scikit-learn's PCA + KNeighborsClassifier(k=1) on the same data.

MNIST: 60,000 training images at 50 PCA dims, queries = the 10,000 test images.
CIFAR-10: the first 40,000 images of the shared train set at 300 dims, queries = the last 10,000 (held out).
Correctness first, before any timing (a failure exits with status 1): our labels on the queries equal those of
scikit-learn with an exact PCA on >= 99.9% of the queries for every backend, and the true label is recovered
for >= 99% of FGSM (eps = 0.1) versions of training images, FGSM computed on a small CNN trained here for one
epoch.

Which scikit-learn? Its default PCA solver is exact (``covariance_eigh``) for MNIST (784 features, N >= 10 D)
but *randomized* for CIFAR-10 (3072 features), and the randomized one does not converge there (7 power
iterations, 10 oversamples, eigenvalues 300 and 310 within 6% of each other): with another random_state, 1.2%
of its own held-out labels change (near-ties are common: 1-NN accuracy is ~35% and 3% of the queries have a
second neighbour within 0.1% of the first). So agreement is reported against scikit-learn's default
(random_state=0, the timed run), against scikit-learn with an exact PCA (``svd_solver="covariance_eigh"``, not
timed), and scikit-learn's default against itself with random_state=1 (not timed): the ceiling for agreeing
with a randomized PCA.

Timing: end to end (fit + predict on the queries), median of --repeats rounds in rotating order
(bench/harness.py) after the correctness run, which is each method's warm-up; wall and process CPU time (all
threads), and the paired speedup (median over rounds of scikit-learn's time over ours in the same round).
``--threads`` sets torch's, BLAS's and OpenMP's threads.

    python bench/labeler.py [--repeats 3] [--datasets mnist cifar10] [--threads N]
    python bench/labeler.py --tiny      # MNIST, 6,000 training images, 1,000 queries, 1 round
    python bench/labeler.py --device cuda --datasets mnist --data DIR   # adds the torch backend on the GPU

With ``--device cuda`` a fourth method, ``torch-cuda``, fits and predicts on the GPU from the same CPU
tensors (the copies to the device are timed), and the results go to bench/results/<gpu name>/labeler.json
(on CPU, bench/results/<machine label>/labeler.json).
``--data`` is the folder holding ``mnist/`` and ``cifar10/`` (default ../shared/data; the lent GPU machines
only see the repository, so copy ``mnist/`` into an ignored folder of it and carry that).
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import pathlib

import numpy as np
import torch
from torch import nn

import harness
from robustkit.defenses import KNNLabeler

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"  # --data replaces it


def load_mnist():
    def read(name, offset):
        with gzip.open(DATA / "mnist" / name) as f:
            return np.frombuffer(f.read(), np.uint8, offset=offset)
    x_tr = read("train-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
    x_te = read("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 1, 28, 28)
    y_tr, y_te = read("train-labels-idx1-ubyte.gz", 8), read("t10k-labels-idx1-ubyte.gz", 8)
    return _to_torch(x_tr, y_tr), _to_torch(x_te, y_te)


def load_cifar10_split(n_train: int = 40000):
    """The five shared train batches, split into the first ``n_train`` (train) and the rest (held out)."""
    raw = np.concatenate([np.fromfile(DATA / "cifar10" / f"data_batch_{i}.bin", np.uint8).reshape(-1, 3073)
                          for i in range(1, 6)])
    x, y = raw[:, 1:].reshape(-1, 3, 32, 32), raw[:, 0]
    return _to_torch(x[:n_train], y[:n_train]), _to_torch(x[n_train:], y[n_train:])


def _to_torch(x, y):
    return torch.from_numpy(x.astype(np.float32) / 255), torch.from_numpy(y.astype(np.int64))


def small_cnn(channels: int, num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(4), nn.Flatten(),
                         nn.Linear(32 * 16, num_classes))


def train_one_epoch(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 128) -> nn.Module:
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    g = torch.Generator().manual_seed(0)
    model.train()
    for idx in torch.randperm(x.shape[0], generator=g).split(batch):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    return model.eval()


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    """Goodfellow et al. 2014, Eq. 1: x + eps * sign(grad_x CE), clipped to [0, 1]."""
    x = x.clone().requires_grad_(True)
    grad, = torch.autograd.grad(nn.functional.cross_entropy(model(x), y), x)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


def ours(x_tr, y_tr, queries, dim, backend):
    if backend == "torch-cuda":  # from the same CPU tensors: the copies to the GPU are part of the time
        labels = KNNLabeler(pca_dim=dim, k=1, backend="torch").fit(x_tr.cuda(), y_tr.cuda()).predict(queries.cuda())
        return labels.cpu()
    return KNNLabeler(pca_dim=dim, k=1, backend=backend).fit(x_tr, y_tr).predict(queries)


def sklearn_labels(x_tr, y_tr, queries, dim, svd_solver="auto", random_state=0):
    """scikit-learn's labels, and the PCA solver its ``svd_solver`` resolved to."""
    from sklearn.decomposition import PCA
    from sklearn.neighbors import KNeighborsClassifier
    pca = PCA(n_components=dim, svd_solver=svd_solver, random_state=random_state).fit(x_tr.flatten(1).numpy())
    knn = KNeighborsClassifier(n_neighbors=1).fit(pca.transform(x_tr.flatten(1).numpy()), y_tr.numpy())
    return torch.from_numpy(knn.predict(pca.transform(queries.flatten(1).numpy()))), pca._fit_svd_solver


def bench_dataset(name, train, queries, dim, repeats, backends=("faiss", "torch"), n_fgsm=5000):
    x_tr, y_tr = train
    x_q, y_q = queries
    model = train_one_epoch(small_cnn(x_tr.shape[1]), x_tr[:20000], y_tr[:20000])
    x_fgsm = torch.cat([fgsm(model, x_tr[i:i + 500], y_tr[i:i + 500], 0.1) for i in range(0, n_fgsm, 500)])
    labeler = KNNLabeler(pca_dim=dim, k=1).fit(x_tr, y_tr)
    fgsm_recovered = (labeler.predict(x_fgsm) == y_tr[:n_fgsm]).float().mean().item()
    harness.check_at_least(f"{name}: share of FGSM images whose true label the labeler recovers", fgsm_recovered,
                           0.99)
    model_fooled = (model(x_fgsm).argmax(1) != y_tr[:n_fgsm]).float().mean().item()
    # correctness first, at full size; these runs are also each method's warm-up (BLAS threads, allocator,
    # faiss/sklearn imports)
    sk_exact = sklearn_labels(x_tr, y_tr, x_q, dim, svd_solver="covariance_eigh")[0]
    for backend in backends:
        agreement = (ours(x_tr, y_tr, x_q, dim, backend) == sk_exact).float().mean().item()
        harness.check_at_least(f"{name}: {backend} labels equal to scikit-learn's with an exact PCA", agreement,
                               0.999)
    sklearn_labels(x_tr, y_tr, x_q, dim)
    row = {"dataset": name, "n_train": x_tr.shape[0], "n_queries": x_q.shape[0], "pca_dim": dim,
           "fgsm_eps": 0.1, "fgsm_n": n_fgsm, "fgsm_model_fooling_ratio": model_fooled,
           "fgsm_true_label_recovered": fgsm_recovered}
    # interleaved rounds in rotating order: load from other users of the shared machine drifts over minutes,
    # and back-to-back blocks of repeats would charge the drift to one side
    sk_solver, labels = {}, {}

    def sklearn_run():
        labels["sklearn"], sk_solver["default"] = sklearn_labels(x_tr, y_tr, x_q, dim)

    def ours_run(backend):
        return lambda: labels.__setitem__(backend, ours(x_tr, y_tr, x_q, dim, backend))

    runs = {"sklearn": sklearn_run, **{backend: ours_run(backend) for backend in backends}}
    t = harness.timeit(runs, rounds=repeats, warmup=0, clock="wall")
    times, cpu_times = t.wall, t.cpu
    median_wall, median_cpu = t.median("wall"), t.median("cpu")
    paired_wall = harness.paired_ratios(t.wall, "sklearn")
    paired_cpu = harness.paired_ratios(t.cpu, "sklearn")
    sk = labels["sklearn"]
    # the untimed references: scikit-learn with another random_state and with an exact PCA (the same run as
    # the default where the default solver is already the exact covariance_eigh)
    row["sklearn_default_solver"] = sk_solver["default"]
    if sk_solver["default"] == "covariance_eigh":
        sk_other_seed = sk
    else:
        sk_other_seed = sklearn_labels(x_tr, y_tr, x_q, dim, random_state=1)[0]
    row["sklearn_s"] = median_wall["sklearn"]
    row["sklearn_cpu_s"] = median_cpu["sklearn"]
    row["sklearn_accuracy"] = (sk == y_q).float().mean().item()
    row["sklearn_self_agreement_random_state_0_vs_1"] = (sk_other_seed == sk).float().mean().item()
    row["sklearn_default_agreement_with_sklearn_exact"] = (sk_exact == sk).float().mean().item()
    for backend in backends:
        row[f"{backend}_s"] = median_wall[backend]
        row[f"{backend}_cpu_s"] = median_cpu[backend]
        row[f"{backend}_speedup_vs_sklearn"] = paired_wall[backend]
        row[f"{backend}_cpu_speedup_vs_sklearn"] = paired_cpu[backend]
        row[f"{backend}_agreement_with_sklearn"] = (labels[backend] == sk).float().mean().item()
        row[f"{backend}_agreement_with_sklearn_exact"] = (labels[backend] == sk_exact).float().mean().item()
        row[f"{backend}_agreement_with_sklearn_random_state_1"] = (
            (labels[backend] == sk_other_seed).float().mean().item())
        row[f"{backend}_accuracy"] = (labels[backend] == y_q).float().mean().item()
    row["all_times_s"] = times
    row["all_cpu_times_s"] = cpu_times
    return row


def main():
    global DATA
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--datasets", nargs="+", default=["mnist", "cifar10"], choices=["mnist", "cifar10"])
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for torch, BLAS and OpenMP (faiss, scikit-learn); default: torch's default")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--data", type=pathlib.Path, default=DATA, help="the folder with mnist/ and cifar10/")
    parser.add_argument("--tiny", action="store_true",
                        help="checks the script: MNIST only, 6,000 training images, 1,000 queries, 20 dims, 1 round")
    parser.add_argument("--label", default=None, help="results folder under bench/results/ (default: the machine's)")
    args = parser.parse_args()
    if args.label:
        os.environ[harness.LABEL_ENV] = args.label
    if args.tiny:
        args.datasets, args.repeats = ["mnist"], 1
    DATA = args.data
    backends = ("faiss", "torch")
    if args.device == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("labeler: --device cuda needs a CUDA device")
        backends += ("torch-cuda",)
        try:
            import faiss  # noqa: F401
        except ImportError:  # the GPU machines lack faiss-cpu (31 MB, over the carry budget): skip its row
            backends = tuple(b for b in backends if b != "faiss")
    torch.manual_seed(0)
    if args.threads is not None:
        from threadpoolctl import threadpool_limits
        torch.set_num_threads(args.threads)
        threadpool_limits(args.threads)  # numpy's and faiss's OpenBLAS, scikit-learn's OpenMP; kept to the end
        import faiss
        faiss.omp_set_num_threads(args.threads)
    rows = []
    for name in args.datasets:
        train, queries = load_mnist() if name == "mnist" else load_cifar10_split()
        dim, n_fgsm = 50 if name == "mnist" else 300, 5000
        if args.tiny:
            train, queries = (train[0][:6000], train[1][:6000]), (queries[0][:1000], queries[1][:1000])
            dim, n_fgsm = 20, 500
        rows.append(bench_dataset(name, train, queries, dim, args.repeats, backends, n_fgsm=n_fgsm))
        r = rows[-1]
        print(f"{name}: FGSM(0.1) fooled the CNN on {r['fgsm_model_fooling_ratio']:.1%}, labeler recovered "
              f"{r['fgsm_true_label_recovered']:.2%} true labels", flush=True)
    if "faiss" in backends:  # the CPU table; the per-backend lines below cover every run
        print(f"\n{'dataset':8} {'dims':>4} {'sklearn s':>9} {'faiss s':>8} {'x':>5} {'x cpu':>5} {'torch s':>8} {'x':>5} "
              f"{'x cpu':>5} | agreement: {'sk-sk':>7} {'ours-sk':>7} {'ours-ex':>7} {'sk-ex':>7} | {'FGSM rec':>8}")
        for r in rows:
            print(f"{r['dataset']:8} {r['pca_dim']:>4} {r['sklearn_s']:9.2f} {r['faiss_s']:8.2f} "
                  f"{r['faiss_speedup_vs_sklearn']:5.2f} {r['faiss_cpu_speedup_vs_sklearn']:5.2f} {r['torch_s']:8.2f} "
                  f"{r['torch_speedup_vs_sklearn']:5.2f} {r['torch_cpu_speedup_vs_sklearn']:5.2f} |            "
                  f"{r['sklearn_self_agreement_random_state_0_vs_1']:7.2%} {r['faiss_agreement_with_sklearn']:7.2%} "
                  f"{r['faiss_agreement_with_sklearn_exact']:7.2%} "
                  f"{r['sklearn_default_agreement_with_sklearn_exact']:7.2%} "
                  f"| {r['fgsm_true_label_recovered']:8.2%}")
    for r in rows:
        for backend in backends:
            print(f"{r['dataset']:8} {backend:10s} {r[backend + '_s']:7.2f} s  {r[backend + '_speedup_vs_sklearn']:5.2f}x "
                  f"scikit-learn ({r['sklearn_s']:.2f} s)  labels = scikit-learn exact PCA on "
                  f"{r[backend + '_agreement_with_sklearn_exact']:.2%}")
    result = harness.Result("labeler" + ("-quick" if args.tiny else ""), rows, device=args.device,
                            notes={"threads": torch.get_num_threads(), "rounds": args.repeats})
    # a run over some datasets replaces their rows and keeps the others' (each row names its command)
    previous = json.loads(result.path().read_text())["rows"] if result.path().is_file() else []
    command = harness.environment(args.device)["command"]
    for r in rows:
        r["command"] = command
    result.rows = [r for r in previous if r["dataset"] not in args.datasets] + rows
    result.write()


if __name__ == "__main__":
    main()
