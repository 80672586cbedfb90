#!/usr/bin/env bash
# Make a Python base image without Docker Hub, for machines that reach only package registries (the project's CI):
# a Debian bookworm root filesystem from debootstrap (python3.11 with venv, the host's CA bundle so that pip inside
# `docker build --network host` trusts the same certificates) imported as an image. Real users build on
# python:3.11-slim; this image only stands in for it as the Dockerfile's PYTHON_IMAGE build argument:
#
#   scripts/docker-base-image.sh [TAG]        # default gptzoo-base:bookworm; prints the tag
#   docker build --network host --build-arg PYTHON_IMAGE=gptzoo-base:bookworm -t gptzoo:cpu .
#
# Cached: nothing happens when TAG already exists (docker rmi it to rebuild). Needs root, debootstrap and a Debian
# mirror (DEBIAN_MIRROR, default deb.debian.org); takes about 100 s.
set -euo pipefail
TAG="${1:-gptzoo-base:bookworm}"
SUITE="${DEBIAN_SUITE:-bookworm}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
CA_BUNDLE="${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}"

if docker image inspect "$TAG" >/dev/null 2>&1; then
  echo "$TAG"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "debootstrap is not installed (apt-get install -y debootstrap)" >&2; exit 1; }

ROOTFS="$(mktemp -d "${TMPDIR:-/tmp}/gptzoo-rootfs.XXXXXX")"
trap 'rm -rf "$ROOTFS"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,python-is-python3,ca-certificates \
  "$SUITE" "$ROOTFS" "$MIRROR" >"$ROOTFS.log" 2>&1 || { tail -n 20 "$ROOTFS.log" >&2; rm -f "$ROOTFS.log"; exit 1; }
rm -f "$ROOTFS.log"
# The host's bundle may hold a local CA that the registries' certificates chain to (a proxy); Debian's is kept too.
if [ -f "$CA_BUNDLE" ]; then
  cat "$CA_BUNDLE" >>"$ROOTFS/etc/ssl/certs/ca-certificates.crt"
fi
# Slim the image the way the official ones are: no apt lists or caches, no docs.
rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/cache/apt/archives/*.deb \
  "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/*
tar -C "$ROOTFS" -c . | docker import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$TAG" >/dev/null
echo "$TAG"
