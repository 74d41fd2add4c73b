"""The logit-pairing, distillation and Parseval defenses of ``robustkit train``: their options and objectives.

    robustkit train --model robustkit.models:LeNet --defense alp --alp-weight 0.5 --eps 0.3 --out runs/alp
    robustkit train --model robustkit.models:LeNet --defense clp --clp-weight 0.5 --squeeze-weight 0.05 ...
    robustkit train --model robustkit.models:LeNet --defense squeeze --squeeze-weight 0.05 ...
    robustkit train --model robustkit.models:LeNet --defense distill --temperature 100 ...   (teacher first)
    robustkit train --model robustkit.models:LeNet --defense parseval --parseval-beta 1e-4 ...
"""
from __future__ import annotations

DEFENSES = ("alp", "clp", "squeeze", "distill", "parseval")
HELP = ("alp: PGD training + adversarial logit pairing (Kannan et al.; add --clp-weight/--squeeze-weight to combine); "
        "clp / squeeze: clean logit pairing / logit squeezing on clean images; distill: defensive distillation at "
        "--temperature (trains the teacher first, in OUT/teacher); parseval: clean training with the Parseval "
        "retraction after every step")


def add_arguments(p) -> None:
    g = p.add_argument_group("logit pairing, distillation, Parseval")
    g.add_argument("--alp-weight", type=float, default=0.5, help="alp: λ of adversarial logit pairing (default 0.5)")
    g.add_argument("--clp-weight", type=float, default=None,
                   help="λ of clean logit pairing (default: 0.5 for clp, else off)")
    g.add_argument("--squeeze-weight", type=float, default=None,
                   help="λ of clean logit squeezing (default: 0.05 for squeeze, else off)")
    g.add_argument("--clean-weight", type=float, default=0.5,
                   help="alp: weight of the clean cross-entropy in the mixed minibatch (default 0.5)")
    g.add_argument("--temperature", type=float, default=100.0, help="distill: T (default 100)")
    g.add_argument("--teacher", default=None,
                   help="distill: weights of a teacher already trained at --temperature (skips training one)")
    g.add_argument("--parseval-beta", type=float, default=1e-4, help="parseval: β of the retraction (default 1e-4)")
    g.add_argument("--parseval-fraction", type=float, default=0.3,
                   help="parseval: fraction of each matrix's rows retracted per step (default 0.3)")


def make(args, model, eps: float, *, pgd_steps: int, step_size, new_model, fit_teacher):
    """``(objective, constraints)`` for ``args.defense``. For distill, ``new_model()`` builds the teacher (same
    architecture, its own initialisation) and ``fit_teacher(teacher, objective)`` trains it with the command's fit
    settings in a checkpoint folder of its own."""
    import torch

    import robustkit as rk
    from robustkit.cli.specs import SpecError

    defense = args.defense
    clp = args.clp_weight if args.clp_weight is not None else (0.5 if defense == "clp" else 0.0)
    squeeze = args.squeeze_weight if args.squeeze_weight is not None else (0.05 if defense == "squeeze" else 0.0)
    try:
        if defense == "alp":
            attack = rk.attacks.PGD(model, eps=eps, step_size=step_size or 2.5 * eps / pgd_steps, steps=pgd_steps)
            return rk.defenses.LogitPairing(attack, adversarial=args.alp_weight, clean=clp, squeeze=squeeze,
                                            clean_weight=args.clean_weight), []
        if defense in ("clp", "squeeze"):
            return rk.defenses.LogitPairing(None, clean=clp, squeeze=squeeze), []
        if defense == "parseval":
            return None, [rk.defenses.Parseval(beta=args.parseval_beta, fraction=args.parseval_fraction)]
        if defense == "distill":
            objective = rk.defenses.TemperatureCrossEntropy(args.temperature)   # checks T before any training
            teacher = new_model()
            if args.teacher is not None:
                teacher.load_state_dict(torch.load(args.teacher, map_location="cpu", weights_only=True))
            else:
                fit_teacher(teacher, objective)
            return rk.defenses.Distillation(teacher.eval(), temperature=args.temperature), []
    except ValueError as err:  # the defenses' one-line errors name the argument; say which option it was
        raise SpecError(f"--defense {defense}: {err}") from None
    raise SpecError(f"--defense: unknown defense {defense!r}")
