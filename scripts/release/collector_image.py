"""The collector image's root filesystem and config: the release binary, exactly the shared
libraries `ldd` names plus the dynamic loader, CA certificates, a passwd/group with the non-root
user 65532 (k8s/base's securityContext), /tmp, and nothing else: no shell, no package manager.

`parse_ldd` and `rootfs_entries` are pure; `collect` reads the host (the machine that built the
binary, so the libraries match the glibc it was linked against).
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from oci import Entry

BINARY_PATH = "/usr/local/bin/meshaudit-collector"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
USER = (65532, "nonroot")
PASSWD = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"
GROUP = "root:x:0:\nnonroot:x:65532:\n"
# glibc ≥ 2.34 has the files and dns NSS modules built in, so name lookups need no libnss_*.so.
NSSWITCH = "passwd: files\ngroup: files\nhosts: files dns\n"
ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


class ImageError(Exception):
    pass


@dataclass(frozen=True)
class SharedLib:
    path: str  # where the binary looks for it (ldd's path, the loader's PT_INTERP)
    source: Path  # the real file on this machine


def parse_ldd(output: str) -> list[str]:
    """Library paths from `ldd` output (the vDSO has none). A static binary gives []."""
    if "not a dynamic executable" in output or "statically linked" in output:
        return []
    paths = []
    for line in output.splitlines():
        line = line.strip()
        if not line or line.startswith("linux-vdso") or line.startswith("linux-gate"):
            continue
        if "not found" in line:
            raise ImageError(f"ldd: a library is missing: {line}")
        m = re.match(r"^(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)$", line)
        if not m:
            raise ImageError(f"ldd: cannot read the line {line!r}")
        paths.append(m.group(1))
    return paths


def shared_libs(binary: Path) -> list[SharedLib]:
    run = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False, timeout=30)
    return [SharedLib(p, Path(p).resolve()) for p in parse_ldd(run.stdout + run.stderr)]


def rootfs_entries(binary: bytes, libs: dict[str, bytes], ca_bundle: bytes) -> list[Entry]:
    uid, name = USER
    entries = [
        Entry(BINARY_PATH, "file", 0o755, binary),
        Entry(CA_BUNDLE, "file", 0o644, ca_bundle),
        Entry("/etc/passwd", "file", 0o644, PASSWD.encode()),
        Entry("/etc/group", "file", 0o644, GROUP.encode()),
        Entry("/etc/nsswitch.conf", "file", 0o644, NSSWITCH.encode()),
        Entry("/tmp", "dir", 0o1777),
        Entry(f"/home/{name}", "dir", 0o700, uid=uid, gid=uid),
    ]
    entries += [Entry(path, "file", 0o755, data) for path, data in sorted(libs.items())]
    return entries


def image_config(*, arch: str, created: str, labels: dict[str, str]) -> dict:
    uid = USER[0]
    return {
        "created": created, "architecture": arch, "os": "linux",
        "config": {
            "User": f"{uid}:{uid}",
            "Env": ["PATH=/usr/local/bin", f"SSL_CERT_FILE={CA_BUNDLE}"],
            "Entrypoint": [BINARY_PATH], "Cmd": ["serve"],
            # The default DATABASE_URL (sqlite://meshaudit.db) is relative: in /tmp it lands on the
            # Deployment's writable emptyDir instead of failing on the read-only root filesystem.
            "WorkingDir": "/tmp",
            "ExposedPorts": {"8080/tcp": {}},
            "Labels": labels,
        },
        "history": [{"created": created, "created_by": "scripts/release (meshaudit make release)"}],
    }


def collect(binary: Path, ca_bundle: Path) -> tuple[list[Entry], list[SharedLib]]:
    """The rootfs entries from this machine's files, and the libraries (for the SBOM)."""
    for path, what in ((binary, "the collector binary: run `make build`"),
                       (ca_bundle, "CA certificates: apt-get install ca-certificates")):
        if not path.is_file():
            raise ImageError(f"{path} is missing ({what})")
    libs = shared_libs(binary)
    entries = rootfs_entries(binary.read_bytes(), {l.path: l.source.read_bytes() for l in libs},
                             ca_bundle.read_bytes())
    return entries, libs
