"""ansible-test sanity and ansible-test units on a copy of this checkout, the way that works on these machines.

ansible-test wants the collection at .../ansible_collections/dgxspark/vllm, so the test copies the files of the
checkout (git ls-files: tracked, and untracked ones that are not ignored) to
.cache/ansible-test/ansible_collections/dgxspark/vllm and runs there with the toolchain's ansible-test (--local).
The copy is made a git work tree (git init, nothing committed), so that ansible-test lists its files with
git ls-files and skips what .gitignore ignores (the copy's own .cache).

Every sanity test creates its own venv (~/.ansible/test/venv/sanity.<test>/...) and bootstraps pip in it with a
get-pip.py that it downloads from ci-files.testing.ansible.com, which these machines cannot reach ("Download
failed ... The bootstrap script can be manually downloaded and saved to ~/.ansible/test/cache/get_pip_24_2.py").
ansible-test uses that cached file when it is there, so the test writes its own bootstrap script there: it
installs pip with the venv's own ensurepip and then the pip version ansible-test asks for, from PyPI. The sanity
requirements (pylint, pycodestyle, voluptuous, ... at ansible-test's pins) then come from PyPI as usual.
HOME is .cache/ansible-test/home for the sanity run, so these venvs and the pip cache stay under .cache.

ansible-test units runs with --local in the toolchain venv (requirements-test.txt holds what ansible-test's
units need: pytest-xdist, pytest-mock, mock) and the real HOME (pip's user configuration names the local wheel
folder that the CPU torch wheel of tests/unit/roles/test_fa2_numerics.py comes from). The copy's .cache links
the checkout's venvs, pip-target and fatbin-builds caches, so nothing is built twice.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BASE = ROOT / ".cache" / "ansible-test"
COPY = BASE / "ansible_collections" / "dgxspark" / "vllm"
SANITY_HOME = BASE / "home"
SHARED_CACHES = ("venvs", "pip-target", "fatbin-builds")
# Every sanity test that must run here; a skipped one (missing tool, missing Python) fails the test.
REQUIRED_SANITY = ("action-plugin-docs", "ansible-doc", "changelog", "compile", "empty-init", "ignores", "import",
                   "line-endings", "no-assert", "pep8", "pylint", "replace-urlopen", "runtime-metadata", "shebang",
                   "shellcheck", "symlinks", "use-compat-six", "validate-modules", "yamllint")

GET_PIP_STAND_IN = '''"""Stand-in for get-pip.py, written by tests/lint/test_ansible_test.py (ci-files.testing.ansible.com is not
reachable here). Installs pip with this Python's ensurepip, then what ansible-test asked for, from PyPI."""
import subprocess
import sys

argv = sys.argv[1:]
subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
packages = [a for a in argv if a not in ("--no-setuptools", "--no-wheel")]
subprocess.check_call([sys.executable, "-m", "pip", "install"] + packages)
if "--no-setuptools" in argv:
    subprocess.check_call([sys.executable, "-m", "pip", "uninstall", "--yes", "--quiet", "setuptools"])
'''


def ansible_test_pip_version():
    """The pip version ansible-test bootstraps into its venvs (the name of the cached get-pip file depends on it)."""
    from ansible_test._internal.python_requirements import get_venv_packages
    return get_venv_packages(SimpleNamespace(version="%d.%d" % sys.version_info[:2]))["pip"]


def write_get_pip_stand_in(home):
    version = ansible_test_pip_version()
    path = home / ".ansible" / "test" / "cache" / ("get_pip_%s.py" % version.replace(".", "_"))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(GET_PIP_STAND_IN)
    return path


def checkout_files():
    proc = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                          capture_output=True, check=False)
    assert proc.returncode == 0, "ansible-test runs on the files of a git checkout: %s" % proc.stderr.decode()
    return [name for name in proc.stdout.decode().split("\0") if name and (ROOT / name).is_file()]


def make_copy():
    """A fresh copy of the checkout at COPY (a git work tree with nothing committed); returns COPY."""
    if COPY.exists():
        shutil.rmtree(COPY)
    for name in checkout_files():
        dest = COPY / name
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest)
    subprocess.run(["git", "init", "-q", str(COPY)], check=True)
    for name in SHARED_CACHES:
        (ROOT / ".cache" / name).mkdir(parents=True, exist_ok=True)
        (COPY / ".cache").mkdir(exist_ok=True)
        os.symlink(ROOT / ".cache" / name, COPY / ".cache" / name)
    return COPY


def ansible_test(args, home, timeout):
    env = dict(os.environ, HOME=str(home), PATH="%s:%s" % (BIN, os.environ.get("PATH", "/usr/bin:/bin")))
    proc = subprocess.run([str(BIN / "ansible-test")] + args + ["--python", "%d.%d" % sys.version_info[:2], "--local",
                                                                "--color", "no"],
                          cwd=COPY, env=env, capture_output=True, text=True, check=False, timeout=timeout)
    # pip's "Location ... is ignored" lines about the local index folders are noise here.
    out = "\n".join(line for line in (proc.stdout + proc.stderr).splitlines() if "is ignored: it is neither" not in line)
    return proc.returncode, out


@pytest.fixture(scope="module")
def copy():
    return make_copy()


def test_sanity(copy):
    """Every sanity test passes; the only ignores are in tests/sanity/ignore-2.19.txt, each with its reason."""
    assert shutil.which("shellcheck"), "shellcheck is missing (apt-get install shellcheck; scripts/test.sh installs it)"
    write_get_pip_stand_in(SANITY_HOME)
    rc, out = ansible_test(["sanity"], SANITY_HOME, timeout=2400)
    assert rc == 0, out[-20000:]
    for name in REQUIRED_SANITY:
        assert 'Running sanity test "%s"' % name in out, "sanity test %s did not run:\n%s" % (name, out[-5000:])
    assert "Skipping sanity test" not in out and "Required program" not in out, out[-5000:]


def test_sanity_ignores_name_their_reason():
    ignores = (ROOT / "tests" / "sanity" / "ignore-2.19.txt").read_text().splitlines()
    assert ignores, "the ignore file is empty: remove it instead"
    for line in ignores:
        entry, sep, reason = line.partition(" # ")
        assert sep and len(reason.split()) >= 5 and len(entry.split()) == 2, "an ignore without its reason: %r" % line


def test_units(copy):
    """The unit tests pass under ansible-test units too (forked per test, imported as collection packages)."""
    rc, out = ansible_test(["units", "--num-workers", "2"], Path.home(), timeout=2400)
    assert rc == 0, out[-20000:]
    summaries = [line for line in out.splitlines() if line.startswith("=") and " passed" in line]
    assert summaries and not [line for line in summaries if "failed" in line or "error" in line], out[-5000:]
