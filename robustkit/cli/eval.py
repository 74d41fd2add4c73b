"""``robustkit eval``: one model against a suite of attacks, streamed, resumable, sharded under torchrun."""
from __future__ import annotations

from robustkit.cli import defense_specs, options


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("eval", help="evaluate one model against a suite of attacks",
                              description="Evaluate one model against a suite of attacks; every finished batch is "
                                          "recorded in --out, so an interrupted run continues with --resume. Under "
                                          "torchrun the batches are sharded over the processes.")
    options.add_model(p, help="pkg.module:Factory[@weights.pt], mnist:<arch>, or a+b (ensemble)",
                      weights_help="state dict for --model (for a+b: the ensemble's, keys members.<k>.*), loaded "
                                   "with torch.load(weights_only=True)")
    p.add_argument("--defense", action="append", default=None, metavar="SPEC", help=defense_specs.HELP)
    options.add_common(p)


def run(args) -> int:
    import torch

    from robustkit.cli import specs
    from robustkit.eval import distributed, evaluate
    options.check_out(args.out)
    device = distributed.init_from_env(options.resolve_device(args.device))
    torch.manual_seed(args.seed)   # a model without --weights gets the same random weights on every rank
    model = specs.make_model(args.model, weights=args.weights, model_args=args.model_args).to(device)
    data = specs.make_data(args.data, image_size=args.image_size)
    defenses = []
    if args.defense:    # wraps the loaded model; the attacks and the checks see the defended pipeline
        model, defenses = defense_specs.apply(model, args.defense, image_shape=data[0][0].shape, seed=args.seed)
        model = model.to(device)
    attacks = specs.make_attacks(args.attack or ["pgd"], model, options.eps_from_args(args), args.steps)
    if not specs.has_weights(args.model, args.weights) and options.is_rank0():
        options.warn("eval", f"no --weights: {args.model} keeps its initial weights (seed {args.seed})")
    results = evaluate(model, data, attacks, out=args.out, limit=args.limit, batch_size=args.batch_size,
                       device=device, resume=args.resume, seed=args.seed, only_correct=args.only_correct,
                       per_class=args.per_class, num_workers=args.workers, report=not args.no_report,
                       model_name=args.model, target=args.target,
                       defense=defenses or None)
    options.print_summary(results, args.out)
    return 0
