"""nnU-Net's folders, configurations and commands as every stage meets them: a dataset's folder found
the way nnU-Net's own commands find it, a configuration's name and spatial dimensions, the environment in
which nnU-Net's commands find our trainers, and one console script run with its output in a log."""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import nnunetv2_vismae

FOLDER_VARIABLES = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
# nnU-Net's configuration of 2D slices; its 3D ones are 3d_fullres, 3d_lowres and 3d_cascade_fullres
CONFIGURATION_2D = "2d"
CONFIGURATION_3D = "3d_fullres"


def configuration_dims(plans: dict, name: str, error: type[Exception] = ValueError) -> int:
    """The spatial dimensions of configuration ``name`` of nnU-Net plans: the length of its patch size,
    looked up along ``inherits_from`` as nnU-Net's PlansManager does; ``error`` with one sentence when the
    plans have no such configuration or it has no patch size."""
    configurations = plans.get("configurations") if isinstance(plans, dict) else None
    seen = []
    while isinstance(configurations, dict) and isinstance(name, str) and name not in seen:
        seen.append(name)
        configuration = configurations.get(name)
        if not isinstance(configuration, dict):
            break
        patch_size = configuration.get("patch_size")
        if isinstance(patch_size, list) and patch_size:
            return len(patch_size)
        name = configuration.get("inherits_from")
    raise error(
        f"The plans have no configuration {seen[0] if seen else name!r} with a patch size "
        f"(they have {sorted(configurations) if isinstance(configurations, dict) else 'none'})."
    )


def _not_found(dataset, where: str) -> str:
    return f"Found no dataset folder for dataset {dataset} in {where}; run nnUNetv2_plan_and_preprocess for it first."


def dataset_name(dataset: int | str, error: type[Exception]) -> str:
    """``4``, ``004`` or ``Dataset004_Name`` -> ``Dataset004_Name``, by nnU-Net's own lookup (in its raw,
    preprocessed and results folders); ``error`` with one sentence when that finds none or several."""
    # imported here: nnUNetv2_vismae_env imports this module and must not load nnU-Net (and torch)
    from nnunetv2.utilities.dataset_name_id_conversion import find_candidate_datasets, maybe_convert_to_dataset_name

    try:
        return maybe_convert_to_dataset_name(str(dataset))
    except ValueError:
        raise error(f"Dataset {str(dataset)!r} is neither an integer id nor a DatasetXXX_Name.") from None
    except RuntimeError:  # nnU-Net's message spans lines: say in one sentence which case it is
        found = find_candidate_datasets(int(dataset))
        if len(found) > 1:
            raise error(f"Dataset id {dataset} matches several folders: {', '.join(found)}.") from None
        searched = ", ".join(f"{v} ({os.environ[v]})" for v in FOLDER_VARIABLES if os.environ.get(v))
        raise error(_not_found(dataset, searched or "nnU-Net's folders (none is set)")) from None


def preprocessed_folder(dataset: int | str, error: type[Exception]) -> Path:
    """The dataset's folder in nnUNet_preprocessed; ``error`` with one sentence when the variable or
    the folder is missing."""
    root = os.environ.get("nnUNet_preprocessed")
    if not root:
        raise error(
            "The environment variable nnUNet_preprocessed is not set; point it at nnU-Net's "
            "preprocessed folder, as for nnU-Net's own commands."
        )
    if not Path(root).is_dir():
        raise error(f"nnUNet_preprocessed={root} is not a folder.")
    folder = Path(root) / dataset_name(dataset, error)
    if not folder.is_dir():
        raise error(_not_found(dataset, f"nnUNet_preprocessed ({root})"))
    return folder


def ext_trainer_folder() -> str:
    return str(Path(nnunetv2_vismae.__file__).parent / "nnunet_ext")


def ext_trainer_value(current: str | None) -> str:
    """nnUNet_extTrainer with our folder appended to whatever the user already has."""
    parts = [p for p in (current or "").split(os.pathsep) if p]
    folder = ext_trainer_folder()
    return os.pathsep.join(parts if folder in parts else parts + [folder])


def make_folders(root: Path) -> dict[str, str]:
    """nnU-Net's three folders made under ``root``, named as their variables: variable -> folder."""
    folders = {name: str(Path(root) / name) for name in FOLDER_VARIABLES}
    for folder in folders.values():
        os.makedirs(folder, exist_ok=True)
    return folders


def command_environment(**variables: str) -> dict[str, str]:
    """This process's environment with ``variables`` set and our trainers added to nnUNet_extTrainer:
    the environment nnU-Net's commands find VisMAETrainer and its variants in."""
    return dict(os.environ, **variables, nnUNet_extTrainer=ext_trainer_value(os.environ.get("nnUNet_extTrainer")))


def console_script(name: str) -> str:
    """The console script of this Python environment when it is there, else whatever PATH finds."""
    local = Path(sys.executable).parent / name
    return str(local) if local.is_file() else name


@contextlib.contextmanager
def sigterm_as_interrupt():
    """SIGTERM raises KeyboardInterrupt here, as Ctrl-C does, so that a command stops the command it runs
    (``run_logged``) and the jobs it waits for; Python's default would end this process at once and leave
    them running."""
    previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_logged(cmd: Sequence[str], env: dict, log: Path, mode: str = "a") -> int:
    """Run one console script with its output written to ``log`` (``mode`` "a" appends, "w" starts
    afresh) after a ``$ command`` line; returns its exit status. Interrupted (Ctrl-C, or a signal the
    caller turns into an exception), it stops the command and every process the command started."""
    with open(log, mode) as handle:
        handle.write(f"$ {shlex.join(cmd)}\n")
        handle.flush()  # before the child writes into the same file
        process = subprocess.Popen(
            [console_script(cmd[0]), *cmd[1:]],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopping it reaches its workers too
        )
        try:
            return process.wait()
        except BaseException:
            stop_process_group(process)
            raise


def stop_process_group(process: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM to the group the process leads, SIGKILL if it has not ended after ``grace_s``."""
    if not hasattr(os, "killpg"):  # Windows: no process groups
        process.kill()
        process.wait()
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return  # the whole group is gone
        try:
            process.wait(timeout=grace_s)
            return
        except subprocess.TimeoutExpired:
            pass
