#!/usr/bin/env bash
# Builds the image and pushes it to the registry. Needs a Docker engine.
set -euo pipefail
: "${REGISTRY:?the registry host, e.g. registry.example.com:5000}"
: "${VERSION:?the version to build}"
image="${REGISTRY}/hello-world:${VERSION}"
docker build -t "$image" "$(dirname "$0")/.."
docker push "$image"
echo "pushed $image"
