# -*- coding: utf-8 -*-
# Copyright: dgxspark.vllm contributors
# Apache License 2.0 (see LICENSE)
"""Parsing of ``nvidia-smi`` and ``nvcc`` output, shared by the modules.

Plain functions with no Ansible imports, so they can be unit tested directly.
"""

from __future__ import annotations

import re

# The fields asked of nvidia-smi, in this order. A GPU's index is its line's position.
QUERY_FIELDS = ("name", "compute_cap", "driver_version", "memory.total", "uuid")

# Values nvidia-smi prints where a field has no value. GB10's unified memory
# gives one of these for memory.total.
NOT_AVAILABLE = ("[N/A]", "[Not Supported]", "N/A", "[Unknown Error]", "[Insufficient Permissions]")

_CAP_RE = re.compile(r"^(\d+)\.(\d+)$")
_NVCC_RE = re.compile(r"release (\d+)\.(\d+), V(\d+(?:\.\d+)*)")


class GpuParseError(ValueError):
    """Raised when nvidia-smi or nvcc output cannot be understood."""


def query_args():
    """Return the nvidia-smi arguments (without the binary) this module runs."""
    return ["--query-gpu=" + ",".join(QUERY_FIELDS), "--format=csv,noheader,nounits"]


def _value_or_none(raw):
    value = raw.strip()
    if value in NOT_AVAILABLE or value == "":
        return None
    return value


def torch_arch_for(capability):
    """Map a compute capability string to its TORCH_CUDA_ARCH_LIST value.

    Capabilities 9.0 and newer have arch-specific ('a') variants that the
    SM12x kernels need (FP4 conversion on sm_121 fails without it), so the
    value is suffixed with 'a' there: "12.1" -> "12.1a", "9.0" -> "9.0a".
    Older ones are returned unchanged.
    """
    match = _CAP_RE.match(capability or "")
    if not match:
        raise GpuParseError("compute capability %r is not of the form MAJOR.MINOR" % (capability,))
    major = int(match.group(1))
    return capability + "a" if major >= 9 else capability


def parse_gpu_line(line, index=0):
    """Parse one line of the csv output into a dict; raise GpuParseError quoting the line."""
    fields = [part.strip() for part in line.split(",")]
    if len(fields) != len(QUERY_FIELDS):
        raise GpuParseError(
            "cannot parse nvidia-smi line %r: expected %d comma-separated fields (%s), got %d"
            % (line, len(QUERY_FIELDS), ", ".join(QUERY_FIELDS), len(fields))
        )
    raw = dict(zip(QUERY_FIELDS, fields))
    capability = _value_or_none(raw["compute_cap"])
    if capability is None or not _CAP_RE.match(capability):
        raise GpuParseError(
            "cannot parse nvidia-smi line %r: compute capability %r is not of the form MAJOR.MINOR"
            % (line, raw["compute_cap"])
        )
    memory = _value_or_none(raw["memory.total"])
    if memory is not None:
        try:
            memory = int(float(memory))
        except ValueError:
            raise GpuParseError(
                "cannot parse nvidia-smi line %r: memory.total %r is neither a number nor [N/A]/[Not Supported]"
                % (line, raw["memory.total"])
            )
    name = _value_or_none(raw["name"])
    if name is None:
        raise GpuParseError("cannot parse nvidia-smi line %r: empty GPU name" % (line,))
    major, minor = (int(x) for x in capability.split("."))
    return {
        "index": index,
        "name": name,
        "uuid": _value_or_none(raw["uuid"]),
        "compute_capability": capability,
        "compute_capability_major": major,
        "compute_capability_minor": minor,
        "torch_cuda_arch": torch_arch_for(capability),
        "memory_total_mib": memory,
        "driver_version": _value_or_none(raw["driver_version"]),
    }


def parse_gpu_query(output):
    """Parse the whole csv output of the nvidia-smi query into a list of GPU dicts."""
    lines = [line for line in output.splitlines() if line.strip()]
    return [parse_gpu_line(line, index) for index, line in enumerate(lines)]


def driver_failure_reason(smi, rc, out, err, limit=400):
    """Why a host whose nvidia-smi exits non-zero has no usable GPU: the command, its exit code and what it said."""
    said = " ".join((out or "").split() + (err or "").split()) or "no output"
    if len(said) > limit:
        said = said[:limit - 3] + "..."
    return "%s failed (rc=%d): %s" % (smi, rc, said)


def parse_nvcc_version(output):
    """Return {'version': '13.0', 'build': '13.0.88'} from ``nvcc --version`` output."""
    match = _NVCC_RE.search(output or "")
    if not match:
        last = (output or "").strip().splitlines()[-1:] or [""]
        raise GpuParseError("cannot find 'release X.Y' in nvcc --version output; last line was %r" % (last[0],))
    return {"version": "%s.%s" % (match.group(1), match.group(2)), "build": match.group(3)}


def summarize(gpus, reason=None):
    """Build the facts dict the gpu_facts module returns."""
    return {
        "present": bool(gpus),
        "reason": None if gpus else reason,
        "count": len(gpus),
        "gpus": gpus,
        "compute_capabilities": sorted({g["compute_capability"] for g in gpus}),
        "torch_cuda_arch_list": ";".join(sorted({g["torch_cuda_arch"] for g in gpus})),
        "driver_version": gpus[0]["driver_version"] if gpus else None,
    }
