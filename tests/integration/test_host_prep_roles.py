"""Integration tests of the host preparation roles (uv, vllm_venv, cuda_env, page_cache) with ansible-playbook
against localhost. Everything they write goes to temporary directories; nothing on this machine changes.

The molecule scenario host_prep runs the roles for real in a container (PyPI, the real vLLM wheel, real drops).
These tests cover what a container cannot show cheaply: every argument spec rejection, the requirement
comparison table, cuda_env with GPUs this machine does not have, and uv from a mirror that lies.
Stand-ins, named where they are used: nvidia-smi (a script printing the line a GB10 or an RTX 5090 prints),
ptxas (a script in a fake CUDA home) and the uv binaries inside the served wheels (scripts printing a version).
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import json
import os
import platform
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
ARCH = platform.machine()


def run_playbook(tmp_path: Path, plays, *args, env=None, name="play.yml"):
    """Write plays (a list of dicts; JSON is YAML) and run them against localhost with the json callback.

    Returns (rc, run): run["stats"] is the recap of localhost, run["messages"] the msg of every task result
    in order (debug output and failures), run["ran"] the names of the tasks not skipped, run["text"] all output.
    """
    playbook = tmp_path / name
    playbook.write_text(json.dumps(plays, indent=1))
    environ = {
        "PATH": "%s:/usr/bin:/bin:/usr/sbin:/sbin" % BIN,
        "HOME": str(Path.home()),
        "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / ".ansible-local"),
        "no_proxy": "127.0.0.1,localhost",
        "NO_PROXY": "127.0.0.1,localhost",
    }
    environ.update(env or {})
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
         "-e", "ansible_python_interpreter=%s" % sys.executable, str(playbook), *args],
        cwd=ROOT, capture_output=True, text=True, env=environ, check=False,
    )
    text = proc.stdout + proc.stderr
    try:
        doc = json.loads(proc.stdout[proc.stdout.index("{"):])
    except ValueError:
        pytest.fail("no JSON from ansible-playbook (rc=%d):\n%s" % (proc.returncode, text))
    messages, ran = [], []
    for each_play in doc["plays"]:
        for task in each_play["tasks"]:
            result = task["hosts"].get("localhost", {})
            if not result.get("skipped"):
                ran.append(task["task"]["name"])
            for item in result.get("results", [result]):
                if item.get("msg"):
                    messages.append(str(item["msg"]))
    stats = doc["stats"].get("localhost", {})
    summary = "rc=%d stats=%s\n%s\n%s" % (proc.returncode, stats, "\n".join(messages), proc.stderr[-3000:])
    return proc.returncode, {"stats": stats, "messages": messages, "ran": ran, "text": summary}


def recap(run) -> dict:
    return {k: v for k, v in run["stats"].items() if isinstance(v, int)}


def said(run, fragment) -> bool:
    return any(fragment in message for message in run["messages"])


def play(tasks, **extra):
    return dict({"name": "test", "hosts": "localhost", "gather_facts": False}, tasks=tasks, **extra)


def expect_failure(case_id, tasks):
    """A block that must fail; its rescue prints the failed task and message for the test to check."""
    return {
        "name": "case " + case_id,
        "block": tasks + [{"name": "Not reached", "ansible.builtin.fail": {"msg": "NOT REJECTED " + case_id}}],
        "rescue": [{"name": "Report", "ansible.builtin.debug": {
            "msg": "CASE %s | {{ ansible_failed_task.name }} | {{ ansible_failed_result.msg }}" % case_id}}],
    }


def case_lines(run) -> dict:
    """Map case id -> (failed task name, message) from the rescue debug lines."""
    found = {}
    for message in run["messages"]:
        if message.startswith("CASE "):
            case_id, task, text = (part.strip() for part in message[5:].split(" | ", 2))
            found[case_id] = (task, text)
    return found


# --- argument specs -------------------------------------------------------------------------------------

BAD_ARGUMENTS = [
    ("uv", "uv_state", "installed", "value of uv_state must be one of: present, absent, got: installed"),
    ("uv", "uv_source", "pip", "value of uv_source must be one of: index, url, file, got: pip"),
    ("uv", "uv_http_timeout", "soon", "argument 'uv_http_timeout' is of type str"),
    ("vllm_venv", "vllm_venv_no_deps", "maybe", "argument 'vllm_venv_no_deps' is of type str"),
    ("vllm_venv", "vllm_venv_extra_packages", {"torch": "2.13"}, "argument 'vllm_venv_extra_packages' is of type dict"),
    ("vllm_venv", "vllm_venv_prerelease", "sometimes", "value of vllm_venv_prerelease must be one of"),
    ("vllm_venv", "vllm_venv_uv_environment", ["UV_HTTP_RETRIES"], "argument 'vllm_venv_uv_environment' is of type list"),
    ("cuda_env", "cuda_env_extra", ["FOO"], "argument 'cuda_env_extra' is of type list"),
    ("cuda_env", "cuda_env_state", "gone", "value of cuda_env_state must be one of: present, absent, got: gone"),
    ("page_cache", "page_cache_level", 5, "value of page_cache_level must be one of: 1, 2, 3, got: 5"),
    ("page_cache", "page_cache_min_available_gib", "lots", "argument 'page_cache_min_available_gib' is of type str"),
    ("page_cache", "page_cache_required", "perhaps", "argument 'page_cache_required' is of type str"),
    ("memory_guard", "memory_guard_state", "installed", "value of memory_guard_state must be one of: present, absent, got: installed"),
    ("memory_guard", "memory_guard_memory_min_kib", "512M", "argument 'memory_guard_memory_min_kib' is of type str"),
    ("vllm_server", "vllm_server_oom_score_adjust", "high", "argument 'vllm_server_oom_score_adjust' is of type str"),
]


def test_argument_specs_reject_bad_values_before_any_task(tmp_path):
    tasks = [expect_failure("%d" % i, [{"name": "Include %s" % role, "ansible.builtin.include_role": {
        "name": "dgxspark.vllm." + role}, "vars": {var: value}}])
        for i, (role, var, value, _message) in enumerate(BAD_ARGUMENTS)]
    rc, out = run_playbook(tmp_path, [play(tasks)], "--check")
    assert rc == 0, out["text"]
    found = case_lines(out)
    for i, (role, var, value, expected) in enumerate(BAD_ARGUMENTS):
        task, message = found["%d" % i]
        # The first task of the role, the argument validation, is the one that failed.
        assert task.startswith("Validating arguments against arg spec 'main'"), (role, var, task)
        assert expected in message, (role, var, message)
        assert "NOT REJECTED" not in message
    assert recap(out)["rescued"] == len(BAD_ARGUMENTS)


# --- the requirement comparison of vllm_venv ------------------------------------------------------------

INSTALLED = {"vllm": "0.33.0+cu130", "torch": "2.13.0+cpu", "numpy": None, "triton": "3.6.0rc1",
             "typing-extensions": "4.16.0"}

REQUIREMENTS = [
    # requirement, met by INSTALLED?
    ("vllm", True),
    ("vllm==0.33.0", True),             # a public version ignores the installed local label (+cu130)
    ("vllm==0.33.0+cu130", True),
    ("vllm==0.33.0+cu129", False),
    ("vllm>=0.30,<0.34", True),
    ("vllm>=0.34", False),
    ("vllm!=0.33.0", False),
    ("Vllm[audio] >= 0.33", True),      # name case and extras
    ("typing_extensions>=4", True),     # name normalisation
    ("torch<2.13", False),
    ("numpy", False),                   # not installed
    ("triton>=3.5", True),              # an installed pre-release counts
    ("vllm~=0.33", False),              # only uv decides ~=, so the role asks it
    ("vllm==0.33.*", False),            # wildcards too
    ("vllm @ file:///srv/wheels/vllm-0.33.0-cp38-abi3-manylinux_2_28_x86_64.whl", False),
    ("vllm; python_version >= '3.11'", False),
]


def test_requirement_comparison_decides_what_uv_must_install(tmp_path):
    tasks = [{"name": "Compare", "ansible.builtin.include_role": {"name": "dgxspark.vllm.vllm_venv",
                                                                  "tasks_from": "requirements"},
              "vars": {"__vllm_venv_reqs": [req for req, _met in REQUIREMENTS], "__vllm_venv_installed": INSTALLED}},
             {"name": "Show", "ansible.builtin.debug": {"msg": "UNMET {{ __vllm_venv_unmet | to_json }}"}}]
    rc, out = run_playbook(tmp_path, [play(tasks)])
    assert rc == 0, out["text"]
    line = [m for m in out["messages"] if m.startswith("UNMET ")][-1]
    unmet = json.loads(line[len("UNMET "):])
    assert unmet == [req for req, met in REQUIREMENTS if not met]


# --- cuda_env with stand-in GPUs ------------------------------------------------------------------------

GB10 = "NVIDIA GB10, 12.1, 580.95.05, [N/A], GPU-0b7c0a8e-1111-2222-3333-444455556666"
RTX5090 = "NVIDIA GeForce RTX 5090, 12.0, 580.95.05, 32607, GPU-5090a8e0-1111-2222-3333-444455556666"


@pytest.fixture()
def fake_host(tmp_path):
    """A bin dir for a stand-in nvidia-smi, a fake CUDA home with a stand-in ptxas, and the files' paths."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    cuda = tmp_path / "cuda"
    (cuda / "bin").mkdir(parents=True)
    ptxas = cuda / "bin" / "ptxas"
    ptxas.write_text("#!/bin/sh\necho 'ptxas stand-in'\n")
    ptxas.chmod(0o755)
    (tmp_path / "profile.d").mkdir()  # like /etc/profile.d, which the role expects to exist

    def gpu(line):
        smi = bindir / "nvidia-smi"
        smi.write_text("#!/bin/sh\necho '%s'\n" % line)
        smi.chmod(0o755)

    return {"bin": bindir, "cuda": cuda, "gpu": gpu, "env_file": tmp_path / "etc" / "cuda.env",
            "profile": tmp_path / "profile.d" / "dgxspark-cuda.sh"}


def cuda_env_play(fake_host, **role_vars):
    role = {"role": "dgxspark.vllm.cuda_env", "cuda_env_cuda_home": str(fake_host["cuda"]),
            "cuda_env_file": str(fake_host["env_file"]), "cuda_env_profile_file": str(fake_host["profile"])}
    role.update(role_vars)
    return {"name": "cuda_env", "hosts": "localhost", "gather_facts": False,
            "environment": {"PATH": "%s:/usr/bin:/bin" % fake_host["bin"]}, "roles": [role]}


def env_pairs(path: Path) -> dict:
    return dict(ln.split("=", 1) for ln in path.read_text().splitlines() if ln and not ln.startswith("#"))


def test_cuda_env_on_a_gb10_check_mode_then_real_then_idempotent(tmp_path, fake_host):
    fake_host["gpu"](GB10)
    plays = [cuda_env_play(fake_host)]
    rc, out = run_playbook(tmp_path, plays, "--check")
    assert rc == 0 and recap(out)["changed"] > 0, out["text"]
    assert not fake_host["env_file"].exists() and not fake_host["profile"].exists()

    rc, out = run_playbook(tmp_path, plays)
    assert rc == 0 and recap(out)["changed"] == 3, out["text"]  # the directory and the two files
    cuda = str(fake_host["cuda"])
    assert env_pairs(fake_host["env_file"]) == {
        "TORCH_CUDA_ARCH_LIST": "12.1a", "CUDA_HOME": cuda, "TRITON_PTXAS_PATH": cuda + "/bin/ptxas",
        "PATH": cuda + "/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
    assert fake_host["env_file"].read_text().splitlines()[1] == "# Ansible managed"
    shell = subprocess.run(["sh", "-c", '. "$1"; . "$1"; echo "$TORCH_CUDA_ARCH_LIST|$TRITON_PTXAS_PATH|$PATH"',
                            "sh", str(fake_host["profile"])], env={"PATH": "/usr/bin:/bin"},
                           capture_output=True, text=True, check=True)
    assert shell.stdout.strip() == "12.1a|%s/bin/ptxas|%s/bin:/usr/bin:/bin" % (cuda, cuda)  # sourced twice, once on PATH

    for mode in ([], ["--check"]):
        rc, out = run_playbook(tmp_path, plays, *mode)
        assert rc == 0 and recap(out)["changed"] == 0, out["text"]


def test_cuda_env_derives_the_arch_and_takes_explicit_values(tmp_path, fake_host):
    fake_host["gpu"](RTX5090)
    rc, out = run_playbook(tmp_path, [cuda_env_play(fake_host)])
    assert rc == 0, out["text"]
    assert env_pairs(fake_host["env_file"])["TORCH_CUDA_ARCH_LIST"] == "12.0a"

    plays = [cuda_env_play(fake_host, cuda_env_torch_cuda_arch_list="12.0a;12.1a", cuda_env_extra={"VLLM_LOGGING_LEVEL": "INFO"})]
    rc, out = run_playbook(tmp_path, plays)
    assert rc == 0, out["text"]
    pairs = env_pairs(fake_host["env_file"])
    assert pairs["TORCH_CUDA_ARCH_LIST"] == '"12.0a;12.1a"' or pairs["TORCH_CUDA_ARCH_LIST"] == "12.0a;12.1a"
    assert pairs["VLLM_LOGGING_LEVEL"] == "INFO"


def test_cuda_env_without_a_gpu_or_toolkit(tmp_path, fake_host):
    no_gpu = dict(cuda_env_play(fake_host), environment={"PATH": "/usr/bin:/bin"})
    (fake_host["cuda"] / "bin" / "ptxas").unlink()

    def run_cuda_env(**role_vars):
        return [{"name": "Run", "ansible.builtin.include_role": {"name": "dgxspark.vllm.cuda_env"}, "vars": role_vars}]

    env_file = str(fake_host["env_file"])
    plays = [
        dict(no_gpu, tasks=[expect_failure("required", run_cuda_env(
            cuda_env_cuda_home=str(fake_host["cuda"]), cuda_env_file=env_file))], roles=[]),
        dict(no_gpu, tasks=[expect_failure("toolkit", run_cuda_env(
            cuda_env_cuda_home=str(fake_host["cuda"]), dgxspark_require_gpu=False, cuda_env_file=env_file))], roles=[]),
        dict(no_gpu, tasks=[expect_failure("arch", run_cuda_env(
            cuda_env_torch_cuda_arch_list="sm_121", cuda_env_file=env_file))], roles=[]),
        dict(no_gpu, vars={"dgxspark_require_gpu": False},
             roles=[dict(cuda_env_play(fake_host)["roles"][0], cuda_env_require_toolkit=False)]),
    ]
    rc, out = run_playbook(tmp_path, plays)
    assert rc == 0, out["text"]
    found = case_lines(out)
    assert "localhost: no NVIDIA GPU found (nvidia-smi not found" in found["required"][1]
    assert "set cuda_env_torch_cuda_arch_list" in found["required"][1]
    assert "%s/bin/ptxas not found" % fake_host["cuda"] in found["toolkit"][1]
    assert "cuda_env_require_toolkit=false" in found["toolkit"][1]
    assert "cuda_env_torch_cuda_arch_list='sm_121'" in found["arch"][1]
    assert said(out, "WARNING (dgxspark_require_gpu=false): localhost: no NVIDIA GPU found")
    assert said(out, "TORCH_CUDA_ARCH_LIST set to the fallback 12.1a")
    assert said(out, "TRITON_PTXAS_PATH is not written")
    pairs = env_pairs(fake_host["env_file"])
    assert pairs["TORCH_CUDA_ARCH_LIST"] == "12.1a" and "TRITON_PTXAS_PATH" not in pairs

    rc, out = run_playbook(tmp_path, [cuda_env_play(fake_host, cuda_env_state="absent")])
    assert rc == 0 and recap(out)["changed"] == 1, out["text"]  # one task, a loop over both files
    assert not fake_host["env_file"].exists() and not fake_host["profile"].exists()


# --- uv from a local mirror -----------------------------------------------------------------------------

def stand_in_wheel(path: Path, version: str) -> str:
    """A wheel in uv's layout whose uv and uvx are stand-ins printing the version; returns its sha256."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name in ("uv", "uvx"):
            info = zipfile.ZipInfo("uv-%s.data/scripts/%s" % (version, name))
            info.external_attr = 0o755 << 16
            zf.writestr(info, "#!/bin/sh\necho '%s %s (stand-in)'\n" % (name, version))
    path.write_bytes(buf.getvalue())
    return hashlib.sha256(buf.getvalue()).hexdigest()


WHEEL_TAGS = {"x86_64": "manylinux_2_17_x86_64.manylinux2014_x86_64", "aarch64": "manylinux_2_28_aarch64"}


def wheel_name(version: str, arch: str = ARCH) -> str:
    return "uv-%s-py3-none-%s.whl" % (version, WHEEL_TAGS[arch])


@pytest.fixture()
def mirror(tmp_path):
    """A PEP 503 simple index on 127.0.0.1 with relative links, like a plain directory mirror.

    It lists 9.9.1 and 9.9.2 for x86_64 (manylinux_2_17 tag) and aarch64 (manylinux_2_28 tag, as uv 0.13.8 has),
    plus musllinux-only wheels the role must not pick. 9.9.2 is listed with a digest that is not its own.
    """
    root = tmp_path / "mirror"
    (root / "packages").mkdir(parents=True)
    (root / "simple" / "uv").mkdir(parents=True)
    links = []
    shas = {}
    for version in ("9.9.1", "9.9.2"):
        for arch in WHEEL_TAGS:
            name = wheel_name(version, arch)
            shas[(version, arch)] = stand_in_wheel(root / "packages" / name, version)
            digest = shas[(version, arch)] if version == "9.9.1" else "0" * 64
            links.append('<a href="../../packages/%s#sha256=%s">%s</a><br/>' % (name, digest, name))
            links.append('<a href="../../packages/uv-%s-py3-none-musllinux_1_1_%s.whl#sha256=%s">musl</a><br/>'
                         % (version, arch, "1" * 64))
    (root / "simple" / "uv" / "index.html").write_text("<html><body>%s</body></html>" % "\n".join(links))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield {"url": "http://127.0.0.1:%d/simple" % server.server_address[1], "shas": shas}
    server.shutdown()


def uv_play(tmp_path, **role_vars):
    role = {"role": "dgxspark.vllm.uv", "uv_install_dir": str(tmp_path / "bin"), "uv_cache_dir": str(tmp_path / "cache")}
    role.update(role_vars)
    return [{"name": "uv", "hosts": "localhost", "gather_facts": False, "roles": [role]}]


def uv_version(tmp_path) -> str:
    return subprocess.run([str(tmp_path / "bin" / "uv"), "--version"], capture_output=True, text=True,
                          check=True).stdout.split()[1]


def test_uv_from_a_mirror_then_idempotent_then_a_lying_mirror_then_a_file_then_absent(tmp_path, mirror):
    rc, out = run_playbook(tmp_path, uv_play(tmp_path, uv_version="9.9.1", uv_index_url=mirror["url"]), "--check")
    assert rc == 0 and not (tmp_path / "bin" / "uv").exists(), out["text"]

    rc, out = run_playbook(tmp_path, uv_play(tmp_path, uv_version="9.9.1", uv_index_url=mirror["url"]))
    assert rc == 0, out["text"]
    assert uv_version(tmp_path) == "9.9.1"
    assert (tmp_path / "cache" / wheel_name("9.9.1")).is_file()

    rc, out = run_playbook(tmp_path, uv_play(tmp_path, uv_version="9.9.1", uv_index_url=mirror["url"]))
    assert rc == 0 and recap(out)["changed"] == 0, out["text"]
    assert "Read the uv project page of the index" not in out["ran"]  # nothing fetched: the version matched

    # The mirror lists 9.9.2 with a wrong digest: refused, and the installed uv stays.
    rc, out = run_playbook(tmp_path, uv_play(tmp_path, uv_version="9.9.2", uv_index_url=mirror["url"],
                                             uv_checksum="sha256:" + mirror["shas"][("9.9.2", ARCH)]))
    assert rc == 2, out["text"]
    assert said(out, "the index publishes sha256 '%s', expected '%s' (uv_checksum)" % ("0" * 64, mirror["shas"][("9.9.2", ARCH)]))
    assert said(out, "tampered mirror")
    assert uv_version(tmp_path) == "9.9.1"

    # Without a checksum of its own the role trusts the index's digest, which does not match the file: refused.
    rc, out = run_playbook(tmp_path, uv_play(tmp_path, uv_version="9.9.2", uv_index_url=mirror["url"]))
    assert rc == 2, out["text"]
    assert said(out, "localhost: cannot download http://127.0.0.1") and said(out, "with sha256 %s" % ("0" * 64))
    assert uv_version(tmp_path) == "9.9.1"

    wheel = tmp_path / "uv-9.9.3-py3-none-any.whl"
    sha = stand_in_wheel(wheel, "9.9.3")
    rc, out = run_playbook(tmp_path, uv_play(tmp_path, uv_version="9.9.3", uv_source="file", uv_file=str(wheel),
                                             uv_checksum=sha))
    assert rc == 0, out["text"]
    assert uv_version(tmp_path) == "9.9.3"

    rc, out = run_playbook(tmp_path, uv_play(tmp_path, uv_state="absent"))
    assert rc == 0 and recap(out)["changed"] == 2, out["text"]  # the binaries (one loop) and the cache
    assert not (tmp_path / "bin" / "uv").exists() and not (tmp_path / "bin" / "uvx").exists()
    assert not (tmp_path / "cache").exists()


def test_uv_picks_the_wheel_of_the_hosts_architecture(tmp_path, mirror):
    """The host's architecture fact is set by the play (the files inside the wheels are stand-ins)."""
    def with_arch(arch):
        plays = uv_play(tmp_path, uv_version="9.9.1", uv_index_url=mirror["url"])
        plays[0]["pre_tasks"] = [{"name": "Pretend to be " + arch,
                                  "ansible.builtin.set_fact": {"architecture": arch, "cacheable": True}}]
        return plays

    rc, out = run_playbook(tmp_path, with_arch("aarch64"))
    assert rc == 0, out["text"]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [wheel_name("9.9.1", "aarch64")]

    rc, out = run_playbook(tmp_path, with_arch("ppc64le"), "-e", "uv_install_dir=%s" % (tmp_path / "other"))
    assert rc == 2, out["text"]
    assert said(out, "localhost: architecture ppc64le is not supported by this role; expected one of x86_64, aarch64")


def test_uv_url_source_needs_a_checksum(tmp_path):
    rc, out = run_playbook(tmp_path, uv_play(tmp_path, uv_source="url", uv_url="https://example.invalid/uv.whl"))
    assert rc == 2, out["text"]
    assert said(out, "localhost: uv_source=url with uv_url='https://example.invalid/uv.whl'")
    assert said(out, "expected uv_url and a uv_checksum for source url")


# --- page_cache alone -----------------------------------------------------------------------------------

def test_page_cache_runs_alone_by_tag_and_by_playbook():
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1")
    listed = subprocess.run([str(BIN / "ansible-playbook"), "molecule/host_prep/converge.yml", "--list-tasks",
                             "--tags", "page_cache"], cwd=ROOT, capture_output=True, text=True, env=env, check=False)
    assert listed.returncode == 0, listed.stderr
    tasks = [ln.strip() for ln in listed.stdout.splitlines() if "TAGS:" in ln and ln.startswith("      ")]
    assert tasks, listed.stdout
    # Every role's argument validation is tagged "always" by Ansible; nothing else of the other roles runs.
    own = [t for t in tasks if "Validating arguments against arg spec" not in t]
    assert own and all(t.startswith("dgxspark.vllm.page_cache :") for t in own), tasks
    # The drop's own tasks are included at run time (only when it drops), so the static listing shows the include.
    assert any(t.startswith("dgxspark.vllm.page_cache : Drop the page cache") for t in tasks), tasks

    alone = subprocess.run([str(BIN / "ansible-playbook"), "playbooks/page_cache.yml", "--list-tasks"],
                           cwd=ROOT, capture_output=True, text=True, env=env, check=False)
    assert alone.returncode == 0, alone.stderr
    assert "dgxspark.vllm.page_cache : Drop the page cache" in alone.stdout and "dgxspark.vllm.uv" not in alone.stdout


# --- preflight's driver check ---------------------------------------------------------------------------
# The stand-in nvidia-smi (fake_host) prints a GB10 line with the driver version of each case: this machine has no
# NVIDIA driver, and the check reads nothing but the version gpu_facts parses from that line.

def gb10_with_driver(version: str) -> str:
    return GB10.replace("580.95.05", version)


def ran(run, task) -> bool:
    return any(name.endswith(" : " + task) for name in run["ran"])


def preflight_play(fake_host, tmp_path, **role_vars):
    role = {"role": "dgxspark.vllm.preflight", "preflight_cuda_build": False, "preflight_min_free_disk_gb": 1,
            "preflight_install_path": str(tmp_path)}
    role.update(role_vars)
    return {"name": "preflight", "hosts": "localhost", "gather_facts": False,
            "environment": {"PATH": "%s:/usr/bin:/bin" % fake_host["bin"]}, "roles": [role]}


SEED_REASON = ("a DGX Spark recipe reports a CUDA-graph deadlock with the 590 branch (its changelog of 2026-03-12); "
               "go back to the 580 branch")


def test_preflight_warns_about_a_590_driver_by_default_and_fails_when_asked(tmp_path, fake_host):
    fake_host["gpu"](gb10_with_driver("590.44.01"))
    rc, out = run_playbook(tmp_path, [preflight_play(fake_host, tmp_path)])
    assert rc == 0 and recap(out)["changed"] == 0, out["text"]
    problem = ("localhost: NVIDIA driver 590.44.01 is a known-bad version (590 in preflight_driver_known_bad): "
               + SEED_REASON + ". Known-good branches: 580")
    assert "WARNING (preflight_driver_known_bad_fails=false, continuing): " + problem in out["messages"], out["text"]
    assert ran(out, "Assert enough free disk space")  # the run went on to the next checks

    rc, out = run_playbook(tmp_path, [preflight_play(fake_host, tmp_path, preflight_driver_known_bad_fails=True)])
    assert rc == 2 and recap(out)["failures"] == 1, out["text"]
    assert problem + ". Set preflight_driver_known_bad_fails=false to go on with a warning." in out["messages"]
    assert not ran(out, "Assert enough free disk space")


def test_preflight_passes_a_580_driver_and_matches_versions_on_whole_parts(tmp_path, fake_host):
    fake_host["gpu"](gb10_with_driver("580.95.05"))
    rc, out = run_playbook(tmp_path, [preflight_play(fake_host, tmp_path, preflight_driver_known_bad_fails=True)])
    assert rc == 0, out["text"]
    assert not said(out, "known-bad"), out["text"]

    # A release and an exact version match; "580.9" is not a part of 580.95.05 and "58" is not its branch.
    bad = [{"version": "58", "reason": "no"}, {"version": "580.9", "reason": "no"},
           {"version": "580.95", "reason": "release R"}, {"version": "580.95.05", "reason": "exact E"}]
    rc, out = run_playbook(tmp_path, [preflight_play(fake_host, tmp_path, preflight_driver_known_bad=bad,
                                                     preflight_driver_known_good_branches=[])])
    assert rc == 0, out["text"]
    assert ("WARNING (preflight_driver_known_bad_fails=false, continuing): localhost: NVIDIA driver 580.95.05 is a "
            "known-bad version (580.95, 580.95.05 in preflight_driver_known_bad): release R; exact E. "
            "Known-good branches: none listed") in out["messages"], out["text"]


def test_preflight_refuses_a_known_bad_entry_without_a_reason(tmp_path, fake_host):
    fake_host["gpu"](gb10_with_driver("590.44.01"))
    rc, out = run_playbook(tmp_path, [preflight_play(fake_host, tmp_path, preflight_driver_known_bad=[{"version": "590"}])])
    assert rc == 2, out["text"]
    assert said(out, "missing required arguments: reason found in preflight_driver_known_bad"), out["text"]
    assert not ran(out, "Look the NVIDIA driver up in the known-bad versions")


def test_memory_guard_refuses_thresholds_out_of_order_before_any_change(tmp_path):
    """The role's tasks/settings.yml, run first: nothing reaches apt (this machine's packages stay as they are)."""
    tasks = [expect_failure("kill", [{"name": "Run", "ansible.builtin.include_role": {"name": "dgxspark.vllm.memory_guard"},
                                      "vars": {"memory_guard_memory_min_kib": 102400, "memory_guard_memory_kill_kib": 524288}}]),
             expect_failure("swap", [{"name": "Run", "ansible.builtin.include_role": {"name": "dgxspark.vllm.memory_guard"},
                                      "vars": {"memory_guard_swap_min_percent": 101}}])]
    rc, out = run_playbook(tmp_path, [play(tasks)], "--check")
    assert rc == 0, out["text"]
    found = case_lines(out)
    for case in ("kill", "swap"):
        assert found[case][0].endswith("Assert earlyoom's thresholds"), found[case]
    assert "memory_guard_memory_min_kib=102400" in found["kill"][1] and "memory_guard_memory_kill_kib=524288" in found["kill"][1]
    assert "memory_guard_swap_min_percent=101" in found["swap"][1]
    assert not ran(out, "Install earlyoom from the distribution's packages")
