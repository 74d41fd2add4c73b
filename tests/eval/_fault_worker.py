"""A child process for the fault-injection tests: one fixed evaluation (64 MNIST test images, FGSM and
PGD-2 on the tiny seeded LeNet, batches of 8) into ``argv[1]``, resuming whatever is there. Prints
``DONE <n>`` on success; a refusal prints ``REFUSED <type>: <message>`` and exits with status 3.

With ``$FAULT_WORKER_HOLD`` set to a path, the child stops after its first record until that file exists
(so that a test can act while it holds the output directory)."""
import os
import pathlib
import sys
import time

import torch


def settings():
    """(model, data, attacks, keyword arguments) of the evaluation; the tests run the same one in-process."""
    from robustkit.attacks import FGSM, PGD
    from tests._tiny import mnist_images, small_lenet

    model = small_lenet()
    attacks = {"fgsm": FGSM(model, eps=0.1), "pgd": PGD(model, eps=0.1, steps=2, step_size=0.06)}
    return model, mnist_images(64), attacks, dict(batch_size=8, report=False, progress=False, checks="off",
                                                  examples=0, resume=True)


def main(out: str) -> int:
    from robustkit.eval import evaluate

    torch.set_num_threads(1)
    hold = os.environ.get("FAULT_WORKER_HOLD")
    if hold:
        from robustkit.eval import records
        write = records.RecordWriter.write

        def write_then_hold(self, record):
            write(self, record)
            while not pathlib.Path(hold).exists():
                time.sleep(0.01)

        records.RecordWriter.write = write_then_hold
    model, data, attacks, kwargs = settings()
    try:
        results = evaluate(model, data, attacks, out=out, **kwargs)
    except (OSError, ValueError) as error:
        print(f"REFUSED {type(error).__name__}: {error}", flush=True)
        return 3
    print(f"DONE {results['n']}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
