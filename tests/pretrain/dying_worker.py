"""A packing job that kills its worker process on one file (what the kernel's OOM killer does), for
the pack's pool test; a module of its own so that spawned workers import nothing heavy."""

from __future__ import annotations

import os

from pretrain.data import pack

DIES_ON = "dies.png"


def die_on_one_file(job: tuple):
    if os.path.basename(job[0]) == DIES_ON:
        os._exit(9)
    return pack.pack_file_job(job)
