"""scripts/lib.sh's ensure_image: the image is rebuilt when its recipe (the Debian package list) changes.

docker, mmdebstrap and dpkg-query are STAND-INS here (shell scripts on PATH that record their arguments): what is
tested is the decision and the command line. The real build runs at the start of every scripts/test.sh.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def run(tmp_path, script, label, packages=None):
    bindir = tmp_path / "bin"
    bindir.mkdir(exist_ok=True)
    calls = tmp_path / "calls"
    stub = "#!/bin/sh\necho \"$(basename \"$0\") $*\" >> %s\n" % calls
    (bindir / "docker").write_text(stub + 'case "$1 $2" in "image inspect") echo "%s";; esac\ncat >/dev/null 2>&1 || true\n' % label)
    (bindir / "mmdebstrap").write_text(stub + "echo tar-stream\n")
    (bindir / "dpkg-query").write_text(stub + "echo 'install ok installed'\n")
    for name in ("docker", "mmdebstrap", "dpkg-query"):
        (bindir / name).chmod(0o755)
    env = {"PATH": "%s:/usr/bin:/bin" % bindir, "HOME": str(tmp_path)}
    if packages is not None:
        script = "DGX_IMAGE_PACKAGES=%s; %s" % (shlex.quote(packages), script)
    proc = subprocess.run(["bash", "-c", "source %s/scripts/lib.sh; %s" % (ROOT, script)], capture_output=True,
                          text=True, env=env, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip(), calls.read_text().splitlines() if calls.exists() else []


def test_an_image_built_from_this_recipe_is_kept(tmp_path):
    want, _calls = run(tmp_path, "image_recipe_sha256", "")
    _out, calls = run(tmp_path, "ensure_image", want)
    assert [c for c in calls if c.startswith("mmdebstrap")] == []
    assert not [c for c in calls if c.startswith("docker import")]


def test_an_image_without_the_label_or_from_another_recipe_is_rebuilt_with_the_label(tmp_path):
    want, _calls = run(tmp_path, "image_recipe_sha256", "")
    for label in ("", "0" * 64):
        (tmp_path / "calls").unlink(missing_ok=True)
        _out, calls = run(tmp_path, "ensure_image", label)
        built = [c for c in calls if c.startswith("mmdebstrap")]
        assert len(built) == 1 and "--include=apt,python3,python3-apt," in built[0] and ",libnuma1 " in built[0]
        imported = [c for c in calls if c.startswith("docker import")]
        assert len(imported) == 1 and "LABEL dgxspark.recipe-sha256=%s" % want in imported[0]


def test_the_recipe_digest_follows_the_package_list(tmp_path):
    one, _calls = run(tmp_path, "image_recipe_sha256", "")
    listed = os.linesep.join(["apt python3 python3-apt sudo",
                              "ca-certificates systemd systemd-sysv dbus procps iproute2 libnuma1"])
    same, _calls = run(tmp_path, "image_recipe_sha256", "", packages=listed)
    other, _calls = run(tmp_path, "image_recipe_sha256", "", packages="apt python3 libnuma1")
    assert len(one) == 64 and one == same and other != one
