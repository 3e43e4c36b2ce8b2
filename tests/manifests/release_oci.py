"""An independent reader of the OCI archives `make release` writes (it shares no code with
scripts/release/oci.py, so a writer bug cannot hide itself): structure, digests and sizes of every
descriptor, layer diff_ids, and the Wasm module extracted the way Istio's agent extracts it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import posixpath
import tarfile
from dataclasses import dataclass
from pathlib import Path

OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
MANIFEST = "application/vnd.oci.image.manifest.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"


@dataclass
class Parsed:
    index: dict
    manifest: dict
    manifest_digest: str
    config: dict
    layers: list[bytes]  # uncompressed layer tars, in order
    layer_media_types: list[str]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def read_archive(path: Path) -> dict[str, bytes]:
    files = {}
    with tarfile.open(path, mode="r:") as tar:
        for member in tar.getmembers():
            if member.isfile():
                f = tar.extractfile(member)
                files[posixpath.normpath(member.name)] = f.read() if f else b""
    return files


def parse(files: dict[str, bytes]) -> tuple[Parsed | None, list[str]]:
    """The image in an OCI layout, and every way it departs from the image-spec."""
    problems: list[str] = []

    def blob(desc: dict, what: str) -> bytes | None:
        digest = desc.get("digest", "")
        data = files.get("blobs/sha256/" + digest.removeprefix("sha256:"))
        if data is None:
            problems.append(f"{what}: blob {digest} missing")
            return None
        if sha(data) != digest:
            problems.append(f"{what}: blob content does not hash to {digest}")
        if len(data) != desc.get("size"):
            problems.append(f"{what}: size {desc.get('size')} but the blob has {len(data)} bytes")
        return data

    for name, data in files.items():
        if name.startswith("blobs/sha256/") and sha(data) != "sha256:" + name.rsplit("/", 1)[1]:
            problems.append(f"{name}: content does not match its name")
    try:
        layout = json.loads(files["oci-layout"])
        index = json.loads(files["index.json"])
    except (KeyError, json.JSONDecodeError) as e:
        return None, [f"not an OCI image layout: {e!r}"]
    if layout.get("imageLayoutVersion") != "1.0.0":
        problems.append(f"oci-layout: imageLayoutVersion {layout.get('imageLayoutVersion')!r}")
    if index.get("schemaVersion") != 2 or len(index.get("manifests", [])) != 1:
        return None, problems + ["index.json: want schemaVersion 2 and exactly one manifest"]
    mdesc = index["manifests"][0]
    if mdesc.get("mediaType") != MANIFEST:
        problems.append(f"index.json: manifest mediaType {mdesc.get('mediaType')!r}")
    mdata = blob(mdesc, "manifest")
    if mdata is None:
        return None, problems
    manifest = json.loads(mdata)
    if manifest.get("schemaVersion") != 2 or manifest.get("mediaType") != MANIFEST:
        problems.append("manifest: schemaVersion/mediaType wrong")
    if manifest.get("config", {}).get("mediaType") != CONFIG:
        problems.append(f"manifest: config mediaType {manifest.get('config', {}).get('mediaType')!r}")
    cdata = blob(manifest.get("config", {}), "config")
    config = json.loads(cdata) if cdata else {}
    layers, types = [], []
    for i, desc in enumerate(manifest.get("layers", [])):
        data = blob(desc, f"layer {i}")
        types.append(desc.get("mediaType", ""))
        if data is None:
            continue
        try:
            raw = gzip.decompress(data) if desc.get("mediaType", "").endswith("+gzip") else data
            with tarfile.open(fileobj=io.BytesIO(raw), mode="r:"):
                pass
        except (OSError, EOFError, tarfile.TarError) as e:
            problems.append(f"layer {i}: not a (gzipped) tar: {e}")
            continue
        layers.append(raw)
    diff_ids = config.get("rootfs", {}).get("diff_ids")
    if diff_ids != [sha(l) for l in layers]:
        problems.append("config: rootfs.diff_ids do not match the uncompressed layers")
    for key in ("architecture", "os"):
        if not config.get(key):
            problems.append(f"config: no {key}")
    return Parsed(index, manifest, sha(mdata), config, layers, types), problems


def istio_wasm(parsed: Parsed) -> bytes:
    """What Istio's agent loads from a compat-variant image: the last layer must be
    application/vnd.oci.image.layer.v1.tar+gzip and hold a file whose base name is plugin.wasm."""
    if not parsed.layers:
        raise ValueError("no layers")
    if parsed.layer_media_types[-1] != OCI_LAYER_GZIP:
        raise ValueError(f"last layer is {parsed.layer_media_types[-1]}, Istio's compat variant needs {OCI_LAYER_GZIP}")
    with tarfile.open(fileobj=io.BytesIO(parsed.layers[-1]), mode="r:") as tar:
        for member in tar.getmembers():
            if posixpath.basename(member.name) == "plugin.wasm" and member.isfile():
                f = tar.extractfile(member)
                return f.read() if f else b""
    raise ValueError("plugin.wasm not found in the last layer")


def layer_paths(parsed: Parsed) -> dict[str, tarfile.TarInfo]:
    out = {}
    for raw in parsed.layers:
        with tarfile.open(fileobj=io.BytesIO(raw), mode="r:") as tar:
            for member in tar.getmembers():
                out["/" + posixpath.normpath(member.name)] = member
    return out
