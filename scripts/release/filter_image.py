"""The filter as the OCI image Istio's WasmPlugin pulls over `oci://`: the "compat" variant, one
`application/vnd.oci.image.layer.v1.tar+gzip` layer whose tar holds `plugin.wasm`.

Why this variant: Istio's agent (pkg/wasm/imagefetcher.go) tries, for an OCI manifest, the compat
variant first (last layer, that media type, a file named plugin.wasm) and only then the Solo
"oci" artifact variant; the compat form is also a plain image that every registry, skopeo and
`docker pull` accept, and it is what `docker build` of k8s/image/filter.Dockerfile produced.
Istio checks `sha256` against the image's manifest digest.
"""

from __future__ import annotations

from oci import Entry

PLUGIN_PATH = "/plugin.wasm"


def rootfs_entries(wasm: bytes) -> list[Entry]:
    return [Entry(PLUGIN_PATH, "file", 0o644, wasm)]


def image_config(*, created: str, labels: dict[str, str]) -> dict:
    # A single manifest (no index), so no platform is ever matched. linux/amd64 is what the
    # `docker build` of filter.Dockerfile recorded; the module itself runs on any architecture.
    return {"created": created, "architecture": "amd64", "os": "linux",
            "config": {"Labels": labels},
            "history": [{"created": created, "created_by": "scripts/release (meshaudit make release)"}]}
