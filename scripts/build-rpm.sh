#!/usr/bin/env bash
# Build the koji-messagebus RPM (and SRPM) from this tree: sdist -> rpmbuild -ba in a temporary
# _topdir.  Usage: scripts/build-rpm.sh [OUTDIR]   (default: dist/; prints the RPM paths).
# --nodeps: the BuildRequires (python3-devel, systemd-rpm-macros) are Fedora's, not Debian's;
# the spec guards the macros they would define.  On Fedora: rpmbuild -ba koji-messagebus.spec.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "${1:-$root/dist}" && cd "${1:-$root/dist}" && pwd)"
python="${PYTHON:-$root/.venv/bin/python}"
command -v rpmbuild >/dev/null || { echo "rpmbuild not found (Debian: apt-get install rpm)" >&2; exit 1; }
top="$(mktemp -d "${TMPDIR:-/tmp}/koji-messagebus-rpm.XXXXXX")"
trap 'rm -rf "$top"' EXIT
mkdir -p "$top"/{BUILD,BUILDROOT,RPMS,SOURCES,SPECS,SRPMS,src}

# sdist from a copy of the files git knows (the shared tree gets no build/ or egg-info writes)
(cd "$root" && git ls-files -co --exclude-standard -z | grep -zv '^bench/' | xargs -0 tar cf - --no-recursion) \
  | tar xf - -C "$top/src"
version="$(cd "$top/src" && "$python" setup.py --version 2>/dev/null | tail -1)"
spec_version="$(sed -n 's/^Version:[[:space:]]*//p' "$root/koji-messagebus.spec")"
[ "$version" = "$spec_version" ] || { echo "setup.py says $version, the spec $spec_version" >&2; exit 1; }
(cd "$top/src" && "$python" setup.py -q sdist -d "$top/SOURCES" >/dev/null 2>&1) \
  || (cd "$top/src" && "$python" setup.py sdist -d "$top/SOURCES")
# setuptools names the archive koji-messagebus-V or koji_messagebus-V; the spec wants the first
tarball="$(ls "$top/SOURCES"/*.tar.gz)"
[ "$tarball" = "$top/SOURCES/koji-messagebus-$version.tar.gz" ] || {
  mkdir "$top/re" && tar xzf "$tarball" -C "$top/re" && rm "$tarball"
  mv "$top/re"/* "$top/re/koji-messagebus-$version"
  tar czf "$top/SOURCES/koji-messagebus-$version.tar.gz" -C "$top/re" "koji-messagebus-$version"
}
cp "$root/koji-messagebus.spec" "$top/SPECS/"
rpmbuild -ba --nodeps --define "_topdir $top" "$top/SPECS/koji-messagebus.spec" >"$top/rpmbuild.log" 2>&1 \
  || { tail -n 40 "$top/rpmbuild.log" >&2; exit 1; }
grep -i '^warning' "$top/rpmbuild.log" >&2 || true
find "$top/RPMS" "$top/SRPMS" -name '*.rpm' -exec cp {} "$out/" \;
find "$out" -maxdepth 1 -name "koji-messagebus-$version-*.rpm" | sort
