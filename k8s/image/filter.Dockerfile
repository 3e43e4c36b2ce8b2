# The filter as an OCI image Istio's WasmPlugin can pull (the "compat" variant: one layer
# holding plugin.wasm). Build from dist/ after `make wasm`:
#   docker build --provenance=false -f k8s/image/filter.Dockerfile -t ghcr.io/meshaudit/filter:0.1.0 dist/
FROM scratch
COPY meshaudit_filter.wasm ./plugin.wasm
