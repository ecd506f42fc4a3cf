"""The collection as Galaxy, AWX and a newcomer get it.

- ansible-galaxy builds the tarball, it holds the runtime content only, and it installs;
- galaxy-importer (Galaxy's own import checks) accepts it;
- antsibull-changelog releases it as Markdown with a release summary, its new modules and its new roles;
- ansible-builder takes the EE definition, and the EE's dependencies are the collection's runtime ones;
- the README's first commands: scripts/run, the example fleet inventory, site.yml stopping cleanly in
  preflight on this GPU-less machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text())
TARBALL_NAME = "%s-%s-%s.tar.gz" % (GALAXY["namespace"], GALAXY["name"], GALAXY["version"])
# What the tarball ships (top level), and what must never be in it.
SHIPPED = {"CHANGELOG.md", "FILES.json", "LICENSE", "MANIFEST.json", "README.md", "changelogs", "docs", "examples",
           "meta", "playbooks", "plugins", "roles"}
NEVER = {".ansible-lint", ".ci", ".config", ".git", ".gitignore", ".venv", ".cache", ".yamllint", "ansible.cfg",
         "benchmarks", "build", "execution-environment.yml", "inventory", "molecule", "requirements.txt",
         "requirements-test.txt", "scripts", "site.yml", "tests"}
ROLES = sorted(p.name for p in (ROOT / "roles").iterdir() if (p / "meta" / "argument_specs.yml").is_file())
MODULES = sorted(p.stem for p in (ROOT / "plugins" / "modules").glob("*.py") if p.stem != "__init__")


def run(argv, **kwargs):
    kwargs.setdefault("env", dict(os.environ, PATH="%s:%s" % (BIN, os.environ.get("PATH", "/usr/bin:/bin"))))
    proc = subprocess.run([str(a) for a in argv], capture_output=True, text=True, check=False, **kwargs)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def tarball(tmp_path_factory):
    out = tmp_path_factory.mktemp("build")
    rc, text = run([BIN / "ansible-galaxy", "collection", "build", "--force", "--output-path", out], cwd=ROOT)
    assert rc == 0, text
    return out / TARBALL_NAME


def test_tarball_ships_the_runtime_content_only(tarball):
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
    top = {n.split("/", 1)[0] for n in names if n not in (".", "")}
    assert top == SHIPPED, "shipped now: %s" % sorted(top)
    assert not top & NEVER
    for role in ROLES:
        assert "roles/%s/README.md" % role in names and "roles/%s/meta/argument_specs.yml" % role in names
    for module in MODULES:
        assert "plugins/modules/%s.py" % module in names
    assert {"meta/runtime.yml", "meta/execution-environment.yml", "meta/ee-requirements.txt", "meta/ee-bindep.txt",
            "LICENSE"} <= set(names)
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".tar.gz"))]
    with tarfile.open(tarball) as tar:
        licence = tar.extractfile("LICENSE").read().decode()
    assert "Apache License" in licence and "Version 2.0, January 2004" in licence


def test_tarball_installs_and_its_docs_render(tarball, tmp_path):
    dest = tmp_path / "installed"
    env = {"ANSIBLE_COLLECTIONS_PATH": str(dest), "PATH": str(BIN) + ":/usr/bin:/bin", "HOME": str(tmp_path)}
    rc, text = run([BIN / "ansible-galaxy", "collection", "install", "--force", tarball, "-p", dest],
                   cwd=tmp_path, env=env)
    assert rc == 0, text
    assert (dest / "ansible_collections" / "dgxspark" / "vllm" / "MANIFEST.json").is_file()
    rc, text = run([BIN / "ansible-doc", "-t", "module", "dgxspark.vllm.gpu_facts"], env=env)
    assert rc == 0 and "nvidia-smi" in text, text
    rc, text = run([BIN / "ansible-doc", "-t", "role", "dgxspark.vllm.vllm_server", "-e", "restore"], env=env)
    assert rc == 0 and "vllm_server_restore_result" in text, text
    # The playbooks run by name from the installed collection (README, "without a checkout").
    for name in ("site", "rollout", "verify", "rollback", "page_cache", "benchmark"):
        rc, text = run([BIN / "ansible-playbook", "-i", ROOT / "inventory" / "fleet.example.yml",
                        "dgxspark.vllm." + name, "--list-hosts"], cwd=tmp_path, env=env)
        assert rc == 0 and "ansible_collections/dgxspark/vllm/playbooks/%s.yml" % name in text, text
        assert ("spark", ["spark-01", "spark-02"]) in [(p.strip("[]'"), h) for p, h in listed_plays(text)], text


def test_galaxy_importer_accepts_the_tarball(tarball, tmp_path):
    """Galaxy's import checks (galaxy-importer from PyPI) on the built tarball: no error, no warning.

    The importer's own ansible-lint step is off here: tests/lint/test_lint.py already runs ansible-lint with the
    production profile and no skipped rules over the whole tree (the importer skips six rules), and the
    importer gives that step a fixed 180 s, which a loaded 2-core machine exceeds.
    """
    env = dict(os.environ, PATH="%s:%s" % (BIN, os.environ.get("PATH", "/usr/bin:/bin")),
               GALAXY_IMPORTER_RUN_ANSIBLE_LINT="false", GALAXY_IMPORTER_TMP_ROOT_DIR=str(tmp_path))
    rc, text = run([sys.executable, "-m", "galaxy_importer.main", tarball], cwd=tmp_path, env=env)
    assert rc == 0, text
    assert "Importer processing completed successfully" in text, text
    assert not [line for line in text.splitlines() if line.startswith(("ERROR", "WARNING"))], text
    result = json.loads((tmp_path / "importer_result.json").read_text())
    found = {(c["content_type"], c["name"]) for c in result["contents"]}
    assert {("role", r) for r in ROLES} <= found and {("module", m) for m in MODULES} <= found
    assert result["requires_ansible"] == yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text())["requires_ansible"]


def test_changelog_release_is_markdown_with_summary_modules_and_roles(tmp_path):
    """antsibull-changelog lint passes, and a release in a scratch copy writes CHANGELOG.md (Markdown only) with
    the release summary, every module and every role as new."""
    copy = tmp_path / "ansible_collections" / "dgxspark" / "vllm"
    copy.mkdir(parents=True)
    for name in ("galaxy.yml", "changelogs", "plugins", "roles", "meta"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, copy / name)
    rc, text = run([BIN / "antsibull-changelog", "lint"], cwd=copy)
    assert rc == 0 and not text.strip(), text
    rc, text = run([BIN / "antsibull-changelog", "release", "--version", GALAXY["version"], "--date", "2026-12-01"],
                   cwd=copy)
    assert rc == 0, text
    assert not (copy / "CHANGELOG.rst").exists()
    changelog = (copy / "CHANGELOG.md").read_text()
    sections = changelog.split("### ")
    summary = [s for s in sections if s.startswith("Release Summary")]
    assert summary and "First release" in summary[0], changelog[:2000]
    new_modules = next(s for s in sections if s.startswith("New Modules"))
    new_roles = next(s for s in sections if s.startswith("New Roles"))
    for module in MODULES:
        assert "dgxspark\\.vllm\\.%s " % module.replace("_", "\\_") in new_modules, module
    for role in ROLES:
        assert "dgxspark\\.vllm\\.%s " % role.replace("_", "\\_") in new_roles, role


def test_ansible_builder_takes_the_ee_definition(tarball, tmp_path):
    """ansible-builder create writes the build context from execution-environment.yml; the galaxy stage's install
    (run here as the image would run it) installs the collection from it, and ansible-builder introspect then
    finds only the collection's runtime needs (meta/execution-environment.yml), no test toolchain."""
    work = tmp_path / "checkout"
    (work / "build").mkdir(parents=True)
    shutil.copy2(ROOT / "execution-environment.yml", work)
    shutil.copy2(tarball, work / "build")
    rc, text = run([BIN / "ansible-builder", "create", "--file", "execution-environment.yml", "--context", "ctx"],
                   cwd=work)
    assert rc == 0 and "Complete! The build context can be found at" in text, text
    ctx = work / "ctx"
    containerfile = next(p for p in (ctx / "Containerfile", ctx / "Dockerfile") if p.is_file()).read_text()
    assert 'ANSIBLE_INSTALL_REFS="ansible-core==2.19.14 ansible-runner==' in containerfile
    assert (ctx / "_build" / "collections" / TARBALL_NAME).is_file()
    # The galaxy stage: WORKDIR /build (= _build), ansible-galaxy collection install -r requirements.yml.
    installed = tmp_path / "usr-share-ansible-collections"
    # The image's environment, not the test run's: scripts/lib.sh exports ANSIBLE_CONFIG, whose collections_path
    # holds this checkout, and ansible-galaxy would then find dgxspark.vllm "already installed" and install nothing.
    env = {"ANSIBLE_COLLECTIONS_PATH": str(installed), "PATH": str(BIN) + ":/usr/bin:/bin", "HOME": str(tmp_path)}
    rc, text = run([BIN / "ansible-galaxy", "collection", "install", "-r", "requirements.yml", "--collections-path",
                    installed], cwd=ctx / "_build", env=env)
    assert rc == 0, text
    assert json.loads((installed / "ansible_collections" / "dgxspark" / "vllm" / "MANIFEST.json").read_text())[
        "collection_info"]["version"] == GALAXY["version"]
    rc, text = run([BIN / "ansible-builder", "introspect", installed])
    assert rc == 0, text
    deps = yaml.safe_load(text.split("---", 1)[1])
    assert deps["python"] == [] and sorted(d.split("#")[0].strip() for d in deps["system"]) == [
        "openssh-client [platform:dpkg]", "openssh-clients [platform:rpm]"], text


def test_ee_definition_names_this_version():
    ee = yaml.safe_load((ROOT / "execution-environment.yml").read_text())
    assert ee["dependencies"]["galaxy"]["collections"] == [{"name": "collections/" + TARBALL_NAME, "type": "file"}]
    assert ee["additional_build_files"] == [{"src": "build/" + TARBALL_NAME, "dest": "collections"}]
    pins = [line.split("#")[0].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()]
    assert ee["dependencies"]["ansible_core"]["package_pip"] in pins, "the EE and CI run different ansible-core"


def listed_plays(text):
    """[(pattern, sorted hosts)] per play of ansible-playbook --list-hosts output."""
    plays = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("pattern: "):
            plays.append((stripped[len("pattern: "):], []))
        elif plays and stripped and not stripped.startswith(("hosts (", "play #", "playbook:")):
            plays[-1][1].append(stripped)
    return [(pattern, sorted(hosts)) for pattern, hosts in plays]


def test_example_fleet_inventory_targets_the_spark_group(tmp_path):
    """scripts/run with the example inventory: the plays target dgxspark_hosts (default spark), or another group."""
    inventory = ROOT / "inventory" / "fleet.example.yml"
    rc, text = run([ROOT / "scripts" / "run", "ansible-inventory", "-i", inventory, "--graph"], cwd=ROOT)
    assert rc == 0 and "@spark:" in text and "spark-01" in text, text
    for extra, hosts in (([], ["spark-01", "spark-02"]), (["-e", "dgxspark_hosts=lab"], ["spark-lab-01"])):
        for playbook in ("site.yml", "playbooks/rollout.yml"):
            rc, text = run([ROOT / "scripts" / "run", "ansible-playbook", "-i", inventory, playbook, "--list-hosts"]
                           + extra, cwd=ROOT)
            assert rc == 0, text
            plays = listed_plays(text)
            targeted = [hosts_of for pattern, hosts_of in plays if pattern != "['all']"]
            assert targeted and all(h == hosts for h in targeted), text


def test_scripts_run_refuses_what_the_toolchain_lacks():
    rc, text = run([ROOT / "scripts" / "run"], cwd=ROOT)
    assert rc == 1 and "usage: scripts/run COMMAND" in text, text
    rc, text = run([ROOT / "scripts" / "run", "no-such-tool", "--help"], cwd=ROOT)
    assert rc == 1 and "no-such-tool is not a command of the toolchain" in text, text


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has an NVIDIA driver")
def test_site_on_this_gpu_less_machine_stops_in_preflight():
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "site.yml"],
        cwd=ROOT, capture_output=True, text=True, check=False,
        env={"PATH": str(BIN) + ":/usr/bin:/bin:/usr/sbin:/sbin", "ANSIBLE_CONFIG": str(ROOT / "ansible.cfg"),
             "ANSIBLE_NOCOLOR": "1", "HOME": str(Path.home())},
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "localhost: no NVIDIA GPU found (nvidia-smi not found" in out
    assert "Traceback" not in out
    recap = [line for line in out.splitlines() if line.startswith("localhost ") and "changed=" in line]
    assert recap and "changed=0" in recap[-1] and "failed=1" in recap[-1], out
