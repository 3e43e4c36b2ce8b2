"""OCI image layouts written directly: deterministic layers, config, manifest, index, and the
`oci-archive` tarball that skopeo, umoci and podman read (no Docker daemon, no builder).

Everything here is pure except `write_archive`. Reproducible by construction: entries sorted,
owners and mtimes fixed (SOURCE_DATE_EPOCH), gzip without a name or timestamp, JSON with sorted
keys, so the same inputs give the same digests on every machine with the same zlib.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
# Istio's "compat" Wasm variant requires exactly this layer type (pkg/wasm/imagefetcher.go).
MEDIA_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"


@dataclass(frozen=True)
class Entry:
    """One file, directory or symlink of a layer, by its absolute path in the image."""
    path: str
    kind: str  # "file" | "dir" | "symlink"
    mode: int = 0o644
    data: bytes = b""
    target: str = ""
    uid: int = 0
    gid: int = 0


@dataclass
class Blob:
    media_type: str
    data: bytes
    annotations: dict = field(default_factory=dict)

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self) -> dict:
        d = {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        return d


@dataclass
class Image:
    """A single-manifest image: its blobs and the index that names it."""
    manifest: Blob
    config: Blob
    layers: list[Blob]
    ref_name: str

    @property
    def digest(self) -> str:
        """The manifest digest: what a registry, kustomize and Istio's `sha256` pin name."""
        return self.manifest.digest

    def blobs(self) -> list[Blob]:
        return [self.config, *self.layers, self.manifest]

    def index(self) -> bytes:
        desc = self.manifest.descriptor()
        desc["annotations"] = {REF_NAME: self.ref_name}
        return canonical_json({"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": [desc]})


def canonical_json(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def with_parents(entries: list[Entry]) -> list[Entry]:
    """Adds a 0755 directory entry for every parent not listed, so extractors never invent modes."""
    listed = {e.path for e in entries}
    out = list(entries)
    for e in entries:
        parts = e.path.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            parent = "/" + "/".join(parts[:i])
            if parent not in listed:
                listed.add(parent)
                out.append(Entry(parent, "dir", 0o755))
    return out


def layer_tar(entries: list[Entry], mtime: int) -> bytes:
    """An uncompressed layer tar: paths relative (no leading /), sorted, fixed owner and mtime."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in sorted(with_parents(entries), key=lambda e: e.path):
            info = tarfile.TarInfo(e.path.lstrip("/"))
            info.mtime, info.uid, info.gid, info.uname, info.gname = mtime, e.uid, e.gid, "", ""
            info.mode = e.mode
            if e.kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif e.kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, e.target
                tar.addfile(info)
            elif e.kind == "file":
                info.size = len(e.data)
                tar.addfile(info, io.BytesIO(e.data))
            else:
                raise ValueError(f"{e.path}: unknown entry kind {e.kind!r}")
    return buf.getvalue()


def gzip_deterministic(data: bytes) -> bytes:
    # mtime=0 and no file name in the header: the bytes depend on the content only.
    return gzip.compress(data, compresslevel=6, mtime=0)


def build_image(*, entries_per_layer: list[list[Entry]], config: dict, annotations: dict,
                layer_annotations: list[dict] | None, ref_name: str, mtime: int) -> Image:
    """Layers from entries, the config completed with rootfs.diff_ids, the manifest over both."""
    layers, diff_ids = [], []
    for i, entries in enumerate(entries_per_layer):
        raw = layer_tar(entries, mtime)
        diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
        notes = (layer_annotations or [{}] * len(entries_per_layer))[i]
        layers.append(Blob(MEDIA_LAYER_GZIP, gzip_deterministic(raw), notes))
    config = {**config, "rootfs": {"type": "layers", "diff_ids": diff_ids}}
    config_blob = Blob(MEDIA_CONFIG, canonical_json(config))
    manifest = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST, "config": config_blob.descriptor(),
                "layers": [l.descriptor() for l in layers], "annotations": annotations}
    return Image(Blob(MEDIA_MANIFEST, canonical_json(manifest)), config_blob, layers, ref_name)


def archive_bytes(image: Image, mtime: int) -> bytes:
    """The image as an OCI image layout in a tar: `oci-archive:` for skopeo and podman."""
    files = {"oci-layout": canonical_json({"imageLayoutVersion": "1.0.0"}), "index.json": image.index()}
    for blob in image.blobs():
        files["blobs/sha256/" + blob.digest.split(":", 1)[1]] = blob.data
    entries = [Entry("/" + p, "file", 0o644, d) for p, d in files.items()]
    return layer_tar(entries, mtime)


def write_archive(image: Image, path: Path, mtime: int) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(archive_bytes(image, mtime))
    tmp.replace(path)
