"""``robustkit train-denoiser``: the high-level representation guided denoiser (HGD) of a trained model.

    robustkit train-denoiser --model mnist:lenet --data mnist --attack fgsm --attack pgd --eps 0.3 \\
                             --guide logits --widths 16,32,64,64 --epochs 2 --out runs/hgd [--resume]
    robustkit eval --model mnist:lenet --defense hgd:runs/hgd/dunet.pt --attack pgd --out runs/hgd-eval

Trains a DUNet with ``robustkit.defenses.train_denoiser`` in front of the frozen model, on adversarial examples
of the given attacks (round robin over batches, each attack once per ``--eps``). ``checkpoint.pt`` and
``history.json`` are written after every epoch (``--resume`` continues from them); ``dunet.pt`` is the
denoiser's state dict, which ``robustkit eval --defense hgd:OUT/dunet.pt`` reads.
"""
from __future__ import annotations

from robustkit.cli import defense_specs, options
from robustkit.cli.specs import ATTACK_NAMES, SpecError

GUIDES_HELP = ("the layer whose representation the denoised image must match: logits (LGD, default), pixel (the "
               "plain pixel-level denoiser) or features:<module name> of --model (FGD)")


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("train-denoiser", help="train the guided denoiser (HGD) of a model",
                              description="Train a DUNet denoiser in front of the frozen --model on adversarial "
                                          "examples of --attack; checkpoints every epoch in --out (continue with "
                                          "--resume) and writes dunet.pt for robustkit eval --defense hgd:FILE.")
    options.add_model(p, help="the target model: pkg.module:Factory[@weights.pt], mnist:<arch> or a+b; it stays "
                      "frozen", weights_help="state dict for --model, loaded with torch.load(weights_only=True)")
    p.add_argument("--data", default="mnist", help="mnist | cifar10:DIR: the train split (default: mnist)")
    p.add_argument("--attack", action="append", choices=ATTACK_NAMES, metavar="NAME",
                   help=f"attack whose examples the denoiser learns to clean; repeat for several (default: fgsm "
                        f"and pgd): {', '.join(ATTACK_NAMES)}")
    p.add_argument("--eps", default=None, help="budget of the attacks, e.g. 0.3 or 8/255 (default: 0.3 for mnist, "
                   "8/255 otherwise); a comma list trains on each")
    p.add_argument("--steps", type=options.positive_int, default=None,
                   help="iterations of the iterative attacks (default: each attack's own)")
    p.add_argument("--guide", default="logits", help=GUIDES_HELP)
    p.add_argument("--widths", default=",".join(map(str, defense_specs.DEFAULT_WIDTHS)),
                   help="channel widths of the DUNet's encoder blocks, e.g. 16,32,64 (default: %(default)s; "
                        "Liao et al.'s ImageNet DUNET is 64,128,256,256,256)")
    p.add_argument("--epochs", type=options.positive_int, default=2, help="passes over the data (default 2)")
    p.add_argument("--batch-size", type=options.positive_int, default=128, help="global batch (default 128)")
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="adam", help="default: adam")
    p.add_argument("--lr", type=float, default=1e-3, help="learning rate (default 1e-3)")
    p.add_argument("--limit", type=options.positive_int, default=None, help="train on the first N images")
    p.add_argument("--seed", type=int, default=0, help="seed of the denoiser's initial weights and the data order")
    options.add_device(p)
    p.add_argument("--out", required=True, help="run folder: checkpoint.pt, history.json, dunet.pt")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    import os

    import torch
    from torch.utils.data import Subset

    import robustkit as rk
    from robustkit.cli import specs

    out = options.check_out(args.out)
    if args.data.startswith("imagenet"):
        raise SpecError("--data: training needs a train split: mnist or cifar10:DIR")
    widths = defense_specs.parse_widths(args.widths, "--widths")
    if args.lr <= 0:
        raise SpecError(f"--lr: must be > 0, got {args.lr}")
    device = options.resolve_device(args.device)
    model = specs.make_model(args.model, weights=args.weights, model_args=args.model_args).to(device).eval()
    if not specs.has_weights(args.model, args.weights):
        options.warn("train-denoiser", f"no --weights: {args.model} keeps its initial weights; a denoiser "
                                       "guided by an untrained model learns little")
    train = specs.make_data(args.data, split="train")
    if args.limit is not None:
        train = Subset(train, range(min(args.limit, len(train))))
    attacks = specs.make_attacks(args.attack or ["fgsm", "pgd"], model, options.eps_from_args(args), args.steps)
    channels = int(train[0][0].shape[0])
    with torch.random.fork_rng(devices=[]):    # the denoiser's initial weights depend on --seed only
        torch.manual_seed(args.seed)
        denoiser = rk.defenses.DUNet(channels, widths).to(device)
    try:
        history = rk.defenses.train_denoiser(
            denoiser, model, train, list(attacks.values()), guide=args.guide, epochs=args.epochs,
            batch_size=args.batch_size, optimizer=args.optimizer, lr=args.lr, checkpoint_dir=out,
            resume=args.resume, seed=args.seed, progress=not args.no_progress, device=device)
    except ValueError as error:
        message = str(error)
        if "guide" in message:      # train_denoiser names the guide (and lists the valid layer names)
            raise SpecError(f"--guide: {message}") from None
        raise
    if int(os.environ.get("RANK", "0")) == 0:
        torch.save({k: v.detach().cpu() for k, v in denoiser.state_dict().items()}, out / "dunet.pt")
        last = history[-1]
        distance = last.get("guide_distance", last.get("train_loss"))
        print(f"train-denoiser: {len(history)} epochs on {len(train)} images against {', '.join(attacks)}; "
              f"guide ({args.guide}) L1 distance {distance:.4g}")
        print(f"wrote {out / 'dunet.pt'} (robustkit eval --model {args.model} --defense hgd:{out / 'dunet.pt'}), "
              f"{out / 'history.json'}")
    return 0
