"""Publishes the release archives to a real registry (Debian's docker-registry, the CNCF
distribution server, on loopback) exactly as docs/deploy.md says (`skopeo copy
--preserve-digests oci-archive:… docker://…`), then pulls the filter the way Istio's agent does:
manifest by tag over the registry API, its sha256 compared with the pinned digest, the last layer
fetched by digest and plugin.wasm taken out of it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import posixpath
import subprocess
import tarfile
import urllib.request
from pathlib import Path

from live_sidecar import NO_PROXY, free_port, tail, wait_until
from release_collector import stop

ACCEPT = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"


def start_registry(tmp: Path) -> tuple[subprocess.Popen, int, Path]:
    port = free_port()
    config = tmp / "registry.yml"
    config.write_text(
        "version: 0.1\nlog: {level: error}\n"
        f"storage: {{filesystem: {{rootdirectory: {tmp / 'registry-storage'}}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n", encoding="utf-8")
    log = tmp / "registry.log"
    with open(log, "w", encoding="utf-8") as out:
        process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=out, stderr=subprocess.STDOUT)
    wait_until(lambda: NO_PROXY.open(f"http://127.0.0.1:{port}/v2/", timeout=2).status == 200, 20,
               "docker-registry did not answer /v2/")
    return process, port, log


def get(port: int, path: str, accept: str = "*/*") -> bytes:
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Accept": accept})
    with NO_PROXY.open(req, timeout=10) as r:
        return r.read()


def push(archive: Path, port: int, repo: str, tag: str) -> list[str]:
    run = subprocess.run(["skopeo", "copy", "--preserve-digests", "--dest-tls-verify=false",
                          f"oci-archive:{archive}", f"docker://127.0.0.1:{port}/{repo}:{tag}"],
                         capture_output=True, text=True, timeout=120, check=False)
    return [] if run.returncode == 0 else [f"skopeo copy: {run.stderr.strip()[-300:]}"]


def publish_problems(tmp: Path, archives: dict[str, Path], digests: dict[str, str], tag: str,
                     wasm: bytes) -> list[str]:
    try:
        process, port, log = start_registry(tmp)
    except (OSError, TimeoutError) as e:
        return [f"cannot start docker-registry (make setup installs it): {e}"]
    try:
        problems = []
        for name, archive in archives.items():
            problems += push(archive, port, f"meshaudit/{name}", tag)
        if problems:
            return problems + [f"registry log: {tail(log)}"]
        for name, digest in digests.items():
            # What Istio's agent checks the WasmPlugin's sha256 against: the manifest as served.
            served = get(port, f"/v2/meshaudit/{name}/manifests/{tag}", ACCEPT)
            if "sha256:" + hashlib.sha256(served).hexdigest() != digest:
                problems.append(f"{name}: the registry serves a manifest with another digest than {digest}")
            by_digest = get(port, f"/v2/meshaudit/{name}/manifests/{digest}", ACCEPT)
            if by_digest != served:
                problems.append(f"{name}: pulling by digest gives another manifest than by tag")
        manifest = json.loads(get(port, f"/v2/meshaudit/filter/manifests/{digests['filter']}", ACCEPT))
        layer = manifest["layers"][-1]
        blob = get(port, f"/v2/meshaudit/filter/blobs/{layer['digest']}")
        with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob)), mode="r:") as tar:
            found = [tar.extractfile(m).read() for m in tar.getmembers()
                     if posixpath.basename(m.name) == "plugin.wasm" and m.isfile()]
        if found != [wasm]:
            problems.append("plugin.wasm pulled from the registry differs from dist/meshaudit_filter.wasm")
        return problems
    finally:
        stop([process])
