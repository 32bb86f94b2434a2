"""torch's intra-op thread count for one block of code.

torch has no scoped form of ``torch.set_num_threads``; the aligner (fused kernels on their own worker
threads, single-threaded ops elsewhere, the Cholesky on the thread team) and the pose solver (tiny
Procrustes problems) each need one, so it lives here once.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """torch's intra-op threads set to ``n`` inside the block and restored afterwards; ``n <= 0``
    leaves them as they are."""
    import torch  # not at module import: the CLI imports the plugins without torch

    if n <= 0:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
