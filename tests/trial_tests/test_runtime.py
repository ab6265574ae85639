"""search.trial.runtime.device_memory_budget: the GPU's memory when one is visible, without importing TensorFlow."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

import search.trial.runtime as runtime

MIB = 2**20
# `nvidia-smi --query-gpu=index,uuid,memory.total --format=csv,noheader,nounits` on a two-GPU machine
SMI = "0, GPU-aaaa1111-0000-0000-0000-000000000000, 81559\n1, GPU-bbbb2222-0000-0000-0000-000000000000, 143771\n"


@pytest.fixture
def fake_smi(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """nvidia-smi on PATH, answering SMI; records each command."""
    calls: list[list[str]] = []

    def run(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout=SMI, stderr="")

    monkeypatch.setattr(runtime.shutil, "which", lambda name: "/usr/bin/nvidia-smi" if name == "nvidia-smi" else None)
    monkeypatch.setattr(runtime.subprocess, "run", run)
    monkeypatch.delenv("UNET_SEARCH_GPU_MEMORY_GB", raising=False)
    return calls


HOST_PAGES = {"SC_PAGE_SIZE": 4096, "SC_PHYS_PAGES": 2_621_440}  # a 10 GiB host
HOST_BUDGET = 8 * 2**30  # 80 % of it (device_memory_budget's rule), a known answer, not the formula again


@pytest.fixture(autouse=True)
def _ten_gib_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime.os, "sysconf", lambda name: HOST_PAGES[name])


def _host_budget() -> int:
    return HOST_BUDGET


@pytest.mark.parametrize(("visible", "expected_mib"), [
    (None, 81559), ("0", 81559), ("1", 143771), ("1,0", 143771), ("GPU-bbbb2222", 143771),
])
def test_the_first_visible_gpu_sets_the_budget(
    fake_smi: list[list[str]], monkeypatch: pytest.MonkeyPatch, visible: str | None, expected_mib: int
) -> None:
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert runtime.device_memory_budget() == expected_mib * MIB
    assert fake_smi and fake_smi[0][0] == "nvidia-smi"


@pytest.mark.parametrize("visible", ["", "-1"])
def test_hidden_gpus_mean_host_memory_and_no_query(
    fake_smi: list[list[str]], monkeypatch: pytest.MonkeyPatch, visible: str
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert runtime.device_memory_budget() == _host_budget()
    assert fake_smi == []


def test_a_gpu_of_unknown_size_means_no_budget(fake_smi: list[list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-0c4b1a52-0000-0000-0000-000000000000")  # a MIG slice
    assert runtime.device_memory_budget() is None


def test_no_nvidia_smi_or_a_failing_one_falls_back_to_host_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("UNET_SEARCH_GPU_MEMORY_GB", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    monkeypatch.setattr(runtime.shutil, "which", lambda name: None)
    assert runtime.device_memory_budget() == _host_budget()

    def broken(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        raise subprocess.TimeoutExpired(cmd, 10)

    monkeypatch.setattr(runtime.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(runtime.subprocess, "run", broken)
    assert runtime.device_memory_budget() == _host_budget()


def test_the_environment_variable_wins(fake_smi: list[list[str]], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNET_SEARCH_GPU_MEMORY_GB", "12")
    assert runtime.device_memory_budget() == 12 * 2**30
    assert fake_smi == []


def test_asking_does_not_import_tensorflow() -> None:
    code = ("import sys, search.trial.runtime as r; r.device_memory_budget(); "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["False", "False"]
