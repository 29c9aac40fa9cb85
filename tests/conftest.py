"""Suite-wide: each pytest-xdist worker gets its share of the CPU cores for torch's and OpenMP's threads.

With ``-n 2`` on two cores, two workers whose torch teams each take every core oversubscribe the machine, and
an OpenMP team's barrier then waits for a descheduled thread (a Score-CAM test measured 12.8 s alone and
625 s beside the rest of the suite on a loaded machine). The variables are set before torch is imported in
the worker and are inherited by the servers and command lines the tests start. An explicit
``OMP_NUM_THREADS`` wins.
"""

from __future__ import annotations

import os

_workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
if _workers > 1 and "OMP_NUM_THREADS" not in os.environ:
    _share = str(max(1, (os.cpu_count() or 1) // _workers))
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(_name, _share)
    import torch

    torch.set_num_threads(int(_share))
