"""``robustkit train-denoiser`` and ``robustkit eval --defense``, end to end on 16 MNIST images with a width-2
LeNet and a two-block DUNet: the denoiser file the one writes is what the other reads, the defense is recorded
in the run's settings (a resume with another is refused), the evaluation checks flag the randomization, and bad
specs are one-line errors naming the option."""
import json

import pytest
import torch

from robustkit.cli import main
from tests._tiny import small_lenet

MODEL = ["--model", "robustkit.models:LeNet", "--model-args", '{"width": 2}']


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)     # tiny tensors: one thread (a busy 2-core machine is 10-40x slower with two)
    try:
        root = tmp_path_factory.mktemp("hgd")
        torch.save(small_lenet().state_dict(), root / "lenet.pt")
        out = root / "denoiser"
        code = main(["train-denoiser", *MODEL, "--weights", str(root / "lenet.pt"), "--data", "mnist",
                     "--attack", "fgsm", "--attack", "pgd", "--steps", "2", "--eps", "0.3", "--widths", "4,8",
                     "--epochs", "1", "--limit", "16", "--batch-size", "8", "--no-progress", "--out", str(out)])
        assert code == 0
    finally:
        torch.set_num_threads(threads)
    return root


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def _eval(root, out, *extra):
    return main(["eval", *MODEL, "--weights", str(root / "lenet.pt"), "--data", "mnist", "--attack", "fgsm",
                 "--eps", "0.3", "--limit", "8", "--batch-size", "8", "--no-report", "--out", str(out), *extra])


def _results(out):
    return json.loads((out / "results.json").read_text())


def test_train_denoiser_writes_a_dunet_state_dict_and_its_history(trained):
    from robustkit.defenses import DUNet
    out = trained / "denoiser"
    state = torch.load(out / "dunet.pt", weights_only=True)
    DUNet(1, (4, 8)).load_state_dict(state)          # exactly a DUNet(1, widths=(4, 8))
    history = json.loads((out / "history.json").read_text())
    assert (out / "checkpoint.pt").is_file() and "1" in json.dumps(history)


def test_eval_with_the_trained_denoiser_records_it(trained, tmp_path, capsys):
    dunet = trained / "denoiser" / "dunet.pt"
    assert _eval(trained, tmp_path / "hgd", "--defense", f"hgd:{dunet}") == 0, capsys.readouterr().err
    (defense,) = _results(tmp_path / "hgd")["settings"]["defense"]
    assert defense["name"] == "hgd" and defense["widths"] == [4, 8] and defense["denoiser"]["class"] == "DUNet"
    assert _results(tmp_path / "hgd")["settings"]["model"]["class"] == "GuidedDenoiser"


def test_hgd_widths_given_or_read_from_the_file_build_the_same_pipeline(trained):
    from robustkit.cli import defense_specs
    from robustkit.defenses import DUNet, GuidedDenoiser
    dunet = trained / "denoiser" / "dunet.pt"
    x = torch.rand(3, 1, 28, 28)
    outputs = []
    for spec in (f"hgd:{dunet}", f"hgd:{dunet}:4,8"):
        model, _ = defense_specs.apply(small_lenet(), [spec], image_shape=(1, 28, 28), seed=0)
        assert isinstance(model, GuidedDenoiser) and model.denoiser.widths == (4, 8)
        outputs.append(model(x))
    reference = DUNet(1, (4, 8))
    reference.load_state_dict(torch.load(dunet, weights_only=True))
    expected = small_lenet()(x - reference.eval()(x))          # model(x - D(x)) with the saved weights
    torch.testing.assert_close(outputs[0], expected)
    torch.testing.assert_close(outputs[1], expected)


def test_random_resize_pad_is_flagged_and_a_resume_with_another_defense_is_refused(trained, tmp_path, capsys):
    out = tmp_path / "rrp"
    assert _eval(trained, out, "--defense", "random-resize-pad") == 0
    results = _results(out)
    assert results["settings"]["defense"] == [{"name": "random-resize-pad", "min_scale": 0.9, "max_scale": 1.0,
                                               "pad_value": 0.0, "seed": 0}]
    assert "nondeterministic" in [w["code"] for w in results["warnings"]]
    capsys.readouterr()
    assert _eval(trained, out, "--defense", "random-resize-pad:0.8,1", "--resume") == 2
    err = capsys.readouterr().err
    assert "other settings" in err and "defense" in err and len(err.strip().splitlines()) == 1


def test_stacked_defenses_wrap_in_the_given_order(trained):
    from robustkit.cli import defense_specs
    from robustkit.defenses import GuidedDenoiser, RandomResizePad
    lenet = small_lenet()
    model, described = defense_specs.apply(lenet, ["random-resize-pad:0.8,1", f"hgd:{trained / 'denoiser/dunet.pt'}"],
                                           image_shape=(1, 28, 28), seed=5)
    # the first defense sees the input first: it is the outermost wrapper
    assert isinstance(model, RandomResizePad) and isinstance(model.model, GuidedDenoiser) and model.model.model is lenet
    assert [d["name"] for d in described] == ["random-resize-pad", "hgd"] and described[0]["seed"] == 5
    assert model.out_size == (28, 28) and (model.min_scale, model.max_scale) == (0.8, 1.0)


@pytest.mark.parametrize("spec, message", [
    ("bogus", "--defense: unknown defense 'bogus'"),
    ("random-resize-pad:1,0.5", "min_scale must be <= max_scale"),
    ("random-resize-pad:0.9,1.5", "out_size (28, 28) is smaller than the input"),
    ("random-resize-pad:0.9", "expected random-resize-pad:MIN,MAX"),
    ("random-resize-pad:a,1", "scales must be numbers"),
    ("hgd", "hgd needs the denoiser's weights"),
    ("hgd:/no/such/dunet.pt", "--defense: no file '/no/such/dunet.pt'"),
    ("hgd:DUNET:4,8,16", "missing keys: encoder.2."),
    ("hgd:DUNET:8,16", "has shape"),
    ("hgd:LENET", "unexpected keys"),
    ("hgd:DUNET:0,8", "widths must be at least two positive integers"),
])
def test_bad_defense_specs_are_one_line_errors_naming_the_option(spec, message, trained, tmp_path, capsys):
    spec = spec.replace("DUNET", str(trained / "denoiser" / "dunet.pt")).replace("LENET", str(trained / "lenet.pt"))
    assert _eval(trained, tmp_path / "bad", "--defense", spec) == 2
    err = capsys.readouterr().err
    assert "--defense" in err and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "bad" / "results.json").exists()


@pytest.mark.parametrize("extra, message", [
    (["--guide", "features:nope"], "--guide: train_denoiser: guide layer 'nope' is not a module of the model; "
                                   "valid names: "),
    (["--guide", "bogus"], "--guide: train_denoiser: guide must be one of"),
    (["--widths", "4"], "--widths: widths must be at least two positive integers"),
    (["--lr", "0"], "--lr: must be > 0"),
    (["--data", "imagenet:/x"], "--data: training needs a train split"),
])
def test_bad_train_denoiser_options_are_named(extra, message, trained, tmp_path, capsys):
    assert main(["train-denoiser", *MODEL, "--weights", str(trained / "lenet.pt"), "--attack", "fgsm",
                 "--limit", "8", "--epochs", "1", "--no-progress", "--out", str(tmp_path / "td"), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
