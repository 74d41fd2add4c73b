"""End to end over the shared ImageNet sample (real JPEGs, ImageNet class indices) with the project's
ResNet-50. Its weights are random (no pretrained weights can be fetched here), so this checks the plumbing
at a reduced 64 px crop to stay fast on CPU: loading, labels, 1000-class metrics, records and results."""
import json

from robustkit.cli import main
from robustkit.datasets import imagenet_folder


def test_resnet50_pgd_over_the_imagenet_sample(shared_data, tmp_path, capsys):
    val = shared_data / "imagenet-sample" / "val"
    out = tmp_path / "imagenet"
    code = main(["eval", "--model", "robustkit.models:resnet50", "--data", f"imagenet:{val}", "--image-size", "64",
                 "--attack", "pgd", "--eps", "4/255", "--steps", "2", "--limit", "4", "--batch-size", "2",
                 "--out", str(out), "--no-report"])
    assert code == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert results["n"] == 4 and len(results["clean"]["per_class"]["accuracy"]) == 1000
    # labels are ImageNet's indices (from classes.txt), not the positions of the sample's folders
    data = imagenet_folder(val, classes_file=shared_data / "imagenet-sample" / "classes.txt")
    records = [json.loads(line) for line in (out / "records" / "rank-0.jsonl").read_text().splitlines()]
    assert [y for r in records for y in r["y"]] == [int(data[i][1]) for i in range(4)]
    assert max(v for r in records for v in r["attacks"]["pgd"]["linf"]) <= 4 / 255 + 1e-6
    assert results["settings"]["model"]["class"] == "ResNet50"
