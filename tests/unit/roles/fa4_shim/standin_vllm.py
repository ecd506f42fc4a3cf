"""Writes small stand-in ``vllm`` packages for the shim's unit tests.

Stand-ins, not vLLM: they hold only the names the shim patches, with the decision logic of
vLLM 0.24-0.33 cut down to what matters here (FA3 on 9.x, FA4 on 10.x, FA2 elsewhere; ALiBi
and head sizes over 128 drop FA4; a configured version wins). The real vLLM code is tested in
tests/integration/fa4_shim/. The platform reports the capability in $STANDIN_CAPABILITY
("12.1", "9.0", or empty for no GPU); $STANDIN_FA_VERSION plays vLLM's configured version.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[4]
ROLE = ROOT / "roles" / "fa4_shim"
SHIM = ROLE / "files" / "dgxspark_fa4_sm120_shim.py"
PTH = "zzz_dgxspark_fa4_sm120.pth"
STANDIN_KERNEL = ROOT / "tests" / "integration" / "fa4_shim" / "standin_kernel"
SEED_STYLE = ROOT / "tests" / "integration" / "fa4_shim" / "seed_style_shim"

# get_flash_attn_version's parameters by vLLM release family.
SIGNATURES = {
    # vLLM 0.24-0.28
    "four": "requires_alibi=False, head_size=None, head_size_v=None, has_sinks=False",
    # vLLM 0.29 and later
    "seven": ("requires_alibi=False, head_size=None, head_size_v=None, has_sinks=False, requires_softcap=False, "
              "kv_cache_block_size=None, supports_fa4_hd256=False"),
    # a later release with one more keyword
    "eight": ("requires_alibi=False, head_size=None, head_size_v=None, has_sinks=False, requires_softcap=False, "
              "kv_cache_block_size=None, supports_fa4_hd256=False, future_flag=False"),
}

FILES = {
    "vllm/__init__.py": '__version__ = "0.0.0+standin"\n',
    "vllm/envs.py": """
        import os
        VLLM_BATCH_INVARIANT = os.environ.get("STANDIN_BATCH_INVARIANT") == "1"
    """,
    "vllm/config.py": """
        import os


        class _Attention:
            flash_attn_version = int(os.environ["STANDIN_FA_VERSION"]) if os.environ.get("STANDIN_FA_VERSION") else None


        class _Config:
            attention_config = _Attention()


        def get_current_vllm_config_or_none():
            return _Config() if os.environ.get("STANDIN_FA_VERSION") else None
    """,
    "torch/__init__.py": '__version__ = "0.0.0+standin"\n',
    "vllm/platforms/interface.py": """
        from collections import namedtuple

        DeviceCapability = namedtuple("DeviceCapability", "major minor")
    """,
    "vllm/platforms/__init__.py": """
        import os

        from vllm.platforms.interface import DeviceCapability


        class StandinPlatform:
            def is_rocm(self):
                return False

            def is_xpu(self):
                return False

            @classmethod
            def get_device_capability(cls, device_id=0):
                value = os.environ.get("STANDIN_CAPABILITY", "")
                if not value:
                    return None
                major, minor = value.split(".")
                return DeviceCapability(int(major), int(minor))

            def is_device_capability_family(self, capability):
                cap = self.get_device_capability()
                return cap is not None and cap.major == capability // 10


        # Resolved lazily through _current_platform, as in vLLM (the probe's assume_capability replaces it).
        _current_platform = None


        def __getattr__(name):
            global _current_platform
            if name == "current_platform":
                if _current_platform is None:
                    _current_platform = StandinPlatform()
                return _current_platform
            raise AttributeError(name)
    """,
    "vllm/vllm_flash_attn/__init__.py": """
        from vllm.vllm_flash_attn.flash_attn_interface import is_fa_version_supported  # noqa: F401
    """,
    "vllm/vllm_flash_attn/flash_attn_interface.py": """
        FA4_AVAILABLE = True
        FA4_UNAVAILABLE_REASON = None


        def _is_fa4_supported():
            from vllm.platforms import current_platform
            if not any(current_platform.is_device_capability_family(f) for f in (90, 100, 110)):
                return False, "FA4 is only supported on devices with compute capability 9.x, 10.x, or 11.x"
            return True, None


        def is_fa_version_supported(fa_version):
            if fa_version == 4:
                return _is_fa4_supported()[0]
            return fa_version in (2, 3)


        def flash_attn_varlen_func(q, k, v, block_table=None, num_splits=0, fa_version=2, return_softmax_lse=False):
            if fa_version == 4:
                from vllm.vllm_flash_attn.cute.interface import _flash_attn_fwd
                out, lse, _, _ = _flash_attn_fwd(q, k, v, page_table=block_table, num_splits=num_splits,
                                                 return_lse=return_softmax_lse)
                return (out, lse) if return_softmax_lse else out
            return ("fa%d-out" % fa_version, q)
    """,
    "vllm/vllm_flash_attn/cute/__init__.py": "",
    "vllm/vllm_flash_attn/cute/interface.py": """
        def _flash_attn_fwd(q, k, v, cu_seqlens_q=None, page_table=None, causal=False, num_splits=1,
                            return_lse=False, out=None, gather_kv_indices=None, fp8_kv_dequant=False,
                            compile_only=False):
            from vllm.platforms import current_platform
            cap = current_platform.get_device_capability()
            if cap is not None and cap.major == 12:
                assert num_splits == 1, "SM120 forward only supports num_splits=1"
                assert page_table is None, "Paged KV not supported on SM 12.0 in this PR"
            if compile_only:
                return None
            return ("vllm-out", q), "vllm-lse", None, None
    """,
    "vllm/v1/__init__.py": "",
    "vllm/v1/attention/__init__.py": "",
    "vllm/v1/attention/backends/__init__.py": "",
    "vllm/v1/attention/backends/fa_utils.py": """
        from vllm.platforms import current_platform


        def get_flash_attn_version(%(signature)s):
            from vllm.vllm_flash_attn.flash_attn_interface import is_fa_version_supported
            cap = current_platform.get_device_capability()
            if cap is None:
                return None
            if cap.major == 9 and is_fa_version_supported(3):
                fa_version = 3
            elif cap.major == 10 and is_fa_version_supported(4):
                fa_version = 4
            else:
                fa_version = 2
            from vllm.config import get_current_vllm_config_or_none
            config = get_current_vllm_config_or_none()
            if config is not None and config.attention_config.flash_attn_version is not None:
                fa_version = config.attention_config.flash_attn_version
            if requires_alibi and fa_version in (3, 4):
                fa_version = 2
            if fa_version == 4 and head_size is not None and head_size > 128:
                fa_version = 2
            if not is_fa_version_supported(fa_version):
                return None
            return fa_version
    """,
    # A caller that binds the name at import time, as about ten real vLLM modules do.
    "vllm/v1/attention/backends/flash_attn.py": """
        from vllm.v1.attention.backends.fa_utils import get_flash_attn_version


        def select(**kwargs):
            return get_flash_attn_version(**kwargs)
    """,
}


def write_vllm(root: Path, shape: str = "seven") -> Path:
    """Write a stand-in vllm package under root (a sys.path entry) and return root."""
    for rel, text in FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        body = textwrap.dedent(text).lstrip("\n")
        if rel.endswith("fa_utils.py"):
            body = body % {"signature": SIGNATURES[shape]}
        path.write_text(body)
    return root


def render_pth(kernel_dir, subdir="build/torch-cuda", revision="standin"):
    """Render the role's .pth template, with plain stand-ins for ansible_managed, comment and to_json."""
    import jinja2

    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
    env.filters["comment"] = lambda text: "#\n# " + text + "\n#"
    env.filters["to_json"] = json.dumps
    template = env.from_string((ROLE / "templates" / (PTH + ".j2")).read_text())
    return template.render(ansible_managed="Ansible managed (test render)",
                           fa4_shim_kernel_repo="SecondNatureComputing/flash-attn-4-sm120",
                           fa4_shim_kernel_subdir=subdir, __fa4_shim_kernel_dir=str(kernel_dir),
                           __fa4_shim_kernel_revision_label=revision)


def install_shim(site_packages: Path, kernel_dir=STANDIN_KERNEL):
    """Put the shim and its rendered .pth into site_packages, as the role does."""
    shutil.copy(SHIM, site_packages / SHIM.name)
    (site_packages / PTH).write_text(render_pth(kernel_dir))


def install_seed_style(site_packages: Path):
    """Put the stand-in of the upstream recipe's shim (fixed 4-parameter wrapper) into site_packages."""
    for name in ("fa4_sm120_shim.py", "zzz_fa4_sm120_shim.pth"):
        shutil.copy(SEED_STYLE / name, site_packages / name)


def make_venv(path: Path, python=sys.executable) -> Path:
    """A bare venv (no pip: fast); returns its site-packages (purelib)."""
    subprocess.run([python, "-m", "venv", "--without-pip", str(path)], check=True)
    out = subprocess.run([str(path / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True).stdout.strip()
    return Path(out)
