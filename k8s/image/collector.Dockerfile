# The collector image (ghcr.io/meshaudit/collector). Build from the repository root:
#   docker build -f k8s/image/collector.Dockerfile -t ghcr.io/meshaudit/collector:0.1.0 .
# collector.Dockerfile.dockerignore keeps target/, dist/, .venv/ and .git/ out of the context.
FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p meshaudit-collector \
 && install -D target/release/meshaudit-collector /out/meshaudit-collector

# distroless "nonroot" runs as uid/gid 65532, as k8s/base's securityContext expects; no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/meshaudit-collector /usr/local/bin/meshaudit-collector
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/meshaudit-collector"]
CMD ["serve"]
