#!/usr/bin/env bash
# Regenerates the committed protobuf/gRPC Python code from proto/runstream/proto/v1/*.proto.
# The generator is pinned (grpcio-tools==1.85.1, see pyproject's dev extra), so
# regenerating an unchanged schema gives byte-identical files; tests/unit/test_generated.py
# fails when the committed files differ from a fresh generation.
#
# The include path is this folder itself: the .proto files sit at their import path
# (runstream/proto/v1/...), so any language's protoc needs only `-Iproto`.
#
# Usage: proto/generate.sh [OUT_DIR]   (default: proto/runstream/proto/v1 itself)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-python}"
out="${1:-}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
v1="$here/runstream/proto/v1"
"$python" -m grpc_tools.protoc -I"$here" \
  --python_out="$tmp" --pyi_out="$tmp" "$v1/events.proto" "$v1/query.proto"
"$python" -m grpc_tools.protoc -I"$here" --grpc_python_out="$tmp" "$v1/query.proto"
dest="${out:-$v1}"
mkdir -p "$dest"
cp "$tmp"/runstream/proto/v1/*.py "$tmp"/runstream/proto/v1/*.pyi "$dest"/
