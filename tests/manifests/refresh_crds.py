"""Regenerates istio-crds.yaml: the Istio CRDs meshaudit's manifests use, trimmed for validation.

Usage: python tests/manifests/refresh_crds.py PATH/TO/customresourcedefinitions.gen.yaml

Keeps the CRDs named in KEEP with every served version and its OpenAPI v3 schema; drops
descriptions and printer columns, which validation does not read. Run it when moving to a
newer Istio and commit the result with the snapshot date in SNAPSHOT.
"""

import sys

import yaml

KEEP = (
    "wasmplugins.extensions.istio.io",
    "envoyfilters.networking.istio.io",
    "serviceentries.networking.istio.io",
    "destinationrules.networking.istio.io",
    "sidecars.networking.istio.io",
)
SNAPSHOT = "2026-07-21"
HEADER = f"""\
# Istio CustomResourceDefinitions used by meshaudit's manifests (WasmPlugin, EnvoyFilter,
# ServiceEntry, DestinationRule, Sidecar), for tests/manifests/validate.py.
# Origin: istio/api kubernetes/customresourcedefinitions.gen.yaml, snapshot {SNAPSHOT}
# (Apache License 2.0, Istio Authors). Trimmed by tests/manifests/refresh_crds.py:
# descriptions and printer columns removed; schemas otherwise unchanged.
"""


def strip_descriptions(node):
    if isinstance(node, dict):
        return {k: strip_descriptions(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [strip_descriptions(v) for v in node]
    return node


def trim(crd):
    versions = []
    for version in crd["spec"]["versions"]:
        if not version.get("served"):
            continue
        version = dict(version)
        version.pop("additionalPrinterColumns", None)
        version["schema"] = strip_descriptions(version["schema"])
        versions.append(version)
    return {
        "apiVersion": crd["apiVersion"],
        "kind": crd["kind"],
        "metadata": {"name": crd["metadata"]["name"]},
        "spec": {**crd["spec"], "versions": versions},
    }


def main(source):
    with open(source, encoding="utf-8") as f:
        crds = [d for d in yaml.safe_load_all(f) if d]
    by_name = {d["metadata"]["name"]: d for d in crds}
    missing = [name for name in KEEP if name not in by_name]
    if missing:
        sys.exit(f"{source}: missing CRDs {missing}")
    trimmed = [trim(by_name[name]) for name in KEEP]
    with open(__file__.replace("refresh_crds.py", "istio-crds.yaml"), "w", encoding="utf-8") as f:
        f.write(HEADER)
        for crd in trimmed:
            f.write("---\n")
            yaml.safe_dump(crd, f, sort_keys=False, width=100)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(sys.argv[1])
