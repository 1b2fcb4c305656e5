"""Catch a stale distributed launch environment before Lightning waits forever on it.

Lightning launches the other ranks itself unless `LOCAL_RANK` is set, in which case it trusts
an outside launcher (torchrun, SLURM) to have started them. Variables left over from an earlier
launch in the same shell or Python process (`LOCAL_RANK=0`, `WORLD_SIZE=1`, `MASTER_PORT`)
make it skip the launch, and rank 0 then waits in the rendezvous for ranks nobody started, with
no message. When the environment's world size disagrees with the trainer's, we say so instead.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

LAUNCH_VARIABLES = ("LOCAL_RANK", "WORLD_SIZE", "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "RANK", "GROUP_RANK")


class LaunchEnvironmentError(ValueError):
    """The process environment describes a different distributed launch than the trainer's settings."""


def check_launch_environment(num_processes: int, environ: Mapping[str, str] = os.environ) -> None:
    """Refuse a run whose environment says another launcher started `WORLD_SIZE` processes, but not `num_processes`."""
    if "LOCAL_RANK" not in environ or "WORLD_SIZE" not in environ:
        return
    try:
        announced = int(environ["WORLD_SIZE"])
    except ValueError:
        raise LaunchEnvironmentError(f"WORLD_SIZE={environ['WORLD_SIZE']!r} in the environment is not a number; unset it.") from None
    if announced != num_processes:
        set_vars = " ".join(f"{k}={environ[k]}" for k in LAUNCH_VARIABLES if k in environ)
        raise LaunchEnvironmentError(
            f"The environment says an outside launcher started {announced} process(es) ({set_vars}), but the trainer "
            f"asks for {num_processes} (devices x num_nodes), so the run would wait forever for ranks nobody starts; "
            f"unset {', '.join(k for k in LAUNCH_VARIABLES if k in environ)} (left over from an earlier launch) "
            "or launch with torchrun --nproc_per_node matching trainer.devices."
        )
