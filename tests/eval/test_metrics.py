"""Metrics against values computed by hand (and, for the counting metrics, against plain Python loops)."""
import functools
import math

import pytest
import torch

from robustkit import metrics as M

# Eight images, four classes. Hand-made so every metric has a value one can check on paper.
Y = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
CLEAN = torch.tensor([0, 1, 2, 3, 0, 1, 0, 0])   # images 6, 7 misclassified clean -> clean acc 6/8
ADV = torch.tensor([0, 2, 2, 1, 3, 1, 0, 3])     # of the 6 correct: 0, 2, 5 stay correct; 1, 3, 4 fooled
L2 = torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 0.0, 9.0])
LINF = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.0, 0.9])
X_L2 = torch.tensor([2.0, 4.0, 8.0, 6.0, 8.0, 8.0, 1.0, 1.0])
X_LINF = torch.ones(8)


def test_accuracies_and_rates_by_hand():
    assert M.clean_accuracy(CLEAN, Y) == pytest.approx(6 / 8)
    assert M.robust_accuracy(CLEAN, ADV, Y) == pytest.approx(3 / 8)
    assert M.attack_success_rate(CLEAN, ADV, Y) == pytest.approx(3 / 6)
    # prediction changed on 1, 3, 4 and 7 (0 -> 3); image 6 stays at 0
    assert M.fooling_ratio(CLEAN, ADV) == pytest.approx(4 / 8)


def test_targeted_rates_by_hand():
    target = torch.tensor([1, 2, 0, 1, 3, 0, 0, 3])
    # ADV hits the target on images 1, 3, 4, 6, 7; of the clean-correct ones (0..5): 1, 3, 4
    assert M.targeted_success(ADV, target) == pytest.approx(5 / 8)
    assert M.attack_success_rate(CLEAN, ADV, Y, target) == pytest.approx(3 / 6)


def test_norm_statistics_and_rho_over_successful_attacks():
    attacked = (CLEAN == Y) & (ADV != Y)                     # images 1, 3, 4
    stats = M.norm_statistics(L2, attacked)
    assert stats["mean"] == pytest.approx((1 + 3 + 4) / 3)
    assert stats["median"] == pytest.approx(3.0)
    assert M.norm_statistics(torch.tensor([1.0, 2.0, 10.0, 20.0]))["median"] == pytest.approx(6.0)
    # Deep Defense Eq. 7: mean of ||dx|| / ||x|| = (1/4 + 3/6 + 4/8) / 3
    assert M.rho(L2, X_L2, attacked) == pytest.approx((0.25 + 0.5 + 0.5) / 3)
    assert M.rho(LINF, X_LINF) == pytest.approx(LINF.double().mean().item())


def test_empty_sets_give_nan():
    empty = torch.zeros(0, dtype=torch.long)
    assert math.isnan(M.clean_accuracy(empty, empty))
    assert math.isnan(M.norm_statistics(L2, torch.zeros(8, dtype=torch.bool))["median"])


def test_minimal_eps_curve_and_eps_ref_by_hand():
    success = torch.tensor([True, True, True, True, True, True, True, False])
    norms = torch.tensor([0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 5.0, 9.0])
    clean = torch.tensor([0, 1, 2, 3, 0, 1, 2, 0])           # only image 7 misclassified clean
    min_eps = M.minimal_eps(clean, Y, success, norms)
    # image 7 was wrong clean -> 0; everything else its norm
    assert min_eps.tolist() == [0.5, 1.0, 2.0, 3.0, 4.0, 6.0, 5.0, 0.0]
    assert M.accuracy_curve(min_eps, [0.0, 1.0, 4.5, 10.0]) == pytest.approx([7 / 8, 5 / 8, 2 / 8, 0.0])
    # sorted: 0, .5, 1, 2, 3, 4, 5, 6 -> 4th smallest is the smallest eps misclassifying half
    assert M.eps_ref_from_minimal(min_eps) == pytest.approx(2.0)
    assert M.accuracy_at_eps(min_eps, 2.0) == pytest.approx(4 / 8)
    failed = M.minimal_eps(Y, Y, torch.zeros(8, dtype=torch.bool), norms)
    assert math.isinf(M.eps_ref_from_minimal(failed))
    table = M.accuracy_at_eps_ref(functools.partial(M.accuracy_at_eps, min_eps), 2.0)
    # budgets 0.4, 1.0, 2.0 leave 7, 5 and 4 of the 8 minimal budgets above them
    assert table == pytest.approx({"0.2": 7 / 8, "0.5": 5 / 8, "1.0": 4 / 8})


def test_eps_ref_bisect_finds_the_threshold_of_a_step_function():
    calls = []

    def error_rate(eps):
        calls.append(eps)
        return 0.7 if eps >= 0.3 else 0.2

    eps = M.eps_ref_bisect(error_rate, 0.0, 1.0, tol=1e-4)
    assert 0.3 <= eps <= 0.3 + 1e-4
    assert len(calls) < 25
    with pytest.raises(ValueError, match="raise high"):
        M.eps_ref_bisect(lambda e: 0.1, 0.0, 1.0)


def test_eps_ref_bisect_agrees_with_minimal_eps_on_a_linear_model():
    # For a linear binary classifier w.x, the FGS step eps*sign(w) moves the margin by eps*||w||_1, so the
    # minimal L-inf budget of image k is margin_k / ||w||_1: bisection over FGS must find the same median.
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(20, generator=gen, dtype=torch.float64)
    x = torch.randn(101, 20, generator=gen, dtype=torch.float64)
    margins = (x @ w).abs()
    min_eps = margins / w.abs().sum()

    def fgs_error_rate(eps):
        sign = torch.sign(x @ w)                     # push every image against its own class
        adv = x - eps * sign[:, None] * torch.sign(w)[None]
        return (torch.sign(adv @ w) != sign).double().mean().item()

    expected = M.eps_ref_from_minimal(min_eps)
    assert M.eps_ref_bisect(fgs_error_rate, 0.0, 10.0, tol=1e-6) == pytest.approx(expected, abs=2e-6)


def test_transfer_matrix_rows_sources_columns_targets():
    y = torch.tensor([0, 1, 2, 3])
    preds = {"a": {"a": torch.tensor([1, 0, 0, 0]), "b": torch.tensor([0, 1, 2, 0])},
             "a+b": {"a": torch.tensor([0, 1, 2, 3]), "b": torch.tensor([1, 1, 0, 3])}}
    sources, targets, matrix = M.transfer_matrix(preds, y)
    assert sources == ["a", "a+b"] and targets == ["a", "b"]
    assert matrix == [[1.0, 0.25], [0.0, 0.5]]
    _, _, targeted = M.transfer_matrix(preds, y, target=torch.tensor([2, 0, 0, 0]))
    assert targeted == [[0.75, 0.25], [0.0, 0.25]]
    # restricted to the images each target got right: a on 0, 1; b on 0, 1, 2
    clean = {"a": torch.tensor([0, 1, 0, 0]), "b": torch.tensor([0, 1, 2, 0])}
    _, _, among_correct = M.transfer_matrix(preds, y, clean_preds=clean)
    assert among_correct == [[1.0, 0.0], [0.0, pytest.approx(2 / 3)]]


def test_per_class_top_bottom_and_confusion_against_loops():
    gen = torch.Generator().manual_seed(1)
    y = torch.randint(0, 6, (200,), generator=gen)
    clean = torch.where(torch.rand(200, generator=gen) < 0.8, y, torch.randint(0, 6, (200,), generator=gen))
    adv = torch.randint(0, 6, (200,), generator=gen)
    acc = M.per_class_accuracy(clean, y, num_classes=7)
    for c in range(6):
        members = [i for i in range(200) if y[i] == c]
        assert acc[c].item() == pytest.approx(sum(clean[i] == c for i in members).item() / len(members))
    assert math.isnan(acc[6].item())
    best, worst = M.top_bottom_classes(acc, k=2)
    ordered = sorted(range(6), key=lambda c: acc[c].item())
    assert [c for c, _ in best] == ordered[::-1][:2] and [c for c, _ in worst] == ordered[:2]
    cm = M.confusion_matrix(clean, adv, num_classes=6)
    for r in range(6):
        for c in range(6):
            assert cm[r, c].item() == sum(1 for i in range(200) if clean[i] == r and adv[i] == c)
    assert cm.sum().item() == 200


def test_summarize_attack_collects_the_hand_computed_values():
    s = M.summarize_attack(Y, CLEAN, ADV, L2, LINF, X_L2, X_LINF, steps=torch.arange(8))
    assert s["robust_accuracy"] == pytest.approx(3 / 8) and s["clean_accuracy"] == pytest.approx(6 / 8)
    assert s["l2_median"] == pytest.approx(3.0) and s["rho2"] == pytest.approx((0.25 + 0.5 + 0.5) / 3)
    assert s["mean_steps"] == pytest.approx(3.5) and "targeted_success" not in s


def test_mismatched_lengths_name_the_arguments():
    with pytest.raises(ValueError, match="clean_pred"):
        M.robust_accuracy(torch.zeros(3, dtype=torch.long), torch.zeros(4, dtype=torch.long), torch.zeros(3))


def test_rate_and_accuracy_helpers():
    assert M.rate(torch.tensor([True, False, True, True])) == pytest.approx(0.75)
    assert M.rate(torch.tensor([True, False]), among=torch.tensor([False, True])) == 0.0
    assert math.isnan(M.rate(torch.zeros(0, dtype=torch.bool)))
    assert M.accuracy(torch.tensor([1, 2, 3]), torch.tensor([1, 0, 3])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="pred"):
        M.accuracy(torch.tensor([1, 2]), torch.tensor([1, 2, 3]))


def test_eval_metrics_is_the_same_module_contents():
    from robustkit.eval import metrics as eval_metrics
    assert eval_metrics.robust_accuracy is M.robust_accuracy and set(eval_metrics.__all__) == set(M.__all__)
