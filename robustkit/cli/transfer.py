"""``robustkit transfer``: the transfer matrix, attacks crafted on source models evaluated on target models."""
from __future__ import annotations

import pathlib

from robustkit.cli import options


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("transfer", help="transfer matrix: attacks crafted on sources, evaluated on targets",
                              description="Craft adversarial images on each source model (or ensemble) and "
                                          "measure how often they fool each target model.")
    p.add_argument("--sources", required=True, help="comma-separated model specs; a+b is an ensemble, "
                   "spec@weights.pt gives a model its weights")
    p.add_argument("--targets", required=True, help="comma-separated model specs")
    options.add_common(p, attack_help="the attack (one; default mifgsm)")


def _specs(text: str, argument: str):
    from robustkit.cli.specs import SpecError
    parts = [s for s in text.split(",") if s]
    if not parts:
        raise SpecError(f"{argument}: expected at least one model spec, got {text!r}")
    return parts


def run(args) -> int:
    import torch

    from robustkit.cli import specs
    from robustkit.eval import distributed
    from robustkit.eval.transfer import run_transfer
    options.check_out(args.out)
    if len(args.attack or []) > 1:
        raise specs.SpecError("--attack: transfer takes one attack")
    eps = options.eps_from_args(args)
    if len(eps) > 1:
        raise specs.SpecError("--eps: transfer takes one budget")
    device = distributed.init_from_env(options.resolve_device(args.device))
    torch.manual_seed(args.seed)   # models without weights get the same random weights on every rank
    sources = {s: specs.make_model(s).to(device) for s in _specs(args.sources, "--sources")}
    targets = {t: specs.make_model(t).to(device) for t in _specs(args.targets, "--targets")}
    name = (args.attack or ["mifgsm"])[0]
    make_attack = lambda model: specs.make_attacks([name], model, eps, args.steps)[name]  # noqa: E731
    matrix = run_transfer(sources, targets, specs.make_data(args.data, image_size=args.image_size), make_attack,
                          out=args.out, limit=args.limit, batch_size=args.batch_size, device=device,
                          resume=args.resume, seed=args.seed, only_correct=args.only_correct,
                          per_class=args.per_class, target=args.target)
    if options.is_rank0():
        width = max(len(s) for s in matrix["sources"]) + 2
        print("source \\ target".ljust(width) + "".join(t.rjust(14) for t in matrix["targets"]))
        for source, row in zip(matrix["sources"], matrix["matrix"]):
            print(source.ljust(width) + "".join(options.fmt(v).rjust(14) for v in row))
        print(f"transfer matrix: {pathlib.Path(args.out) / 'transfer.json'}")
    return 0
