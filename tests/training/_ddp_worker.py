"""Run by torchrun in the distributed test: every rank trains the same tiny model with fit; rank 0's
checkpoint folder receives the result. Usage: _ddp_worker.py <checkpoint_dir> <report.json>"""
import json
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tests.training._common import tiny_data, tiny_model  # noqa: E402
from tests.training.test_distributed import SETTINGS, objective_for  # noqa: E402

from robustkit.training import fit  # noqa: E402


def main() -> None:
    torch.set_num_threads(1)
    folder, report = sys.argv[1], sys.argv[2]
    model = tiny_model()
    history = fit(model, tiny_data(SETTINGS["n"]), objective_for(model), checkpoint_dir=folder, progress=False,
                  **SETTINGS["fit"])
    rank = int(os.environ["RANK"])
    with open(f"{report}.{rank}", "w") as handle:
        json.dump({"rank": rank, "world": int(os.environ["WORLD_SIZE"]), "epochs": len(history),
                   "train_images": history[-1]["images_per_second"] > 0}, handle)


if __name__ == "__main__":
    main()
