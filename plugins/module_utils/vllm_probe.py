# -*- coding: utf-8 -*-
# Copyright: dgxspark.vllm contributors
# Apache License 2.0 (see LICENSE)
"""What vllm_verify runs inside the venv's Python (PROBE) and how it judges the report.

PROBE is run as ``<venv>/bin/python -c PROBE '<json options>'``. It prints one line
``DGXSPARK_VLLM_PROBE=<json>`` (vLLM logs to stdout, so the marker finds the line).
The judging functions are plain functions with no Ansible imports, unit tested directly.
"""

from __future__ import annotations

import json

MARKER = "DGXSPARK_VLLM_PROBE="
DEFAULT_FWD_QUALNAME = "_patch_cute_iface.<locals>._dispatch"
SHIM_MODULE = "dgxspark_fa4_sm120_shim"
SHIM_FINDER = SHIM_MODULE + "._PatchingFinder"
# The attribute this collection's shim sets on each function it installs.
SHIM_MARK = "__dgxspark_fa4_sm120_shim__"

# Values given to get_flash_attn_version's parameters when the probe calls it with every
# parameter of the installed signature. Parameters not listed get their declared default.
CALL_VALUES = {
    "requires_alibi": False,
    "has_sinks": False,
    "requires_local_attention": False,  # vLLM 0.27.x
    "requires_softcap": False,
    "kv_cache_block_size": 16,
    "supports_fa4_hd256": False,
}

PROBE = r'''
import ast, json, os, sys, types, importlib, importlib.util, inspect, sysconfig, traceback

MARKER = "DGXSPARK_VLLM_PROBE="
OPTS = json.loads(sys.argv[1])
CALL_VALUES = OPTS["call_values"]
SHIM_MODULE = OPTS["shim_module"]
SHIM_MARK = OPTS["shim_mark"]
R = {"python": sys.executable, "site_packages": sysconfig.get_paths()["purelib"], "stand_ins": [], "errors": {},
     "vllm_own_from": {}}


def err(key, exc):
    R["errors"][key] = "%s: %s" % (type(exc).__name__, exc)


def qualname(obj):
    if obj is None:
        return None
    return getattr(obj, "__qualname__", None) or repr(obj)


def defined_in(obj):
    """'vllm' when obj is vLLM's own function, else the file or module that defined it."""
    code = getattr(obj, "__code__", None)
    path = getattr(code, "co_filename", "") if code is not None else ""
    vllm_dir = os.path.dirname(sys.modules["vllm"].__file__) if "vllm" in sys.modules else None
    if vllm_dir and os.path.realpath(path).startswith(os.path.realpath(vllm_dir) + os.sep):
        return "vllm"
    return path or getattr(obj, "__module__", None)


def innermost(func):
    seen = 0
    while hasattr(func, "__wrapped__") and seen < 20:
        func = func.__wrapped__
        seen += 1
    return func


def vllm_own(module, attr):
    """vLLM's own function: from a fresh copy of its module, run from vLLM's file under another name, which no
    import hook patches; whatever a shim did to the loaded module (even without __wrapped__) does not reach it."""
    try:
        spec = importlib.util.spec_from_file_location("_dgxspark_probe_copy_" + attr, module.__file__)
        copy = importlib.util.module_from_spec(spec)
        copy.__package__ = module.__package__
        spec.loader.exec_module(copy)
        R["vllm_own_from"].setdefault(attr, "fresh copy of %s" % module.__file__)
        return getattr(copy, attr)
    except Exception as exc:
        R["vllm_own_from"][attr] = "__wrapped__ (a fresh copy failed: %s: %s)" % (type(exc).__name__, exc)
        return innermost(getattr(module, attr))


def by_this_shim(obj):
    """True when obj was installed by this collection's shim: its mark, and its code in the shim's file."""
    code = getattr(obj, "__code__", None)
    if shim is None or code is None or not getattr(obj, SHIM_MARK, None):
        return False
    try:
        return os.path.realpath(code.co_filename) == os.path.realpath(shim.__file__)
    except Exception:
        return False


# ---- the hook, before anything of vLLM is imported
shim = sys.modules.get(SHIM_MODULE)
R["shim_loaded"] = shim is not None
R["shim_status"] = None
if shim is not None:
    try:
        R["shim_file"] = shim.__file__
    except Exception:
        pass
std = ("_frozen_importlib", "_frozen_importlib_external", "importlib", "zipimport")
R["meta_path_finders"] = ["%s.%s" % (type(f).__module__, type(f).__qualname__) for f in sys.meta_path
                          if not (type(f).__module__ or "").startswith(std) and type(f).__name__ not in ("BuiltinImporter", "FrozenImporter", "PathFinder")]
R["fa4_env"] = {k: v for k, v in os.environ.items() if k.startswith("FA4_SM120")}
sp = R["site_packages"]
R["pth_files"] = sorted(n for n in os.listdir(sp) if n.endswith(".pth")) if os.path.isdir(sp) else []

try:
    import vllm
    R["vllm_version"] = getattr(vllm, "__version__", None)
except Exception as exc:
    err("vllm", exc)
    print(MARKER + json.dumps(R, default=repr))
    sys.exit(0)
try:
    from importlib import metadata
    R["vllm_version"] = metadata.version("vllm")
except Exception:
    pass
try:
    import torch
    R["torch_version"] = torch.__version__
except Exception as exc:
    err("torch", exc)

# ---- capability (real, or assumed as a documented test aid)
try:
    import vllm.platforms as platforms
    real = platforms.current_platform
    cap = real.get_device_capability()
    R["real_capability"] = None if cap is None else "%d.%d" % (cap[0], cap[1])
    R["platform"] = type(real).__name__
    if OPTS.get("assume_capability"):
        from vllm.platforms.interface import DeviceCapability
        major, minor = (int(x) for x in OPTS["assume_capability"].split("."))

        def _assumed(cls, device_id=0):
            return DeviceCapability(major, minor)

        fake = type("AssumedCapabilityPlatform", (type(real),), {"get_device_capability": classmethod(_assumed)})
        platforms._current_platform = fake()
        R["stand_ins"].append("vllm.platforms.current_platform: %s reporting capability %s (assume_capability, a test aid)"
                              % (type(real).__name__, OPTS["assume_capability"]))
        R["capability"] = OPTS["assume_capability"]
    else:
        R["capability"] = R["real_capability"]
except Exception as exc:
    err("platform", exc)
    R["capability"] = None

# ---- the FA2 extension: the real one, or a stand-in only where it cannot load for lack of CUDA
fa2_name = "vllm.vllm_flash_attn._vllm_fa2_C"
fa2_dir = os.path.join(os.path.dirname(vllm.__file__), "vllm_flash_attn")
fa2_files = sorted(n for n in os.listdir(fa2_dir) if n.startswith("_vllm_fa2_C") and n.endswith(".so")) if os.path.isdir(fa2_dir) else []
R["fa2_library_path"] = os.path.join(fa2_dir, fa2_files[0]) if fa2_files else None
if R["fa2_library_path"] and fa2_name not in sys.modules:
    try:
        spec = importlib.util.spec_from_file_location(fa2_name, R["fa2_library_path"])
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[fa2_name] = module
        R["fa2_extension"] = "loaded"
    except ImportError as exc:
        text = str(exc)
        if any(lib in text for lib in ("libcuda.so", "libcudart.so", "libtorch_cuda.so", "libc10_cuda.so")):
            sys.modules[fa2_name] = types.ModuleType(fa2_name)
            R["fa2_extension"] = "stand-in"
            R["stand_ins"].append("%s: empty module, because the real library cannot load on this host (%s)" % (fa2_name, text))
        else:
            R["fa2_extension"] = "failed"
            err("fa2_extension", exc)

# ---- vllm.config: real; a stand-in only together with assume_capability when it cannot import
if OPTS.get("assume_capability"):
    try:
        import vllm.config  # noqa: F401
    except ImportError as exc:
        stub = types.ModuleType("vllm.config")
        stub.get_current_vllm_config_or_none = lambda: None
        sys.modules["vllm.config"] = stub
        R["stand_ins"].append("vllm.config: get_current_vllm_config_or_none() -> None, because vllm.config cannot import "
                              "here (%s)" % exc)

# ---- flash_attn_interface
own_is_fa4_supported = None
try:
    fai = importlib.import_module("vllm.vllm_flash_attn.flash_attn_interface")
    R["fa4_available"] = bool(getattr(fai, "FA4_AVAILABLE", False))
    R["fa4_unavailable_reason"] = getattr(fai, "FA4_UNAVAILABLE_REASON", None)
    f = fai._is_fa4_supported
    R["is_fa4_supported_qualname"] = qualname(f)
    R["is_fa4_supported_defined_in"] = defined_in(f)
    R["is_fa4_supported_by_shim"] = by_this_shim(f)
    R["is_fa4_supported"] = list(f())
    own_is_fa4_supported = vllm_own(fai, "_is_fa4_supported")
    R["is_fa4_supported_vllm"] = list(own_is_fa4_supported())
except Exception as exc:
    err("flash_attn_interface", exc)

# ---- fa_utils.get_flash_attn_version, called with every parameter of the installed signature
try:
    fa_utils = importlib.import_module("vllm.v1.attention.backends.fa_utils")
    f = fa_utils.get_flash_attn_version
    R["fa_version_qualname"] = qualname(f)
    R["fa_version_defined_in"] = defined_in(f)
    R["fa_version_by_shim"] = by_this_shim(f)
    tree = ast.parse(open(fa_utils.__file__).read())
    node = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "get_flash_attn_version"][0]
    names = [a.arg for a in node.args.args] + [a.arg for a in node.args.kwonlyargs]
    defaults = dict(zip([a.arg for a in node.args.args][len(node.args.args) - len(node.args.defaults):], node.args.defaults))
    defaults.update({a.arg: d for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults) if d is not None})
    R["installed_signature"] = names
    R["wrapper_signature"] = str(inspect.signature(f, follow_wrapped=False))

    def every_parameter(head_size):
        kwargs = {}
        for name in names:
            if name in ("head_size", "head_size_v"):
                kwargs[name] = head_size
            elif name in CALL_VALUES:
                kwargs[name] = CALL_VALUES[name]
            elif name in defaults:
                kwargs[name] = ast.literal_eval(defaults[name])
        return kwargs

    def call(func, kwargs):
        try:
            return {"value": func(**kwargs)}
        except TypeError as exc:
            return {"error": "TypeError: %s" % exc}
        except Exception as exc:
            return {"error": "%s: %s" % (type(exc).__name__, exc)}

    own_version = vllm_own(fa_utils, "get_flash_attn_version")

    def vllm_alone(kwargs):
        """What vLLM's own function answers with vLLM's own _is_fa4_supported in place, as without any shim."""
        iface = sys.modules.get("vllm.vllm_flash_attn.flash_attn_interface")
        saved = getattr(iface, "_is_fa4_supported", None)
        if saved is not None and own_is_fa4_supported is not None:
            iface._is_fa4_supported = own_is_fa4_supported
        try:
            return call(own_version, kwargs)
        finally:
            if saved is not None:
                iface._is_fa4_supported = saved

    R["fa_version_calls"] = {}
    for hs in OPTS["head_sizes"]:
        kwargs = every_parameter(hs)
        R["fa_version_calls"][str(hs)] = {"kwargs": kwargs, "shim": call(f, kwargs), "vllm": vllm_alone(kwargs)}
    # the keyword sets that the installed vLLM's own callers pass
    root = os.path.dirname(vllm.__file__)
    # One call per keyword set; each call without a head size (a whole-model question) is kept on its own,
    # with the function or class body it sits in.
    shapes = {}

    def scan(node, scope, rel):
        for child in ast.iter_child_nodes(node):
            inner = scope + [child.name] if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) else scope
            if isinstance(child, ast.Call) and not child.args:
                fn_node = child.func
                cname = fn_node.id if isinstance(fn_node, ast.Name) else getattr(fn_node, "attr", None)
                if cname == "get_flash_attn_version":
                    keywords = sorted(k.arg for k in child.keywords if k.arg)
                    where = "%s:%d" % (rel, child.lineno)
                    with_head_size = any(k in ("head_size", "head_size_v") for k in keywords)
                    key = tuple(keywords) if with_head_size else (tuple(keywords), where)
                    shapes.setdefault(key, {"where": where, "keywords": keywords,
                                            "in": "%s:%s" % (rel, ".".join(scope) or "<module>")})
            scan(child, inner, rel)

    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in ("third_party", "__pycache__"))
        for fn in sorted(filenames):
            if not fn.endswith(".py"):
                continue
            path = os.path.join(dirpath, fn)
            try:
                text = open(path, encoding="utf-8", errors="replace").read()
            except OSError:
                continue
            if "get_flash_attn_version(" not in text:
                continue
            scan(ast.parse(text), [], os.path.relpath(path, root))
    R["caller_calls"] = []
    for site in sorted(shapes.values(), key=lambda item: (item["keywords"], item["where"])):
        kwargs = {k: v for k, v in every_parameter(128).items() if k in site["keywords"]}
        R["caller_calls"].append(dict(site, result=call(f, kwargs), vllm=vllm_alone(kwargs)))
except Exception as exc:
    err("fa_utils", exc)

# ---- cute.interface._flash_attn_fwd
try:
    cute = importlib.import_module("vllm.vllm_flash_attn.cute.interface")
    f = cute._flash_attn_fwd
    R["flash_attn_fwd_qualname"] = qualname(f)
    R["flash_attn_fwd_defined_in"] = defined_in(f)
    R["flash_attn_fwd_by_shim"] = by_this_shim(f)
except Exception as exc:
    err("cute_interface", exc)

if shim is not None:
    try:
        R["shim_status"] = shim.status()
    except Exception as exc:
        err("shim_status", exc)
print(MARKER + json.dumps(R, default=repr))
'''


def probe_args(assume_capability=None, head_sizes=(128, 256, None)):
    return json.dumps({"assume_capability": assume_capability, "head_sizes": list(head_sizes), "call_values": CALL_VALUES,
                       "shim_module": SHIM_MODULE, "shim_mark": SHIM_MARK})


def parse_output(stdout):
    """The probe's JSON report from its stdout, or None."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])
    return None


def _mode(capability):
    if not capability:
        return "no-gpu"
    return "sm12x" if capability.split(".")[0] == "12" else "other-gpu"


def _is_fa4_hook(finder):
    name = finder.lower()
    return finder.endswith("Finder") and ("fa4" in name or "sm120" in name)


def _value(result):
    result = result or {}
    return result.get("value") if "error" not in result else None


def summarize(raw):
    """The report the module returns, from the probe's raw output."""
    calls = raw.get("fa_version_calls") or {}
    status = raw.get("shim_status") or {}

    def value(hs, whose="shim"):
        return _value((calls.get(str(hs)) or {}).get(whose))

    supported = raw.get("is_fa4_supported")
    supported_vllm = raw.get("is_fa4_supported_vllm")
    finders = raw.get("meta_path_finders") or []
    by_shim = {"_is_fa4_supported": raw.get("is_fa4_supported_by_shim"),
               "get_flash_attn_version": raw.get("fa_version_by_shim"),
               "_flash_attn_fwd": raw.get("flash_attn_fwd_by_shim")}
    loaded = bool(raw.get("shim_loaded"))
    ours = loaded and bool(status.get("installed")) and bool(status.get("finder_installed")) and SHIM_FINDER in finders
    return {
        "capability": raw.get("capability"),
        "real_capability": raw.get("real_capability"),
        "mode": _mode(raw.get("capability")),
        "vllm_version": raw.get("vllm_version"),
        "torch_version": raw.get("torch_version"),
        "site_packages": raw.get("site_packages"),
        # this collection's import hook; any other FA4 hook (the seed recipe's, say) is listed apart
        "hook_installed": SHIM_FINDER in finders or bool(loaded and status.get("finder_installed")),
        "other_fa4_hooks": [f for f in finders if _is_fa4_hook(f) and f != SHIM_FINDER],
        "shim": {"loaded": loaded, "ours": ours, "file": raw.get("shim_file"), "enabled": status.get("enabled"),
                 "version": status.get("version"), "kernel_dir": status.get("package_dir"),
                 "kernel_revision": status.get("revision"),
                 # only this collection's shim reports on its kernel; None when that shim is not the one loaded
                 "kernel_loaded": status.get("kernel_loaded") if loaded else None,
                 "kernel_error": status.get("kernel_error"),
                 "errors": status.get("errors") or [], "warnings": status.get("warnings") or []},
        "patched_by_shim": {name: bool(flag) for name, flag in by_shim.items() if flag is not None},
        "meta_path_finders": finders,
        "pth_files": raw.get("pth_files") or [],
        "fa4_available": raw.get("fa4_available"),
        "is_fa4_supported": tuple(supported) if supported is not None else None,
        "is_fa4_supported_vllm": tuple(supported_vllm) if supported_vllm is not None else None,
        "fa_version_hd128": value(128),
        "fa_version_hd256": value(256),
        # get_flash_attn_version without a head size (a whole-model question): the shim's and vLLM's own answer
        "fa_version_no_head_size": value(None),
        "fa_version_no_head_size_vllm": value(None, "vllm"),
        "installed_signature": raw.get("installed_signature"),
        "flash_attn_fwd_qualname": raw.get("flash_attn_fwd_qualname"),
        "is_fa4_supported_qualname": raw.get("is_fa4_supported_qualname"),
        "fa_version_qualname": raw.get("fa_version_qualname"),
        "fa2_extension": raw.get("fa2_extension"),
        "fa2_library_path": raw.get("fa2_library_path"),
        "stand_ins": raw.get("stand_ins") or [],
        # where "vLLM's own" answers came from: a fresh copy of vLLM's module, or (if that failed) __wrapped__
        "vllm_own_from": raw.get("vllm_own_from") or {},
        "errors": raw.get("errors") or {},
    }


_IMPORTED_FROM = {"_is_fa4_supported": "flash_attn_interface", "get_flash_attn_version": "fa_utils",
                  "_flash_attn_fwd": "cute_interface"}
_HEAD_SIZE_KEYWORDS = ("head_size", "head_size_v")


def _check(checks, name, expected, seen, ok=None):
    checks.append({"check": name, "expected": expected, "seen": seen, "ok": (seen == expected) if ok is None else ok})


def judge(raw, report, expect_shim=True, expect_fwd_qualname=DEFAULT_FWD_QUALNAME, expect_fa2_native=False):
    """Compare the report with what should hold; return the list of checks (each with ok)."""
    checks = []
    errors = raw.get("errors") or {}
    for key in ("vllm", "torch", "platform", "fa2_extension", "flash_attn_interface", "fa_utils", "cute_interface"):
        if key in errors:
            _check(checks, "import %s" % key, "no error", errors[key], ok=False)
    defined = {"_is_fa4_supported": raw.get("is_fa4_supported_defined_in"),
               "get_flash_attn_version": raw.get("fa_version_defined_in"),
               "_flash_attn_fwd": raw.get("flash_attn_fwd_defined_in")}
    if not expect_shim:
        _check(checks, "hook installed", False, report["hook_installed"])
        _check(checks, "no other FA4 import hook", [], report["other_fa4_hooks"])
        for name, where in defined.items():
            if where is not None:
                _check(checks, "%s is vLLM's own" % name, "vllm", where)
        return checks

    # Whose shim: this collection's module, its finder, and each of the three names installed by it.
    _check(checks, "hook installed", True, report["hook_installed"])
    _check(checks, "the loaded shim is dgxspark.vllm's (%s)" % SHIM_MODULE, True, report["shim"]["ours"])
    _check(checks, "no other FA4 import hook", [], report["other_fa4_hooks"])
    for name, where in defined.items():
        if _IMPORTED_FROM[name] not in errors:
            _check(checks, "%s patched by %s" % (name, SHIM_MODULE), "%s.py" % SHIM_MODULE,
                   where if where != "vllm" else "vLLM's own function",
                   ok=bool(report["patched_by_shim"].get(name)))
    if "cute_interface" not in errors:
        _check(checks, "_flash_attn_fwd qualname", expect_fwd_qualname, report["flash_attn_fwd_qualname"])
    # The signature pass-through: every parameter of the installed signature, and every caller's keywords.
    for hs, call in sorted((raw.get("fa_version_calls") or {}).items()):
        shim_result, vllm_result = call.get("shim") or {}, call.get("vllm") or {}
        _check(checks, "get_flash_attn_version(%s) accepted" % _kwargs_text(call.get("kwargs")),
               "no error", shim_result.get("error", "no error"))
        if report["mode"] != "sm12x" and "error" not in shim_result and "error" not in vllm_result:
            _check(checks, "get_flash_attn_version(head_size=%s) unchanged off SM12x" % hs,
                   vllm_result.get("value"), shim_result.get("value"))
    for call in raw.get("caller_calls") or []:
        result = call.get("result") or {}
        where = "get_flash_attn_version as called at %s (%s)" % (call["where"], ", ".join(call["keywords"]) or "no arguments")
        if call.get("in") and not any(k in call["keywords"] for k in _HEAD_SIZE_KEYWORDS):
            where += " in %s" % call["in"].split(":", 1)[-1]
        _check(checks, where, "no error", result.get("error", "no error"))
        # A call without a head size asks about the whole model: it must get vLLM's own answer, on every GPU.
        if "error" not in result and not any(k in call["keywords"] for k in _HEAD_SIZE_KEYWORDS) and "vllm" in call:
            _check(checks, "%s gives vLLM's own answer" % where, _value(call["vllm"]), _value(result))
    if report["mode"] == "sm12x":
        _check(checks, "FA4_AVAILABLE", True, report["fa4_available"])
        _check(checks, "_is_fa4_supported() outside a layer decision is vLLM's own", report["is_fa4_supported_vllm"],
               report["is_fa4_supported"])
        _check(checks, "get_flash_attn_version for head size 128", 4, report["fa_version_hd128"])
        _check(checks, "get_flash_attn_version for head size 256", 2, report["fa_version_hd256"])
        _check(checks, "get_flash_attn_version without a head size is vLLM's own", report["fa_version_no_head_size_vllm"],
               report["fa_version_no_head_size"])
        # Only this collection's shim can say that its kernel loaded; another shim reads as None.
        _check(checks, "SM120 kernel loaded", True, report["shim"]["kernel_loaded"] if report["shim"]["ours"] else None)
    elif report["mode"] == "other-gpu":
        _check(checks, "_is_fa4_supported() unchanged off SM12x", report["is_fa4_supported_vllm"], report["is_fa4_supported"])
    lib = report.get("fa2_library") or {}
    if expect_fa2_native:
        _check(checks, "FA2 library has native sm_12x code", True, lib.get("native"))
    return checks


def _kwargs_text(kwargs):
    if not kwargs:
        return ""
    return ", ".join("%s=%r" % item for item in kwargs.items())


def problems(checks):
    return ["%s: expected %s, got %s" % (c["check"], _show(c["expected"]), _show(c["seen"])) for c in checks if not c["ok"]]


def _show(value):
    if isinstance(value, tuple):
        return "(%s)" % ", ".join(repr(v) for v in value)
    return repr(value) if isinstance(value, str) else str(value)


def fa2_native(sass_archs, capability):
    """True when the FA2 library holds SASS that runs on this GPU (sm_12x; the capability's own when known)."""
    archs = {a.rstrip("af") for a in sass_archs or []}
    if capability:
        return "sm_%s" % capability.replace(".", "") in archs
    return any(a.startswith("sm_12") for a in archs)
