"""Memory probes of real GPUs, tested here (no GPU) against fakes of the libraries' APIs: amdsmi and
pynvml as modules with the same functions, torch as a package the probe's helper process imports.
What runs for real: the unit checks, the helper process and its protocol, the choice and pairing
of probes, and the disagreement recorded in the events, JUnit and the report."""

from __future__ import annotations

import os
import sys
import textwrap
import types

import pytest

from harness.results import events as events_mod
from harness.results import junit
from harness.device import probes

GIB = 1 << 30


def _amdsmi(used_mib: int, total_mib: int, *, bytes_api: tuple[int, int] | None = None) -> types.ModuleType:
    smi = types.ModuleType("amdsmi")
    smi.amdsmi_init = lambda: None
    smi.amdsmi_get_processor_handles = lambda: ["h0", "h1"]
    smi.amdsmi_get_gpu_vram_usage = lambda h: {"vram_used": used_mib, "vram_total": total_mib}
    smi.amdsmi_get_gpu_asic_info = lambda h: {"market_name": "AMD Instinct MI250X/MI250"}
    if bytes_api is not None:
        smi.AmdSmiMemoryType = types.SimpleNamespace(VRAM="vram")
        smi.amdsmi_get_gpu_memory_usage = lambda h, kind: bytes_api[0]
        smi.amdsmi_get_gpu_memory_total = lambda h, kind: bytes_api[1]
    return smi


def _pynvml(used: int, total: int) -> types.ModuleType:
    nvml = types.ModuleType("pynvml")
    nvml.nvmlInit = lambda: None
    nvml.nvmlDeviceGetHandleByIndex = lambda i: i
    nvml.nvmlDeviceGetMemoryInfo = lambda h: types.SimpleNamespace(used=used, total=total)
    nvml.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"
    return nvml


@pytest.fixture
def fake_torch(tmp_path, monkeypatch):
    """A `torch` package first on the path of the helper process: mem_get_info answers what
    FAKE_TORCH_FREE/TOTAL say, and the helper writes its pid where FAKE_TORCH_PID says."""
    pkg = tmp_path / "site" / "torch"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(textwrap.dedent("""
        import os
        open(os.environ["FAKE_TORCH_PID"], "w").write(str(os.getpid()))
        class cuda:
            @staticmethod
            def is_available():
                return os.environ.get("FAKE_TORCH_GPU", "1") == "1"
            @staticmethod
            def mem_get_info(d):
                return int(os.environ["FAKE_TORCH_FREE"]), int(os.environ["FAKE_TORCH_TOTAL"])
            @staticmethod
            def get_device_name(d):
                return "AMD Instinct MI250X/MI250"
    """))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("FAKE_TORCH_PID", str(tmp_path / "helper.pid"))
    monkeypatch.setenv("FAKE_TORCH_FREE", str(60 * GIB))
    monkeypatch.setenv("FAKE_TORCH_TOTAL", str(64 * GIB))
    return tmp_path


def test_amdsmi_mib_become_bytes(monkeypatch):
    monkeypatch.setitem(sys.modules, "amdsmi", _amdsmi(4096, 65536))
    assert probes.AmdSmiProbe().read([1]) == [(4 * GIB, 64 * GIB)]


def test_amdsmi_bytes_api_is_preferred_where_it_exists(monkeypatch):
    monkeypatch.setitem(sys.modules, "amdsmi", _amdsmi(1, 1, bytes_api=(3 * GIB, 64 * GIB)))
    assert probes.AmdSmiProbe().read([0]) == [(3 * GIB, 64 * GIB)]


@pytest.mark.parametrize("used_mib,total_mib", [(4 * GIB, 64 * GIB), (4, 64)])  # bytes read as MiB; a 64 MiB "GPU"
def test_a_reading_in_the_wrong_unit_is_refused(monkeypatch, used_mib, total_mib):
    monkeypatch.setitem(sys.modules, "amdsmi", _amdsmi(used_mib, total_mib))
    with pytest.raises(probes.ProbeUnitError, match="not a device's memory in bytes"):
        probes.AmdSmiProbe().read([0])


def test_nvml_reads_bytes_and_is_checked(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _pynvml(2 * GIB, 80 * GIB))
    assert probes.NvmlProbe().read([0]) == [(2 * GIB, 80 * GIB)]
    monkeypatch.setitem(sys.modules, "pynvml", _pynvml(2 * GIB, 80))
    with pytest.raises(probes.ProbeUnitError):
        probes.NvmlProbe().read([0])


def test_mem_get_info_is_read_in_a_helper_process_not_the_worker(fake_torch):
    probe = probes.MemGetInfoProbe("hip")
    assert probe.read([0, 1]) == [(4 * GIB, 64 * GIB)] * 2
    assert probe.device_name(0) == "AMD Instinct MI250X/MI250"
    helper = int((fake_torch / "helper.pid").read_text())  # the fake torch ran there, not here
    assert helper == probe._proc.pid != os.getpid()
    probe._proc.stdin.close()  # the worker ends: so does its helper
    assert probe._proc.wait(timeout=30) == 0


def test_a_helper_without_a_gpu_fails_at_once_with_its_reason(fake_torch, monkeypatch):
    monkeypatch.setenv("FAKE_TORCH_GPU", "0")
    with pytest.raises(RuntimeError, match="hip helper: torch sees no GPU"):
        probes.MemGetInfoProbe("hip")


def test_rocm_pairs_hip_first_with_amdsmi_beside_it(fake_torch, monkeypatch):
    monkeypatch.setitem(sys.modules, "amdsmi", _amdsmi(4096, 65536))
    probe = probes.for_platform("rocm")
    assert isinstance(probe, probes.DualProbe) and (probe.name, probe.second.name) == ("hip", "amdsmi")
    readings = probe.read([0])
    assert probes.beside(probe, [0], readings) == {"second_probe": "amdsmi", "second_used_bytes": 4 * GIB}
    # amdsmi reports the whole card of a partitioned MI300X: 10 GiB more than HIP sees
    monkeypatch.setitem(sys.modules, "amdsmi", _amdsmi(14 * 1024, 65536))
    probe = probes.for_platform("rocm")
    assert probes.beside(probe, [0], probe.read([0]))["probe_disagreement_bytes"] == 10 * GIB


def test_cuda_pairs_nvml_first_with_torch_beside_it(fake_torch, monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", _pynvml(4 * GIB, 64 * GIB))
    probe = probes.for_platform("cuda")
    assert (probe.name, probe.second.name) == ("nvml", "torch")


def test_one_working_probe_is_used_alone(monkeypatch):
    monkeypatch.setitem(sys.modules, "amdsmi", _amdsmi(4096, 65536))
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")  # no helper can start
    probe = probes.for_platform("rocm")
    assert probe.name == "amdsmi" and probes.beside(probe, [0], probe.read([0])) == {}


def test_a_disagreement_becomes_a_junit_property_and_a_report_line(tmp_path):
    plan_steps = [{"name": "s", "index": 0}]
    evs = [{"t": 0, "event": "step_start", "step": "s", "index": 0, "engine_process": "child"},
           {"t": 1, "event": "memory", "step": "s", "index": 0, "label": "after_construct", "used_bytes": 9 * GIB,
            "total_bytes": 64 * GIB, "second_probe": "amdsmi", "second_used_bytes": 20 * GIB,
            "probe_disagreement_bytes": 11 * GIB},
           {"t": 2, "event": "step_end", "step": "s", "index": 0, "outcome": "passed"}]
    (tmp_path / "log").write_text("")
    _, results = events_mod.collect(evs, plan_steps, log=tmp_path / "log", stopped=None, exit_description="exit 0")
    props = junit.case_properties(results[0])
    assert props["probe_disagreement_bytes"] == str(11 * GIB) and props["probe_disagreement_at"] == "after_construct"
    assert props["engine_process"] == "child"
    from harness.model import Outcome
    from harness.report import markdown
    from harness.results import junitread, summary

    case = junitread.Case("sc", "sc", "s", Outcome.PASSED, properties=props)
    notes = summary._probe_notes({"with_fix": [case]})
    assert notes == ["with_fix: s: the device's two probes disagree by 11.00 GiB (at after_construct); "
                     "the first one's figures were used"]
    assert "### Probe disagreements" in markdown._listing("Probe disagreements", notes)
