"""nnUNetv2_train takes every core on CPU; ``nnUNet_vismae_cpu_threads`` gives our trainers their share
instead, so that trainings side by side (benchmark --executor local --max-parallel) do not starve each other."""

import pytest
import torch

from nnunetv2_vismae import device as device_module
from nnunetv2_vismae.training import variants

from .test_precision import CPU, CUDA, built_trainer


@pytest.fixture
def thread_calls(monkeypatch) -> list:
    """What torch.set_num_threads was asked (not applied: the test process keeps its own)."""
    calls = []
    monkeypatch.setattr(torch, "set_num_threads", calls.append)
    return calls


@pytest.mark.parametrize("value, device, asked", [("1", CPU, [1]), (None, CPU, []), ("1", CUDA, [])])
def test_a_trainer_variant_takes_the_threads_it_is_given_on_cpu_only(monkeypatch, thread_calls, value, device, asked):
    if value is None:
        monkeypatch.delenv(device_module.CPU_THREADS, raising=False)
    else:
        monkeypatch.setenv(device_module.CPU_THREADS, value)
    built_trainer(monkeypatch, device, variants.make_variant("VisMAETrainer_labels10_2epochs"))
    assert thread_calls == asked


@pytest.mark.parametrize("value", ["0", "two", "-1", "\u00b2", "17", "100000", " 4"])
def test_a_bad_thread_count_is_one_sentence_naming_the_cores(monkeypatch, thread_calls, value):
    """ASCII digits only (int() reads '\u00b2' as nothing, str.isdigit() accepts it), and at most the
    cores: 100000 torch threads crash nnUNetv2_train."""
    monkeypatch.setattr(device_module.os, "cpu_count", lambda: 16)
    monkeypatch.setenv(device_module.CPU_THREADS, value)
    with pytest.raises(device_module.DeviceError) as error:
        device_module.apply_cpu_threads(CPU)
    assert str(error.value) == (
        f"nnUNet_vismae_cpu_threads must be a whole number from 1 to 16 (this machine's cores), got {value!r}."
    )
    assert thread_calls == []


def test_every_core_is_a_valid_thread_count(monkeypatch, thread_calls):
    monkeypatch.setattr(device_module.os, "cpu_count", lambda: 16)
    monkeypatch.setenv(device_module.CPU_THREADS, "16")
    device_module.apply_cpu_threads(CPU)
    assert thread_calls == [16]


def test_side_by_side_trainings_split_the_cores(monkeypatch):
    monkeypatch.setattr(device_module.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert [device_module.cpu_share(n) for n in (1, 2, 3, 32)] == [16, 8, 5, 1]


def test_inside_nnunetv2_train_a_bad_thread_count_stops_with_the_sentence(monkeypatch, thread_calls):
    monkeypatch.setenv(device_module.CPU_THREADS, "0")
    with pytest.raises(SystemExit, match="nnUNet_vismae_cpu_threads must be a whole number from 1 to .*, got '0'"):
        built_trainer(monkeypatch, CPU, variants.make_variant("VisMAETrainer_labels10_2epochs"))
