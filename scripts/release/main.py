"""`make release VERSION=x.y.z [REGISTRY=…]`: from the built collector binary and filter module,
writes to dist/ the collector image and the filter image as OCI archives, the module's SHA-256,
a CycloneDX SBOM per image, release-VERSION.json (what was built, with digests) and
SHA256SUMS-VERSION, and generates the kustomize overlay k8s/release/ pinned to those digests.

No Docker daemon or image builder: oci.py writes the image layouts itself. Reproducible: the
same inputs and SOURCE_DATE_EPOCH (default: the HEAD commit's time) give the same digests.
Refuses to build when a dependency's license is not allowed (licenses.py).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cargo_graph  # noqa: E402
import collector_image  # noqa: E402
import filter_image  # noqa: E402
import licenses  # noqa: E402
import oci  # noqa: E402
import overlay  # noqa: E402
import sbom  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SEMVER = re.compile(r"^\d+\.\d+\.\d+(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$")
DEFAULT_SOURCE = "https://github.com/meshaudit/meshaudit"


def git(*args: str) -> str:
    run = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=False)
    return run.stdout.strip() if run.returncode == 0 else ""


def public_source(remote: str) -> str:
    """The origin remote as a public https:// URL for the source label, never with credentials:
    `git@host:org/repo.git` becomes https://host/org/repo; anything else not http(s) (a local
    path) gives the default."""
    m = re.match(r"^(?:ssh://)?git@([^:/]+)[:/](.+?)(?:\.git)?/?$", remote)
    if m:
        return f"https://{m.group(1)}/{m.group(2)}"
    m = re.match(r"^https?://(?:[^@/]*@)?([^/]+)/(.+?)(?:\.git)?/?$", remote)
    if m:
        return f"https://{m.group(1)}/{m.group(2)}"
    return DEFAULT_SOURCE


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--version", required=True, help="release version, x.y.z (semver)")
    p.add_argument("--registry", default="ghcr.io/meshaudit",
                   help="registry and path the images will be pushed to (default ghcr.io/meshaudit)")
    p.add_argument("--base", default="postgres", choices=["postgres", "base", "single-node"],
                   help="which k8s/ variant the overlay deploys the collector with")
    p.add_argument("--wasm-url", default="",
                   help="an https:// URL the module will be served from: pin it instead of oci://")
    p.add_argument("--out", type=Path, default=ROOT / "dist")
    p.add_argument("--overlay", type=Path, default=ROOT / "k8s" / "release")
    p.add_argument("--collector-bin", type=Path, default=ROOT / "target" / "release" / "meshaudit-collector")
    p.add_argument("--wasm", type=Path, default=ROOT / "dist" / "meshaudit_filter.wasm")
    p.add_argument("--ca-bundle", type=Path, default=Path(collector_image.CA_BUNDLE))
    p.add_argument("--source-url", default=os.environ.get("SOURCE_URL", ""))
    p.add_argument("--revision", default="", help="the commit to label the images with (default HEAD)")
    p.add_argument("--skip-license-check", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not SEMVER.match(args.version):
        p.error(f"VERSION must be semver x.y.z, got {args.version!r}")
    if args.wasm_url and not args.wasm_url.startswith("https://"):
        p.error("WASM_URL must be an https:// URL")
    if not re.match(r"^[a-z0-9.-]+(:\d+)?(/[a-z0-9._-]+)*$", args.registry):
        p.error(f"REGISTRY must look like host[:port]/path, got {args.registry!r}")
    return args


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(args: argparse.Namespace) -> dict:
    started = time.monotonic()
    epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or git("log", "-1", "--format=%ct") or 0)
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    revision = args.revision or git("rev-parse", "HEAD") or "unknown"
    source = args.source_url or public_source(git("remote", "get-url", "origin"))
    version = args.version
    labels = {"org.opencontainers.image.source": source, "org.opencontainers.image.version": version,
              "org.opencontainers.image.revision": revision, "org.opencontainers.image.created": created,
              "org.opencontainers.image.licenses": "Apache-2.0",
              "org.opencontainers.image.vendor": "meshaudit"}

    if not args.skip_license_check:
        _, bad = licenses.check(ROOT)
        if bad:
            raise SystemExit("release: dependency licenses not allowed:\n  " + "\n  ".join(bad))
    if not args.wasm.is_file():
        raise SystemExit(f"release: {args.wasm} is missing: run `make wasm`")
    args.out.mkdir(parents=True, exist_ok=True)

    # The collector image.
    entries, libs = collector_image.collect(args.collector_bin, args.ca_bundle)
    arch = collector_image.ARCH.get(platform.machine(), platform.machine())
    c_labels = {**labels, "org.opencontainers.image.title": "meshaudit-collector",
                "org.opencontainers.image.description": "meshaudit audit-event collector"}
    collector = oci.build_image(entries_per_layer=[entries],
                                config=collector_image.image_config(arch=arch, created=created, labels=c_labels),
                                annotations=c_labels, layer_annotations=None, ref_name=version, mtime=epoch)
    collector_tar = args.out / f"meshaudit-collector-{version}.oci.tar"
    oci.write_archive(collector, collector_tar, epoch)

    # The filter image, and the bare module with its checksum for https:// hosting.
    wasm = args.wasm.read_bytes()
    wasm_out = args.out / "meshaudit_filter.wasm"
    if args.wasm.resolve() != wasm_out.resolve():
        shutil.copyfile(args.wasm, wasm_out)
    wasm_sha = hashlib.sha256(wasm).hexdigest()
    (args.out / "meshaudit_filter.wasm.sha256").write_text(f"{wasm_sha}  meshaudit_filter.wasm\n", encoding="utf-8")
    f_labels = {**labels, "org.opencontainers.image.title": "meshaudit-filter",
                "org.opencontainers.image.description": "meshaudit proxy-wasm filter (Istio WasmPlugin, compat variant)"}
    filt = oci.build_image(entries_per_layer=[filter_image.rootfs_entries(wasm)],
                           config=filter_image.image_config(created=created, labels=f_labels),
                           annotations=f_labels, layer_annotations=None, ref_name=version, mtime=epoch)
    filter_tar = args.out / f"meshaudit-filter-{version}.oci.tar"
    oci.write_archive(filt, filter_tar, epoch)

    # SBOMs.
    collector_repo, filter_repo = f"{args.registry}/collector", f"{args.registry}/filter"
    c_sbom = sbom.collector_sbom(root_dir=ROOT, version=version, digest=collector.digest, created=created,
                                 repository=collector_repo, image_files=[e.path for e in entries if e.kind == "file"])
    f_sbom = sbom.filter_sbom(root_dir=ROOT, version=version, digest=filt.digest, created=created,
                              repository=filter_repo)
    c_sbom_path = args.out / f"meshaudit-collector-{version}.cdx.json"
    f_sbom_path = args.out / f"meshaudit-filter-{version}.cdx.json"
    for path, doc in ((c_sbom_path, c_sbom), (f_sbom_path, f_sbom)):
        path.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    # The overlay.
    url = overlay.filter_url(filter_repo=filter_repo, filter_digest=filt.digest, wasm_url=args.wasm_url)
    pin = wasm_sha if args.wasm_url else filt.digest.split(":", 1)[1]
    args.overlay.mkdir(parents=True, exist_ok=True)
    (args.overlay / "kustomization.yaml").write_text(overlay.kustomization(
        version=version, revision=revision, base=args.base, collector_repo=collector_repo,
        collector_digest=collector.digest), encoding="utf-8")
    (args.overlay / "wasm-pin.yaml").write_text(overlay.wasm_pin(
        version=version, revision=revision, url=url, sha256=pin), encoding="utf-8")

    summary = {
        "version": version, "revision": revision, "created": created, "source": source,
        # Uncommitted changes when it was built: the revision label then names the base commit only.
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "dist": os.path.relpath(args.out, Path.cwd()),
        "collector": {"archive": collector_tar.name, "image": f"{collector_repo}:{version}",
                      "digest": collector.digest, "architecture": arch,
                      "libraries": [l.path for l in libs], "sbom": c_sbom_path.name},
        "filter": {"archive": filter_tar.name, "image": f"{filter_repo}:{version}",
                   "digest": filt.digest, "wasm": wasm_out.name, "wasm_sha256": wasm_sha,
                   "sbom": f_sbom_path.name},
        "overlay": {"path": str(args.overlay), "base": args.base, "wasm_url": url, "wasm_sha256_pin": pin},
    }
    (args.out / f"release-{version}.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    sums = [collector_tar, filter_tar, wasm_out, c_sbom_path, f_sbom_path]
    (args.out / f"SHA256SUMS-{version}").write_text(
        "".join(f"{sha256_file(p)}  {p.name}\n" for p in sums), encoding="utf-8")
    summary["seconds"] = round(time.monotonic() - started, 1)
    return summary


def main(argv: list[str]) -> int:
    try:
        summary = build(parse_args(argv))
    except (cargo_graph.CargoError, collector_image.ImageError, OSError) as e:
        raise SystemExit(f"release: {e}") from e
    c, f = summary["collector"], summary["filter"]
    print(f"release {summary['version']} ({summary['revision'][:12]}) in {summary['seconds']} s")
    print(f"  collector  {c['archive']}  {c['digest']}  -> {c['image']}")
    print(f"  filter     {f['archive']}  {f['digest']}  -> {f['image']}")
    print(f"  module     {f['wasm']}  sha256 {f['wasm_sha256']}")
    print(f"  overlay    {summary['overlay']['path']}  url {summary['overlay']['wasm_url']}")
    if summary["dirty"]:
        print("  note: the work tree had uncommitted changes; the revision label names HEAD only")
    print("publish (docs/deploy.md step 2):")
    for name in ("collector", "filter"):
        archive = Path(summary["dist"]) / summary[name]["archive"]
        print(f"  skopeo copy --preserve-digests oci-archive:{archive} docker://{summary[name]['image']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
