"""Checks `make release` (issue 16) end to end, on a throwaway copy: it runs the release into a
temporary dist/ and a temporary copy of k8s/ (so a real dist/ or k8s/release/ is never touched),
then checks what came out. One line per check, then "N passed, M failed".

Run from the repository root (make test does): .venv/bin/python tests/manifests/release_check.py
Needs the built collector (`make build`), the built filter (`make wasm`), and from `make setup`:
skopeo, umoci, Envoy and kubectl in .venv; root, for chroot.

- Both OCI archives are well-formed: `skopeo inspect` reads them and reports our manifest digest,
  and an independent parser (release_oci.py) checks every descriptor's digest and size, the
  layers' diff_ids, and the labels (source, version, revision).
- Reproducible: a second release of the same commit gives byte-identical archives.
- Publishing: `skopeo copy --preserve-digests` pushes both to a real registry (docker-registry on
  loopback); the manifests it serves hash to the pinned digests, and the filter pulled over the
  registry API the way Istio's agent pulls it holds the same plugin.wasm.
- Collector image: unpacked by umoci, it holds exactly the binary, the libraries `ldd` names, the
  loader, the CA bundle, passwd/group/nsswitch and /tmp (no shell); its User is non-root and
  numeric; run inside its own root filesystem (chroot, as that user, in its WorkingDir) the
  binary answers --version and `serve` answers /healthz with SQLite.
- Filter image: the module Istio's agent would extract (compat variant) is byte-identical to
  dist/meshaudit_filter.wasm; in the real Envoy, configured as the overlay's WasmPlugin says, a
  request is audited and arrives verified at the collector running from the collector image.
- The overlay k8s/release renders with `kubectl kustomize`, passes the checks validate.py applies
  to every object, pins the collector image by the archive's manifest digest and the WasmPlugin to
  the filter archive's manifest digest (url and sha256); with WASM_URL, to the https:// URL and
  the module's sha256.
- SBOMs: CycloneDX 1.5, valid against the CycloneDX schema, naming each linked crate at its
  Cargo.lock version and checksum, the Debian packages in the image, and the artifact's digest.
- Licenses: every crate is under an allowed license (scripts/release/licenses.py).
- Self-tests: broken inputs are refused: a GPL crate, a shipped MPL crate, a malformed license
  expression, a corrupted archive, a wrongly typed Wasm layer, a bad VERSION or WASM_URL, and the
  collector image with a library removed (which must then fail: the host's libraries never leak in).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "release"))

import licenses  # noqa: E402
import overlay  # noqa: E402
import main as release_main  # noqa: E402
from kustomize import kustomize, obj_name  # noqa: E402
from policy import collector_container, wasmplugin_problems  # noqa: E402
from release_collector import serve_problems, umoci_unpack, user_ids, version_problems  # noqa: E402
from release_filter import live_problems  # noqa: E402
from release_oci import istio_wasm, layer_paths, parse, read_archive, sha  # noqa: E402
from release_registry import publish_problems  # noqa: E402
from release_sbom import sbom_problems  # noqa: E402
from report import Report  # noqa: E402
from tools import COLLECTOR_BIN, ENVOY, K8S, KUBECTL, ROOT, WASM  # noqa: E402
from validate import validate_object  # noqa: E402
from contracts import FILTER_ENV  # noqa: E402

VERSION = "0.0.0-releasecheck"
REGISTRY = "registry.test:5000/meshaudit"
WASM_URL = "https://wasm.example.com/meshaudit/0.0.0/meshaudit_filter.wasm"
REVISION = "0123456789abcdef0123456789abcdef01234567"
EPOCH = "1764460800"  # 2025-11-30T00:00:00Z
LABELS = ("org.opencontainers.image.source", "org.opencontainers.image.version",
          "org.opencontainers.image.revision")


def release(out: Path, tree: Path, *extra: str) -> tuple[dict, float]:
    """One release run. The commit and its time are fixed, so that other commits landing while
    the test runs cannot make two runs differ."""
    started = time.monotonic()
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "release" / "main.py"), "--version", VERSION,
                          "--registry", REGISTRY, "--out", str(out), "--overlay", str(tree / "release"),
                          "--collector-bin", str(COLLECTOR_BIN), "--wasm", str(WASM), "--revision", REVISION,
                          *extra], env={**os.environ, "SOURCE_DATE_EPOCH": EPOCH},
                         cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    if run.returncode != 0:
        raise RuntimeError(f"release failed: {(run.stderr or run.stdout).strip()[-600:]}")
    return json.loads((out / f"release-{VERSION}.json").read_text(encoding="utf-8")), time.monotonic() - started


def prerequisites(report: Report) -> bool:
    missing = [f"{p} (run `{how}`)" for p, how in ((COLLECTOR_BIN, "make build"), (WASM, "make wasm"),
                                                 (KUBECTL, "make setup"), (ENVOY, "make setup")) if not p.exists()]
    missing += [f"{tool} (run `make setup`: apt-get install {tool})" for tool in ("skopeo", "umoci", "docker-registry")
                if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root: the collector image is run with chroot (make test runs as root here)")
    for m in missing:
        report.fail("release prerequisites", f"missing {m}")
    return not missing


def skopeo_problems(archive: Path, digest: str) -> list[str]:
    run = subprocess.run(["skopeo", "inspect", f"oci-archive:{archive}"], capture_output=True, text=True,
                         timeout=60, check=False)
    if run.returncode != 0:
        return [f"skopeo inspect: {run.stderr.strip()[-300:]}"]
    info = json.loads(run.stdout)
    problems = [] if info.get("Digest") == digest else [f"skopeo sees digest {info.get('Digest')}, not {digest}"]
    labels = info.get("Labels") or {}
    problems += [f"label {k} missing" for k in LABELS if not labels.get(k)]
    if labels.get("org.opencontainers.image.version") != VERSION:
        problems.append(f"version label {labels.get('org.opencontainers.image.version')!r}")
    return problems


def archive_checks(report: Report, summary: dict, out: Path) -> dict:
    parsed = {}
    for name in ("collector", "filter"):
        archive = out / summary[name]["archive"]
        image, problems = parse(read_archive(archive))
        if image is not None and image.manifest_digest != summary[name]["digest"]:
            problems.append(f"manifest digest {image.manifest_digest} but release-{VERSION}.json says {summary[name]['digest']}")
        report.check(f"release {archive.name}: OCI layout, digests, sizes, diff_ids", problems,
                     f"{archive.stat().st_size // 1024} KiB")
        report.check(f"release {archive.name}: skopeo inspect, labels", skopeo_problems(archive, summary[name]["digest"]))
        parsed[name] = image
    return parsed


def collector_checks(report: Report, image, archive: Path, tmp: Path) -> tuple[Path | None, dict]:
    config = image.config if image else {}
    problems = []
    try:
        uid, _ = user_ids(config)
        if uid == 0:
            problems.append("User is root")
    except (KeyError, ValueError) as e:
        problems.append(str(e))
    labels = config.get("config", {}).get("Labels", {})
    problems += [f"label {k} missing" for k in LABELS if not labels.get(k)]
    report.check("release collector image: non-root numeric User, labels", problems,
                 f"User {config.get('config', {}).get('User')}")

    ldd = subprocess.run(["ldd", str(COLLECTOR_BIN)], capture_output=True, text=True, check=False).stdout
    libs = {line.split("=>")[-1].split("(")[0].strip() for line in ldd.splitlines()
            if "(" in line and not line.strip().startswith("linux-vdso")}
    expected = {"/usr/local/bin/meshaudit-collector", "/etc/ssl/certs/ca-certificates.crt", "/etc/passwd",
                "/etc/group", "/etc/nsswitch.conf", *libs}
    files = {p for p, m in layer_paths(image).items() if m.isfile()} if image else set()
    problems = [f"unexpected file {p}" for p in sorted(files - expected)]
    problems += [f"missing {p}" for p in sorted(expected - files)]
    binary = layer_paths(image).get("/usr/local/bin/meshaudit-collector") if image else None
    report.check("release collector image: exactly the binary, its ldd libraries + loader, CA bundle, users; no shell",
                 problems, f"{len(files)} files, {len(libs)} libraries")

    layout = tmp / "collector-layout"
    with tarfile.open(archive) as tar:
        tar.extractall(layout, filter="data")
    try:
        rootfs = umoci_unpack(layout, VERSION, tmp / "collector-bundle")
    except RuntimeError as e:
        report.fail("release collector image: umoci unpack", str(e))
        return None, config
    same = (rootfs / "usr/local/bin/meshaudit-collector").read_bytes() == COLLECTOR_BIN.read_bytes()
    report.check("release collector image: umoci unpack; the binary is target/release's",
                 [] if same and binary is not None else ["the unpacked binary differs from target/release/meshaudit-collector"])
    report.check("release collector image: --version inside its own root filesystem (chroot, image User)",
                 version_problems(rootfs, config))
    report.check("release collector image: serve answers /healthz on SQLite (default DATABASE_URL in WorkingDir)",
                 serve_problems(rootfs, config, tmp / "collector-serve.log"))

    # The run above must have used the image's libraries, not the host's: without one it fails.
    lib = next((rootfs / p.lstrip("/") for p in sorted(libs) if "libm.so" in p), None)
    if lib is None or not lib.is_file():
        report.fail("self-test: the collector image without libm fails to start", "no libm in the image")
    else:
        hidden = lib.with_name(lib.name + ".hidden")
        lib.rename(hidden)
        try:
            problems = [] if version_problems(rootfs, config) else ["it still ran: the host's libraries leak in"]
        finally:
            hidden.rename(lib)
        report.check("self-test: the collector image without libm fails to start", problems, "detected")
    return rootfs, config


def overlay_checks(report: Report, tree: Path, summary: dict, images: dict, https: bool) -> dict | None:
    what = "k8s/release (WASM_URL https://)" if https else "k8s/release"
    try:
        objs = kustomize(tree / "release")
    except (ValueError, subprocess.TimeoutExpired) as e:
        report.fail(f"release {what}: kubectl kustomize", str(e))
        return None
    report.ok(f"release {what}: kubectl kustomize", f"{len(objs)} objects")
    problems = []
    for obj in objs:
        found, _ = validate_object(obj)
        problems += [f"{obj_name(obj)}: {p}" for p in found]
    report.check(f"release {what}: every object passes validate.py's checks", problems)

    collector = collector_container(objs)
    want_image = f"{REGISTRY}/collector@{images['collector'].manifest_digest}"
    wp = next((o for o in objs if o.get("kind") == "WasmPlugin"), None)
    problems = [] if collector and collector.get("image") == want_image else \
        [f"collector image is {collector and collector.get('image')!r}, want {want_image}"]
    if wp is None:
        problems.append("no WasmPlugin rendered")
    else:
        digest = images["filter"].manifest_digest
        want = (WASM_URL, hashlib.sha256(WASM.read_bytes()).hexdigest()) if https else \
            (f"oci://{REGISTRY}/filter@{digest}", digest.removeprefix("sha256:"))
        got = (wp["spec"].get("url"), wp["spec"].get("sha256"))
        if got != want:
            problems.append(f"WasmPlugin url/sha256 {got}, want {want}")
        problems += wasmplugin_problems(wp, {"app.kubernetes.io/name": "meshaudit-collector"}, FILTER_ENV)
    report.check(f"release {what}: digests equal the artifacts'", problems,
                 "collector by manifest digest, WasmPlugin " + ("https + module sha256" if https else "oci by manifest digest"))
    return wp


def other_bases(report: Report, tree: Path, summary: dict) -> None:
    """RELEASE_BASE=base and =single-node: the same pins on the other collector variants."""
    for base in ("base", "single-node"):
        directory = tree / f"release-{base}"
        directory.mkdir()
        kwargs = {"version": VERSION, "revision": summary["revision"]}
        (directory / "kustomization.yaml").write_text(overlay.kustomization(
            **kwargs, base=base, collector_repo=f"{REGISTRY}/collector",
            collector_digest=summary["collector"]["digest"]), encoding="utf-8")
        (directory / "wasm-pin.yaml").write_text(overlay.wasm_pin(
            **kwargs, url=summary["overlay"]["wasm_url"], sha256=summary["overlay"]["wasm_sha256_pin"]),
            encoding="utf-8")
        try:
            objs = kustomize(directory)
        except (ValueError, subprocess.TimeoutExpired) as e:
            report.fail(f"release RELEASE_BASE={base}: kubectl kustomize", str(e))
            continue
        problems = [f"{obj_name(o)}: {p}" for o in objs for p in validate_object(o)[0]]
        collector = collector_container(objs)
        if not collector or collector.get("image") != f"{REGISTRY}/collector@{summary['collector']['digest']}":
            problems.append(f"collector image is {collector and collector.get('image')!r}")
        report.check(f"release RELEASE_BASE={base}: renders, validates, pins the collector", problems,
                     f"{len(objs)} objects")


def self_tests(report: Report, out: Path, summary: dict) -> None:
    """Broken inputs each check must refuse."""
    problems = []
    if licenses.problems([{"name": "gpl-crate", "version": "1.0.0", "license": "GPL-3.0-only"}]) == []:
        problems.append("a GPL-3.0-only crate passed the license check")
    if licenses.problems([{"name": "dual", "version": "1.0.0", "license": "MIT OR GPL-3.0-only"}]) != []:
        problems.append("MIT OR GPL-3.0-only was refused (one allowed choice is enough)")
    if licenses.problems([{"name": "both", "version": "1.0.0", "license": "MIT AND GPL-3.0-only"}]) == []:
        problems.append("MIT AND GPL-3.0-only passed")
    if licenses.problems([{"name": "bad", "version": "1.0.0", "license": "MIT OR (Apache-2.0"}]) == []:
        problems.append("a malformed license expression passed")
    mpl = [{"name": "mpl-crate", "version": "1.0.0", "license": "MPL-2.0"}]
    if licenses.problems(mpl, licenses.ALLOWED) == [] or licenses.problems(mpl, licenses.ALLOWED_TOOLING) != []:
        problems.append("MPL-2.0 must be refused in a shipped artifact and allowed in test tooling")
    report.check("self-test: license check refuses GPL, shipped MPL and malformed expressions", problems, "detected")

    files = read_archive(out / summary["filter"]["archive"])
    corrupt = dict(files)
    layer = next(k for k, v in files.items() if k.startswith("blobs/") and v[:2] == b"\x1f\x8b")
    corrupt[layer] = files[layer][:-1] + bytes([files[layer][-1] ^ 1])
    _, found = parse(corrupt)
    problems = [] if found else ["a corrupted layer blob was not detected"]
    image, _ = parse(files)
    wrong = copy.copy(image)
    wrong.layer_media_types = ["application/vnd.docker.image.rootfs.diff.tar.gzip"]
    try:
        istio_wasm(wrong)
        problems.append("a layer of the wrong media type was accepted as Istio's compat variant")
    except ValueError:
        pass
    report.check("self-test: corrupted archive and wrong Wasm layer type refused", problems, "detected")

    problems = []
    for env, why in (({}, "no VERSION"), ({"VERSION": "1.2"}, "VERSION=1.2 (not x.y.z)"),
                     ({"VERSION": "1.2.3", "WASM_URL": "http://plain.example.com/m.wasm"}, "an http:// WASM_URL")):
        run = subprocess.run(["bash", str(ROOT / "scripts" / "release.sh")], cwd=ROOT, capture_output=True,
                             text=True, timeout=60, check=False,
                             env={k: v for k, v in os.environ.items() if k not in ("VERSION", "WASM_URL")}
                             | {"MESHAUDIT_PYTHON": sys.executable} | env)
        if run.returncode != 2:
            problems.append(f"make release with {why} exited {run.returncode}, want 2 (usage)")
    report.check("self-test: make release refuses a missing or malformed VERSION and a non-https WASM_URL",
                 problems, "detected")

    label = release_main.public_source("https://release-user:s3cret-token@git.example.com/org/meshaudit.git")
    report.check("self-test: credentials in the origin URL never reach the source label",
                 [] if label == "https://git.example.com/org/meshaudit" else [f"label would be {label!r}"], "detected")


def run(report: Report) -> None:
    global COLLECTOR_BIN, WASM  # noqa: PLW0603 - rebound once, to the snapshot below
    if not prerequisites(report):
        return
    with tempfile.TemporaryDirectory(prefix="meshaudit-release-") as tmp_name:
        tmp = Path(tmp_name)
        # Snapshots: a rebuild of target/ or dist/ while this runs must not mix two builds.
        (tmp / "inputs").mkdir()
        COLLECTOR_BIN = Path(shutil.copy2(COLLECTOR_BIN, tmp / "inputs" / "meshaudit-collector"))
        WASM = Path(shutil.copy2(WASM, tmp / "inputs" / "meshaudit_filter.wasm"))
        tree = tmp / "k8s"
        # kustomize resolves ../postgres and ../istio next to the overlay: work on a copy of k8s/.
        shutil.copytree(K8S, tree, ignore=shutil.ignore_patterns("release"))
        out = tmp / "dist"
        try:
            summary, seconds = release(out, tree)
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            report.fail("release: make release (scripts/release/main.py)", str(e))
            return
        report.ok("release: scripts/release/main.py", f"{seconds:.1f} s")
        images = archive_checks(report, summary, out)
        if any(v is None for v in images.values()):
            return

        rootfs, config = collector_checks(report, images["collector"], out / summary["collector"]["archive"], tmp)

        wasm_bytes = b""
        try:
            wasm_bytes = istio_wasm(images["filter"])
        except ValueError as e:
            report.fail("release filter image: Istio compat variant", str(e))
        report.check("release filter image: plugin.wasm (as Istio extracts it) is byte-identical to dist/meshaudit_filter.wasm",
                     [] if wasm_bytes == WASM.read_bytes() else ["the module in the image differs"],
                     f"{len(wasm_bytes)} bytes, sha256 {hashlib.sha256(wasm_bytes).hexdigest()[:16]}…")
        sums = (out / "meshaudit_filter.wasm.sha256").read_text(encoding="utf-8").split()
        report.check("release dist/meshaudit_filter.wasm.sha256 (https:// hosting)",
                     [] if sums == [hashlib.sha256(WASM.read_bytes()).hexdigest(), "meshaudit_filter.wasm"]
                     else [f"says {sums}"])

        wp = overlay_checks(report, tree, summary, images, https=False)
        other_bases(report, tree, summary)
        if wp is not None and rootfs is not None and wasm_bytes:
            extracted = tmp / "plugin.wasm"
            extracted.write_bytes(wasm_bytes)
            report.check("release filter image in the real Envoy (overlay's WasmPlugin config) -> collector image",
                         live_problems(ENVOY, wp, extracted, rootfs, config, tmp),
                         "request audited, event arrived verified")

        if wasm_bytes:
            report.check("release: published with skopeo copy to a real registry, pulled as Istio pulls",
                         publish_problems(tmp, {n: out / summary[n]["archive"] for n in ("collector", "filter")},
                                          {n: summary[n]["digest"] for n in ("collector", "filter")}, VERSION,
                                          wasm_bytes),
                         "served manifest digests = pinned digests; plugin.wasm identical")

        for name in ("collector", "filter"):
            path = out / summary[name]["sbom"]
            report.check(f"release {path.name}: CycloneDX SBOM", sbom_problems(path, name, summary[name]["digest"]))

        count, bad = licenses.check(ROOT)
        report.check("release: every dependency's license is allowed (offline, cargo metadata)", bad,
                     f"{count} crates")

        # Reproducible, and the https:// variant of the overlay.
        out2 = tmp / "dist2"
        try:
            summary2, _ = release(out2, tree, "--wasm-url", WASM_URL, "--skip-license-check")
        except (RuntimeError, subprocess.TimeoutExpired) as e:
            report.fail("release: second run (WASM_URL)", str(e))
            return
        problems = [f"{summary[n]['archive']} differs between two runs" for n in ("collector", "filter")
                    if sha((out / summary[n]["archive"]).read_bytes()) != sha((out2 / summary2[n]["archive"]).read_bytes())]
        report.check("release: reproducible (a second run gives byte-identical archives)", problems)
        overlay_checks(report, tree, summary2, images, https=True)
        self_tests(report, out, summary)


def main() -> int:
    report = Report()
    started = time.monotonic()
    try:
        run(report)
    except Exception as e:  # noqa: BLE001 - a crash is a failed check, reported like the others
        report.fail("release_check.py", f"crashed: {type(e).__name__}: {e}")
    print(f"({time.monotonic() - started:.1f} s)")
    print(f"{report.passed} passed, {report.failed} failed")
    return 1 if report.failed else 0


if __name__ == "__main__":
    sys.exit(main())
