#!/usr/bin/env bash
# Registers the release with Kubernaut: service, version, image and the manifest
# template. A retry of the same build is harmless (the release is idempotent).
set -euo pipefail
: "${REGISTRY:?the registry host}"
: "${VERSION:?the version}"
: "${KUBERNAUT_URL:?the Kubernaut server}"
: "${KUBERNAUT_TOKEN:?an API token with the releaser role (Jenkins credentials kubernaut-token)}"
here="$(cd "$(dirname "$0")/.." && pwd)"
kubernaut release create \
  --service "${SERVICE:-hello-world}" \
  --version "$VERSION" \
  --image "${IMAGE:-${REGISTRY}/hello-world:${VERSION}}" \
  --template "$here/kubernetes.yaml" \
  --attr "replicas=${REPLICAS:-2}" \
  --comment "${BUILD_TAG:-manual build} ${GIT_COMMIT:-}"
