"""Verify fa2_native after converge + idempotence on two containers (see molecule.yml for the stand-ins).

Host 1 built the test project for real with nvcc; host 2 got the library through the controller's
fleet cache. The new library is read with the real cuda_fatbin_info module on each host.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

LIBDIR_GLOB = "/opt/vllm/venv/lib/python3*/site-packages/vllm/vllm_flash_attn"
LIB = "_vllm_fa2_C.abi3.so"
CACHE = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent")) / "fa2-fleet-cache"


def libdir(host):
    return host.check_output("ls -d %s" % LIBDIR_GLOB)


def is_builder(host):
    return host.backend.get_hostname().endswith("-1")


def manifest(host):
    return json.loads(host.file(libdir(host) + "/" + LIB + ".dgxspark.json").content_string)


def test_installed_manifest_is_the_fleet_caches(host):
    entries = [p for p in CACHE.iterdir() if p.is_dir()]
    assert len(entries) == 1, entries
    cached = json.loads((entries[0] / "manifest.json").read_text())
    installed = manifest(host)
    assert installed == cached
    assert installed["build_key"] == entries[0].name
    assert installed["fa2_archs"] == "12.1"
    assert installed["built_on"] == "dgxspark-fa2_native-1"
    assert installed["key"]["vllm"] == "0.33.0" and installed["key"]["torch"] == "2.14.0+cu130"
    assert installed["key"]["cuda"] == "13.0" and installed["key"]["target_archs"] == ["12.1"]
    assert installed["source"]["kind"] == "local" and installed["key"]["fa_commit"].startswith("tree-")
    assert hashlib.sha256((entries[0] / LIB).read_bytes()).hexdigest() == installed["sha256"]


def test_library_in_place_is_the_one_in_the_manifest(host):
    path = libdir(host) + "/" + LIB
    assert host.file(path).sha256sum == manifest(host)["sha256"]


def test_new_library_has_sm_121_sass_and_no_ptx(host):
    result = host.ansible("dgxspark.vllm.cuda_fatbin_info", "path=%s/%s target_archs=12.1" % (libdir(host), LIB), check=True)
    assert result["sass_archs"] == ["sm_121"]
    assert result["ptx_archs"] == []
    assert result["problems"] == []


def test_stock_library_is_kept_beside_it(host):
    stock = libdir(host) + "/" + LIB + ".stock"
    assert host.file(stock).sha256sum == host.file("/root/stock.sha256").content_string.strip()
    result = host.ansible("dgxspark.vllm.cuda_fatbin_info", "path=%s target_archs=12.1" % stock, check=True)
    assert result["sass_archs"] == ["sm_80"] and result["ptx_archs"] == ["sm_80"]
    assert result["summary"].startswith("PTX-only for sm_121")


def test_nothing_half_written_or_left_over_beside_the_library(host):
    names = sorted(host.check_output("ls -A %s" % libdir(host)).split())
    assert names == ["__init__.py", LIB, LIB + ".dgxspark.json", LIB + ".stock"]


def test_installed_library_loads_as_a_python_extension(host):
    code = ("import importlib.util,sys; p=sys.argv[1]; s=importlib.util.spec_from_file_location('_vllm_fa2_C', p); "
            "m=importlib.util.module_from_spec(s); s.loader.exec_module(m); print(m.fixture_info())")
    out = host.check_output("/opt/vllm/venv/bin/python -c %s %s/%s" % (json.dumps(code), libdir(host), LIB))
    assert "fa2_native test project" in out


def test_builder_built_and_patched(host):
    if not is_builder(host):
        pytest.skip("host 2 does not build")
    logs = host.check_output("ls /var/lib/dgxspark/fa2_native/logs/").split()
    log = host.file("/var/lib/dgxspark/fa2_native/logs/" + [n for n in logs if n.endswith(".log")][0]).content_string
    assert "FA2_ARCHS: 12.1" in log
    assert "CUDA supported target architectures: 12.1" in log
    assert "Linking CXX shared module _vllm_fa2_C.abi3.so" in log
    assert "_vllm_fa3_C" not in log.split("== build")[-1], "only the FA2 target may be built"
    script = host.check_output("cat /var/lib/dgxspark/fa2_native/fa2-build-*.sh")
    assert "-DCUDA_cuda_driver_LIBRARY=/usr/local/lib/cuda-link-stub/libcuda.so" in script, "the stand-in libcuda.so is linked"
    cmakelists = host.file("/opt/src/flash-attention/CMakeLists.txt").content_string
    assert 'list(APPEND CUDA_SUPPORTED_ARCHS "10.0" "11.0" "12.0" "12.1")' in cmakelists
    assert 'cuda_archs_loose_intersection(FA2_ARCHS "12.1" "${CUDA_ARCHS}")' in cmakelists
    assert host.check_output("ls -A /var/lib/dgxspark/fa2_native/build /var/lib/dgxspark/fa2_native/stage").split() \
        == ["/var/lib/dgxspark/fa2_native/build:", "/var/lib/dgxspark/fa2_native/stage:"], "build trees are cleaned"


def test_second_host_did_not_build(host):
    if is_builder(host):
        pytest.skip("host 1 is the builder")
    assert not host.file("/var/lib/dgxspark/fa2_native/logs").exists
    assert not host.file("/var/lib/dgxspark/fa2_native/build").exists
    assert not host.exists("g++"), "host 2 never needed a compiler"
    cmakelists = host.file("/opt/src/flash-attention/CMakeLists.txt").content_string
    assert '"8.0+PTX" "${CUDA_ARCHS}")' in cmakelists, "host 2's source tree was not touched"
