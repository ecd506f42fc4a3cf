# -*- coding: utf-8 -*-
# Copyright: dgxspark.vllm contributors
# Apache License 2.0 (see LICENSE)
# Installed into the vLLM venv's site-packages by the dgxspark.vllm.fa4_shim role.
# Loaded at interpreter start by zzz_dgxspark_fa4_sm120.pth, which calls install().
"""Route vLLM's FA4 attention path to the SM120 FlashAttention-4 kernel on SM12x GPUs.

vLLM's bundled FA4 (CuTe) kernels refuse paged KV and split-KV on compute capability 12.x,
and vLLM never picks FA4 there. This module patches three vLLM names right after their
modules execute (a ``sys.meta_path`` finder wraps their loaders):

- ``vllm.vllm_flash_attn.flash_attn_interface._is_fa4_supported``: ``(True, None)`` on SM12x;
- ``vllm.v1.attention.backends.fa_utils.get_flash_attn_version``: 4 on SM12x for head sizes
  up to 128, 2 for ALiBi and for larger head sizes; every argument passes through, so the
  4-parameter (vLLM 0.24-0.28) and 7-parameter (0.29+) signatures and any later keyword work;
- ``vllm.vllm_flash_attn.cute.interface._flash_attn_fwd``: on SM12x it calls the kernel
  loaded from a local directory (no network), adapting ``num_splits=0`` and the return shape.

Rules: FA4 is chosen only on SM12x (NVIDIA) and only when the local kernel directory loads;
if it does not, one warning is logged and vLLM keeps its own behaviour. Other GPUs are left
untouched. No patch can make ``import vllm`` fail: every step is guarded. ``FA4_SM120_SHIM=0``
in the environment turns the whole module off (nothing is patched).
"""

from __future__ import annotations

# Only cheap modules at import time: this runs at every start of the venv's Python (pip included).
# importlib.abc would pull in importlib.resources, pathlib, tempfile and typing (tens of milliseconds),
# so the finder and the loader below are plain classes with the methods the import system calls.
import _thread
import os
import sys

SHIM_VERSION = "1.0.0"
ENV_SWITCH = "FA4_SM120_SHIM"
# Overrides the kernel package directory given to install() (a test or debugging aid).
ENV_PACKAGE_DIR = "FA4_SM120_PACKAGE_DIR"
MAX_HEAD_DIM = 128
DEFAULT_ARITY = 4
KERNEL_MODULE = "dgxspark_fa4_sm120_kernel"

FA_IFACE = "vllm.vllm_flash_attn.flash_attn_interface"
CUTE_IFACE = "vllm.vllm_flash_attn.cute.interface"
FA_UTILS = "vllm.v1.attention.backends.fa_utils"

_MARK = "__dgxspark_fa4_sm120_shim__"

LOGGER = "vllm.dgxspark_fa4_sm120_shim"
_lock = _thread.RLock()
_state = {
    "version": SHIM_VERSION,
    "enabled": None,
    "installed": False,
    "package_dir": None,
    "revision": None,
    "repo": None,
    "kernel_tried": False,
    "kernel_error": None,
    "patched": {},
    "errors": [],
    "warnings": [],
}
_kernel = {"fwd": None, "params": None, "var_kw": False}
_route_cache = {"platform": None, "value": False}


def enabled():
    """False when FA4_SM120_SHIM is 0/false/no/off (the kill switch)."""
    return os.environ.get(ENV_SWITCH, "1").strip().lower() not in ("0", "false", "no", "off")


def _warn_once(key, message):
    if key in {w["key"] for w in _state["warnings"]}:
        return
    _state["warnings"].append({"key": key, "message": message})
    try:
        import logging
        logging.getLogger(LOGGER).warning("[dgxspark fa4 shim] %s", message)
    except Exception:  # logging must never break vLLM
        pass


def _note_error(where, exc):
    text = "%s: %s: %s" % (where, type(exc).__name__, exc)
    _state["errors"].append(text)
    _warn_once("error:" + where, "%s; vLLM's own behaviour is kept there" % text)


def status():
    """A JSON-serialisable summary, read by dgxspark.vllm.vllm_verify."""
    out = dict(_state)
    out["patched"] = dict(_state["patched"])
    out["errors"] = list(_state["errors"])
    out["warnings"] = [w["message"] for w in _state["warnings"]]
    out["kernel_loaded"] = _kernel["fwd"] is not None
    out["finder_installed"] = any(isinstance(f, _PatchingFinder) for f in sys.meta_path)
    return out


# --------------------------------------------------------------------------- decisions

def _capability():
    """(major, minor) of GPU 0 as vLLM's platform reports it; None without an NVIDIA GPU."""
    try:
        from vllm.platforms import current_platform
        for probe in ("is_rocm", "is_xpu"):
            check = getattr(current_platform, probe, None)
            if check is not None and check():
                return None
        cap = current_platform.get_device_capability()
        if cap is None:
            return None
        return int(cap[0]), int(cap[1])
    except Exception:
        return None


def is_sm12x():
    cap = _capability()
    return cap is not None and cap[0] == 12


def _route_to_sm120():
    """True when this call should use the SM120 kernel: enabled, SM12x, kernel loaded."""
    if not enabled():
        return False
    try:
        from vllm import platforms
        platform = platforms.current_platform
    except Exception:
        platform = None
    if platform is not None and _route_cache["platform"] is platform:
        return _route_cache["value"]
    value = is_sm12x() and _load_kernel() is not None
    if platform is not None:
        _route_cache.update(platform=platform, value=value)
    return value


def _configured_fa_version():
    """The FA version forced through vLLM's config (attention_config.flash_attn_version), if any."""
    try:
        from vllm.config import get_current_vllm_config_or_none
        config = get_current_vllm_config_or_none()
        if config is None:
            return None
        return getattr(getattr(config, "attention_config", None), "flash_attn_version", None)
    except Exception:
        return None


def _batch_invariant():
    try:
        from vllm import envs
        return bool(getattr(envs, "VLLM_BATCH_INVARIANT", False))
    except Exception:
        return False


# --------------------------------------------------------------------------- kernel loading

def _apply_dsl_compat():
    """Names that newer CUTLASS DSL releases moved, which the SM120 kernel still uses.

    Only missing attributes are added; nothing that exists is replaced.
    """
    try:
        from cutlass import cute
    except Exception:
        return
    core = getattr(cute, "core", None)
    if core is not None and not hasattr(core, "ThrMma") and hasattr(cute, "ThrMma"):
        core.ThrMma = cute.ThrMma
    if not hasattr(cute, "make_fragment") and hasattr(cute, "make_fragment_like"):
        def make_fragment(layout_or_shape, dtype=None, **kwargs):
            try:
                from cutlass.cute.typing import ComposedLayout, Layout, Tensor
                if not isinstance(layout_or_shape, (Layout, ComposedLayout, Tensor)):
                    layout_or_shape = cute.make_layout(layout_or_shape)
            except ImportError:
                pass
            return cute.make_fragment_like(layout_or_shape, dtype, **kwargs)
        cute.make_fragment = make_fragment


def _typed_window_resolver(iface):
    """Newer DSLs want Int32 window sizes where the kernel computes plain ints."""
    resolve = getattr(iface, "_resolve_causal_local_window", None)
    if resolve is None or getattr(resolve, _MARK, None):
        return
    try:
        from cutlass import Int32
    except Exception:
        return

    def as_int32(value):
        if isinstance(value, int) and not isinstance(value, bool):
            return Int32(value)
        return value

    def _resolve_causal_local_window(*args, **kwargs):
        result = resolve(*args, **kwargs)
        if isinstance(result, tuple) and len(result) == 4:
            causal, local, left, right = result
            return causal, local, as_int32(left), as_int32(right)
        return result

    setattr(_resolve_causal_local_window, _MARK, "window-resolver")
    iface._resolve_causal_local_window = _resolve_causal_local_window


def _import_kernel_package(package_dir):
    import importlib
    import importlib.util
    init = os.path.join(package_dir, "__init__.py")
    if not os.path.isfile(init):
        raise ImportError("no kernel package at %s (missing __init__.py)" % package_dir)
    if KERNEL_MODULE in sys.modules:
        module = sys.modules[KERNEL_MODULE]
    else:
        spec = importlib.util.spec_from_file_location(KERNEL_MODULE, init, submodule_search_locations=[package_dir])
        module = importlib.util.module_from_spec(spec)
        sys.modules[KERNEL_MODULE] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(KERNEL_MODULE, None)
            raise
    iface = getattr(module, "interface", None)
    if iface is None:
        iface = importlib.import_module(KERNEL_MODULE + ".interface")
    return iface


def _load_kernel():
    """Load the SM120 kernel from the local directory once; None (after one warning) if it fails."""
    with _lock:
        if _state["kernel_tried"]:
            return _kernel["fwd"]
        _state["kernel_tried"] = True
        package_dir = _state["package_dir"]
        try:
            if not package_dir:
                raise ImportError("no kernel directory configured")
            _apply_dsl_compat()
            iface = _import_kernel_package(package_dir)
            fwd = getattr(iface, "_flash_attn_fwd")
            _typed_window_resolver(iface)
            # vLLM's FA4 branch imports its own cute.interface at call time; if that cannot
            # import here, FA4 would crash at the first forward, so it is part of "loadable".
            import importlib
            importlib.import_module(CUTE_IFACE)
            params, var_kw = _parameters(fwd)
            _kernel.update(fwd=fwd, params=params, var_kw=var_kw)
        except Exception as exc:
            _state["kernel_error"] = "%s: %s" % (type(exc).__name__, exc)
            _warn_once("kernel", "the FA4 SM120 kernel could not be loaded from %s (%s); vLLM keeps its own "
                       "attention choice (FA2 on SM12x)" % (package_dir, _state["kernel_error"]))
        return _kernel["fwd"]


def _parameters(func):
    import inspect
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return None, True
    params = {}
    var_kw = False
    for param in sig.parameters.values():
        if param.kind is inspect.Parameter.VAR_KEYWORD:
            var_kw = True
        elif param.kind is not inspect.Parameter.VAR_POSITIONAL:
            params[param.name] = param.default
    return params, var_kw


# --------------------------------------------------------------------------- the three patches

def _mark(wrapper, original, what):
    wrapper.__wrapped__ = original
    wrapper.__doc__ = getattr(original, "__doc__", None)
    setattr(wrapper, _MARK, what)
    return wrapper


def _patch_fa_iface(mod):
    original = mod._is_fa4_supported

    def _is_fa4_supported(*args, **kwargs):
        if getattr(mod, "FA4_AVAILABLE", False) and _route_to_sm120():
            return True, None
        return original(*args, **kwargs)

    mod._is_fa4_supported = _mark(_is_fa4_supported, original, "is_fa4_supported")
    return mod._is_fa4_supported


def _bind(sig, args, kwargs):
    """Arguments by name (defaults applied), or None when they do not fit the signature."""
    if sig is None:
        return None
    try:
        bound = sig.bind(*args, **kwargs)
    except TypeError:
        return None
    bound.apply_defaults()
    return bound.arguments


def _patch_fa_utils(mod):
    import inspect
    original = mod.get_flash_attn_version
    try:
        sig = inspect.signature(original)
    except (TypeError, ValueError):
        sig = None

    def get_flash_attn_version(*args, **kwargs):
        # Every argument goes through unchanged: whatever the installed signature is.
        if not _route_to_sm120():
            return original(*args, **kwargs)
        arguments = _bind(sig, args, kwargs)
        if arguments is None:
            return original(*args, **kwargs)  # vLLM's own TypeError, if any
        head_sizes = [arguments.get("head_size"), arguments.get("head_size_v")]
        if arguments.get("requires_alibi") or any(h is not None and h > MAX_HEAD_DIM for h in head_sizes):
            return 2
        if _configured_fa_version() is not None or _batch_invariant():
            return original(*args, **kwargs)
        return 4

    mod.get_flash_attn_version = _mark(get_flash_attn_version, original, "get_flash_attn_version")
    return mod.get_flash_attn_version


def _return_arity(func):
    """Length of the tuples func returns (4 in vLLM 0.24-0.33), or None when not uniform."""
    import ast
    import inspect
    import textwrap
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(func)))
    except Exception:
        return None
    if not tree.body or not isinstance(tree.body[0], (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None
    lengths = set()
    pending = list(tree.body[0].body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue  # returns of nested functions are not this function's
        if isinstance(node, ast.Return) and node.value is not None:
            if isinstance(node.value, ast.Constant) and node.value.value is None:
                continue  # "return None" (e.g. compile-only) says nothing about the tuple shape
            if not isinstance(node.value, ast.Tuple):
                return None
            lengths.add(len(node.value.elts))
        pending.extend(ast.iter_child_nodes(node))
    return lengths.pop() if len(lengths) == 1 else None


def _trivial(value, default):
    """True for an argument value that asks for nothing (None, False, or the plain default)."""
    if value is None or value is False:
        return True
    if isinstance(value, (bool, int, float, str, tuple)) and isinstance(default, (bool, int, float, str, tuple)):
        return value == default
    return False


def _fit(result, arity):
    if arity is None:
        return result
    if not isinstance(result, tuple):
        result = (result,)
    if len(result) < arity:
        return result + (None,) * (arity - len(result))
    return result[:arity]


def _patch_cute_iface(mod):
    import inspect
    original = mod._flash_attn_fwd
    # vLLM 0.24-0.33 unpack four values (out, lse, p, row_max); the kernel returns (out, lse).
    arity = _return_arity(original) or DEFAULT_ARITY
    try:
        sig = inspect.signature(original)
    except (TypeError, ValueError):
        sig = None

    def _dispatch(*args, **kwargs):
        if not _route_to_sm120():
            return original(*args, **kwargs)
        if sig is None:
            return original(*args, **kwargs)
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError:
            return original(*args, **kwargs)
        passed = {}
        for name, value in bound.arguments.items():
            if sig.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                passed.update(value)
            else:
                passed[name] = value
        if not {"q", "k", "v"} <= set(passed):
            return original(*args, **kwargs)
        return _call_sm120(original, sig, arity, passed, args, kwargs)

    mod._flash_attn_fwd = _mark(_dispatch, original, "flash_attn_fwd")
    return mod._flash_attn_fwd


def _call_sm120(original, sig, arity, passed, args, kwargs):
    fwd, accepted, var_kw = _kernel["fwd"], _kernel["params"] or {}, _kernel["var_kw"]
    q, k, v = passed.pop("q"), passed.pop("k"), passed.pop("v")
    call = {}
    dropped = []
    unsupported = []
    out = passed.get("out")
    copy_out = False
    for name, value in passed.items():
        if name == "num_splits" and (value is None or value < 1):
            value = 1  # vLLM's 0 means "let the kernel choose"; the SM120 kernel wants a count
        if var_kw or name in accepted:
            call[name] = value
            continue
        default = sig.parameters[name].default if name in sig.parameters else None
        if name == "num_splits" and value == 1:
            dropped.append(name)
        elif name == "out" and out is not None:
            copy_out = True
        elif name == "compile_only" and value:
            return None  # ahead-of-time compile request the SM120 kernel does not offer; it JITs on first use
        elif _trivial(value, default):
            dropped.append(name)
        else:
            unsupported.append(name)
    if unsupported:
        _warn_once("unsupported:" + ",".join(sorted(unsupported)),
                   "the SM120 kernel has no parameter(s) %s; such calls go to vLLM's own FA4 code"
                   % ", ".join(sorted(unsupported)))
        return original(*args, **kwargs)
    result = fwd(q, k, v, **call)
    if copy_out:
        first = result[0] if isinstance(result, tuple) else result
        out.copy_(first)
        result = (out,) + tuple(result[1:]) if isinstance(result, tuple) else out
    return _fit(result, arity)


_PATCHERS = {
    FA_IFACE: _patch_fa_iface,
    CUTE_IFACE: _patch_cute_iface,
    FA_UTILS: _patch_fa_utils,
}
_ATTRIBUTE = {FA_IFACE: "_is_fa4_supported", CUTE_IFACE: "_flash_attn_fwd", FA_UTILS: "get_flash_attn_version"}


def _patch_module(name, module):
    try:
        if getattr(getattr(module, _ATTRIBUTE[name], None), _MARK, None):
            return  # already ours (a second install() call)
        wrapper = _PATCHERS[name](module)
        _state["patched"][name] = "%s.%s" % (wrapper.__module__, wrapper.__qualname__)
    except Exception as exc:
        _note_error("patching %s.%s" % (name, _ATTRIBUTE.get(name)), exc)


# --------------------------------------------------------------------------- import hook

class _PatchingLoader(object):
    """Runs the real loader, then patches the module it executed."""

    def __init__(self, real, name):
        self._real = real
        self._name = name

    def create_module(self, spec):
        create = getattr(self._real, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module):
        self._real.exec_module(module)
        _patch_module(self._name, module)

    def __getattr__(self, attr):
        # get_source, get_filename, get_resource_reader, ... come from the real loader.
        return getattr(self._real, attr)


class _PatchingFinder(object):
    """Finds the three vLLM modules through the other finders and wraps their loaders."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _PATCHERS:
            return None
        try:
            for finder in sys.meta_path:
                if finder is self or isinstance(finder, _PatchingFinder):
                    continue
                find = getattr(finder, "find_spec", None)
                if find is None:
                    continue
                spec = find(fullname, path, target)
                if spec is None:
                    continue
                if spec.loader is not None and not isinstance(spec.loader, _PatchingLoader):
                    spec.loader = _PatchingLoader(spec.loader, fullname)
                return spec
        except Exception as exc:
            _note_error("finding %s" % fullname, exc)
        return None


def install(kernel_dir=None, package_subdir="build/torch-cuda", revision=None, repo=None):
    """Install the import hook. Called from the .pth file; never raises."""
    try:
        _state["enabled"] = enabled()
        if not _state["enabled"]:
            return False
        package_dir = os.environ.get(ENV_PACKAGE_DIR) or (
            os.path.join(kernel_dir, package_subdir) if kernel_dir else None)
        _state.update(package_dir=package_dir, revision=revision, repo=repo)
        if not any(isinstance(f, _PatchingFinder) for f in sys.meta_path):
            sys.meta_path.insert(0, _PatchingFinder())
        _state["installed"] = True
        for name in _PATCHERS:
            module = sys.modules.get(name)
            if module is not None:
                _patch_module(name, module)
        return True
    except Exception as exc:
        _note_error("install", exc)
        return False
