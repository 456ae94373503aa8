"""Build helpers for the packaging tests: a copy of the source tree (builds never write into the
shared working tree), our wheel built offline from it, and tiny hand-made wheels standing in for
other distributions (a hub's RPM koji)."""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import os
import re
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD_TIMEOUT = 180


def copy_source(dest: str) -> str:
    """The files git knows of (tracked, or new and not ignored) copied to `dest`."""
    names = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                           check=True, timeout=60).stdout.decode().split("\0")
    for name in filter(None, names):
        src = os.path.join(ROOT, name)
        if not os.path.isfile(src) or name.startswith("bench/"):
            continue
        target = os.path.join(dest, name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(src, "rb") as fh, open(target, "wb") as out:
            out.write(fh.read())
        os.chmod(target, os.stat(src).st_mode & 0o777)
    return dest


def build_wheel(source: str, outdir: str) -> str:
    """Our wheel, built with the running venv's setuptools: no index, no build isolation."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", outdir, source], check=True, capture_output=True, timeout=BUILD_TIMEOUT)
    (wheel,) = [f for f in os.listdir(outdir) if f.startswith("koji_messagebus-") and f.endswith(".whl")]
    return os.path.join(outdir, wheel)


def fake_wheel(outdir: str, name: str, version: str, files: dict[str, str]) -> str:
    """A minimal valid wheel of distribution `name` holding `files` (path -> text)."""
    dist_info = f"{name}-{version}.dist-info"
    contents = dict(files)
    contents[f"{dist_info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    contents[f"{dist_info}/WHEEL"] = "Wheel-Version: 1.0\nGenerator: tests.support.packaging\nRoot-Is-Purelib: true\n" \
                                     "Tag: py3-none-any\n"
    record = []
    for path, text in contents.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{dist_info}/RECORD,,")
    contents[f"{dist_info}/RECORD"] = "\n".join(record) + "\n"
    path = os.path.join(outdir, f"{name}-{version}-py3-none-any.whl")
    with zipfile.ZipFile(path, "w") as zf:
        for member, text in contents.items():
            zf.writestr(member, text)
    return path


def with_dependencies(project: str) -> list[str]:
    """`project` and, transitively, the installed distributions it requires (extras left out):
    proton 0.40 brings cffi and pycparser, 0.37 (EPEL 9's) nothing."""
    out: list[str] = []
    todo = [project]
    while todo:
        name = todo.pop(0)
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue  # not for this interpreter (an environment marker)
        if dist.metadata["Name"] in out:
            continue
        out.append(dist.metadata["Name"])
        for req in dist.requires or ():
            if "extra ==" not in req:
                todo.append(re.match(r"[A-Za-z0-9._-]+", req).group(0))  # type: ignore[union-attr]
    return out


def repack_installed(outdir: str, project: str) -> str:
    """A wheel of `project` as installed in the running venv (its RECORD's files and the tag of
    its WHEEL file): the offline way to offer a dependency such as proton and its cffi to pip."""
    dist = importlib.metadata.distribution(project)
    tag = next(line.split(": ", 1)[1] for line in (dist.read_text("WHEEL") or "").splitlines()
               if line.startswith("Tag: "))
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    path = os.path.join(outdir, f"{name}-{dist.version}-{tag}.whl")
    record = []
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in dist.files or ():
            member = str(file)
            if member.startswith("..") or "__pycache__" in member or member.endswith(("RECORD", "INSTALLER")) \
                    or member.endswith("direct_url.json"):
                continue
            data = file.locate().read_bytes()
            zf.writestr(member, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{member},sha256={digest},{len(data)}")
        dist_info = f"{name}-{dist.version}.dist-info"
        record.append(f"{dist_info}/RECORD,,")
        zf.writestr(f"{dist_info}/RECORD", "\n".join(record) + "\n")
    return path
