"""Stand-in for the seed recipe's shim for the SecondNatureComputing/flash-attn-4-sm120 kernel.

Reproduces its import hook and its fixed 4-parameter get_flash_attn_version wrapper (see README.md).
Disabled by FA4_SM120_SHIM=0, like the original.
"""
import functools
import os
import sys
from importlib.abc import Loader, MetaPathFinder


def _sm12x():
    try:
        from vllm.platforms import current_platform
        cap = current_platform.get_device_capability()
        return cap is not None and cap[0] == 12
    except Exception:
        return False


def _patch_fa_iface(mod):
    original = mod._is_fa4_supported

    def _is_fa4_supported_patched():
        return (True, None) if _sm12x() else original()

    mod._is_fa4_supported = _is_fa4_supported_patched


def _patch_cute_iface(mod):
    original = mod._flash_attn_fwd

    def _dispatch(*args, **kwargs):
        return original(*args, **kwargs)

    mod._flash_attn_fwd = _dispatch


def _patch_fa_utils(mod):
    original = mod.get_flash_attn_version

    @functools.wraps(original)
    def patched(requires_alibi=False, head_size=None, head_size_v=None, has_sinks=False):
        if not _sm12x():
            return original(requires_alibi=requires_alibi, head_size=head_size, head_size_v=head_size_v,
                            has_sinks=has_sinks)
        if requires_alibi or (head_size is not None and head_size > 128):
            return 2
        return 4

    mod.get_flash_attn_version = patched


PATCHES = {
    "vllm.vllm_flash_attn.flash_attn_interface": _patch_fa_iface,
    "vllm.vllm_flash_attn.cute.interface": _patch_cute_iface,
    "vllm.v1.attention.backends.fa_utils": _patch_fa_utils,
}


class _WrappedLoader(Loader):
    def __init__(self, real, name):
        self.real, self.name = real, name

    def create_module(self, spec):
        return self.real.create_module(spec)

    def exec_module(self, module):
        self.real.exec_module(module)
        PATCHES[self.name](module)


class _PatchingFinder(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name not in PATCHES:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            spec = finder.find_spec(name, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                spec.loader = _WrappedLoader(spec.loader, name)
                return spec
        return None


if os.environ.get("FA4_SM120_SHIM", "1") != "0":
    sys.meta_path.insert(0, _PatchingFinder())
