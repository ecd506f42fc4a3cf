# Copyright: dgxspark.vllm contributors
# Apache License 2.0 (see LICENSE)
"""Install uv and uvx from a uv wheel (zip) or a uv release tarball (tar.gz), atomically.

Run by the dgxspark.vllm.uv role on the host, only when the installed version differs from the wanted one:

    dgxspark_install_uv.py --archive FILE --dest DIR --version VERSION

The binaries are written next to their final place as hidden temporary files, the new uv is run with
--version, and only when it reports VERSION are both renamed over the old ones (os.replace). On any error
the old uv stays as it was. Prints one JSON object; exits 1 with a message on stderr on failure.
"""

from __future__ import annotations

import argparse
import json
import os
import posixpath
import subprocess
import sys
import tarfile
import zipfile

NAMES = ("uv", "uvx")


def _pick(members):
    """Map 'uv'/'uvx' to the archive member holding it.

    A wheel keeps them in uv-<ver>.data/scripts/, a release tarball in uv-<target>/ (or at the top).
    """
    found = {}
    for name in members:
        base = posixpath.basename(name)
        if base not in NAMES:
            continue
        parent = posixpath.dirname(name)
        if parent.endswith(".data/scripts") or parent.count("/") == 0:
            found.setdefault(base, name)
    return found


def _read_members(archive):
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as zf:
            found = _pick(zf.namelist())
            return {base: zf.read(member) for base, member in found.items()}
    if tarfile.is_tarfile(archive):
        with tarfile.open(archive) as tf:
            regular = [m.name for m in tf.getmembers() if m.isfile()]
            found = _pick(regular)
            return {base: tf.extractfile(member).read() for base, member in found.items()}
    raise ValueError("%s is neither a wheel (zip) nor a tar archive" % archive)


def _fail(message):
    sys.stderr.write("dgxspark_install_uv: %s\n" % message)
    sys.exit(1)


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--archive", required=True)
    parser.add_argument("--dest", required=True)
    parser.add_argument("--version", required=True)
    args = parser.parse_args(argv)

    try:
        blobs = _read_members(args.archive)
    except (OSError, ValueError, zipfile.BadZipFile, tarfile.TarError) as exc:
        _fail("cannot read %s: %s" % (args.archive, exc))
    if "uv" not in blobs:
        _fail("%s holds no uv binary (looked for */.data/scripts/uv and <dir>/uv)" % args.archive)

    os.makedirs(args.dest, exist_ok=True)
    staged = {}
    try:
        for base, data in blobs.items():
            tmp = os.path.join(args.dest, ".%s.dgxspark-new" % base)
            with open(tmp, "wb") as handle:
                handle.write(data)
            os.chmod(tmp, 0o755)
            staged[base] = tmp
        proc = subprocess.run([staged["uv"], "--version"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              universal_newlines=True, env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"}, check=False)
        words = proc.stdout.split()
        seen = words[1] if len(words) > 1 and words[0] == "uv" else None
        if proc.returncode != 0 or seen != args.version:
            _fail("the unpacked uv from %s reports %r (rc=%d), expected version %s; nothing was replaced"
                  % (args.archive, proc.stdout.strip(), proc.returncode, args.version))
        for base, tmp in staged.items():
            os.replace(tmp, os.path.join(args.dest, base))
        staged = {}
    finally:
        for tmp in staged.values():
            if os.path.exists(tmp):
                os.unlink(tmp)

    print(json.dumps({"version": seen, "installed": sorted(blobs), "dest": args.dest, "archive": args.archive}))


if __name__ == "__main__":
    main()
