"""The body of one rank of the 2-process gloo test (spawned; must be importable at top level)."""
import torch
import torch.distributed as dist

from robustkit.eval import evaluate

from ._helpers import mnist_images, real_attacks, small_model


def run_rank(rank: int, world: int, rendezvous: str, out: str, n: int, batch_size: int) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{rendezvous}", rank=rank, world_size=world)
    try:
        model = small_model()
        evaluate(model, mnist_images(n), real_attacks(model), out=out, batch_size=batch_size, progress=False,
                 report=False)
    finally:
        dist.destroy_process_group()
