"""CycloneDX 1.5 JSON SBOMs for the two release artifacts, from `cargo metadata` (what the crate
is built from on its target), Cargo.lock (the crates' registry checksums) and, for the collector
image, dpkg (the Debian packages its shared libraries and CA certificates come from).

Only crates linked into the artifact are listed: normal dependencies on the artifact's platform
(proc-macros included, they generate its code); build scripts' and dev dependencies are not.
Deterministic: timestamp from SOURCE_DATE_EPOCH, serial number derived from the artifact digest.
"""

from __future__ import annotations

import shutil
import subprocess
import tomllib
import uuid
from pathlib import Path

from cargo_graph import cargo_metadata, linked_crates


def spdx(expression: str | None) -> list[dict]:
    if not expression:
        return []
    return [{"expression": expression.replace(" / ", " OR ").replace("/", " OR ")}]


def lock_checksums(lock: Path) -> dict[tuple[str, str], str]:
    data = tomllib.loads(lock.read_text(encoding="utf-8"))
    return {(p["name"], p["version"]): p["checksum"] for p in data.get("package", []) if "checksum" in p}


def purl(p: dict) -> str:
    return f"pkg:cargo/{p['name']}@{p['version']}"


def crate_component(p: dict, checksums: dict, kind: str = "library") -> dict:
    c = {"type": kind, "bom-ref": purl(p), "name": p["name"], "version": p["version"],
         "purl": purl(p), "licenses": spdx(p.get("license"))}
    if (p["name"], p["version"]) in checksums:
        c["hashes"] = [{"alg": "SHA-256", "content": checksums[(p["name"], p["version"])]}]
    if p.get("source") is None:
        c["description"] = "meshaudit workspace crate"
    return c


def deb_package(path: str) -> tuple[str, str, str] | None:
    """(package, version, architecture) owning a file, or None when dpkg knows none (or this is
    not a Debian machine: the SBOM then lists the crates only)."""
    if shutil.which("dpkg") is None:
        return None
    for candidate in dict.fromkeys([path, str(Path(path).resolve())]):
        run = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True, check=False)
        if run.returncode == 0:
            # "libc6:amd64: /lib/…" or "ca-certificates: /usr/…"; the first owner is enough.
            pkg = run.stdout.split(":")[0].split(",")[0].strip()
            q = subprocess.run(["dpkg-query", "-W", "-f", "${Version} ${Architecture}", pkg],
                               capture_output=True, text=True, check=False)
            if q.returncode == 0 and q.stdout.strip():
                version, arch = q.stdout.split()
                return pkg, version, arch
    return None


def deb_component(pkg: str, version: str, arch: str, files: list[str]) -> dict:
    ref = f"pkg:deb/debian/{pkg}@{version}?arch={arch}"
    return {"type": "library" if pkg != "ca-certificates" else "data", "bom-ref": ref, "name": pkg,
            "version": version, "purl": ref,
            "properties": [{"name": "meshaudit:image-path", "value": f} for f in files]}


def document(*, name: str, version: str, digest: str, kind: str, created: str, repository: str,
             root_component: dict, components: list[dict], dependencies: list[dict],
             also_contains: tuple[str, ...] = ()) -> dict:
    image_purl = f"pkg:oci/{name}@{digest.replace(':', '%3A')}?repository_url={repository}&tag={version}"
    return {
        "bomFormat": "CycloneDX", "specVersion": "1.5",
        "serialNumber": f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, image_purl)}", "version": 1,
        "metadata": {
            "timestamp": created,
            "tools": {"components": [{"type": "application", "name": "meshaudit scripts/release/sbom.py"}]},
            "component": {"type": kind, "bom-ref": image_purl, "name": name, "version": version,
                          "purl": image_purl,
                          "hashes": [{"alg": "SHA-256", "content": digest.split(":", 1)[1]}]},
        },
        "components": [root_component, *components],
        "dependencies": [{"ref": image_purl, "dependsOn": [root_component["bom-ref"], *also_contains]},
                         *dependencies],
    }


def cargo_parts(root_dir: Path, crate: str, platform: str) -> tuple[dict, list[dict], list[dict]]:
    """The crate as an application component, its linked crates, and the dependency edges."""
    metadata = cargo_metadata(root_dir, platform)
    checksums = lock_checksums(root_dir / "Cargo.lock")
    root, deps, edges = linked_crates(metadata, crate)
    by_id = {p["id"]: p for p in metadata["packages"]}
    root_component = crate_component(root, checksums, "application")
    components = [crate_component(p, checksums) for p in deps]
    dependencies = [{"ref": purl(by_id[pid]), "dependsOn": [purl(by_id[d]) for d in ds]}
                    for pid, ds in sorted(edges.items(), key=lambda kv: purl(by_id[kv[0]]))]
    return root_component, components, dependencies


def collector_sbom(*, root_dir: Path, version: str, digest: str, created: str, repository: str,
                   image_files: list[str]) -> dict:
    app, crates, deps = cargo_parts(root_dir, "meshaudit-collector", "x86_64-unknown-linux-gnu")
    debs: dict[tuple[str, str, str], list[str]] = {}
    for f in image_files:
        owner = deb_package(f)
        if owner is None and f.startswith("/etc/ssl/certs/"):
            # update-ca-certificates writes the bundle; the certificates are ca-certificates'.
            owner = deb_package("/usr/share/ca-certificates")
        if owner is not None:
            debs.setdefault(owner, []).append(f)
    packages = [deb_component(*k, sorted(v)) for k, v in sorted(debs.items())]
    return document(name="meshaudit-collector", version=version, digest=digest, kind="container",
                    created=created, repository=repository, root_component=app,
                    components=crates + packages, dependencies=deps,
                    also_contains=tuple(p["bom-ref"] for p in packages))


def filter_sbom(*, root_dir: Path, version: str, digest: str, created: str, repository: str) -> dict:
    app, crates, deps = cargo_parts(root_dir, "meshaudit-filter", "wasm32-wasip1")
    return document(name="meshaudit-filter", version=version, digest=digest, kind="container",
                    created=created, repository=repository, root_component=app,
                    components=crates, dependencies=deps)
