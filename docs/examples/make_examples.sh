#!/bin/sh
# Rebuild the finishing pictures in docs/examples/ with the maskd CLI (run from the repository root).
#
# Source photos: the ClearGrasp sample set (Sajjan et al., ICRA 2020; Apache-2.0) in
# ../shared/evaldata/cleargrasp (MASKD_SHARED overrides ../shared). This environment has no model
# weights, so the cut-outs come from the photos' ground-truth masks via `maskd refine` (the same
# edge refinement and colour decontamination `maskd remove` applies to a model's matte); the
# finishing itself is exactly what `maskd remove` does with the same options.
set -eu
PY=${PYTHON:-.venv/bin/python}
CG=${MASKD_SHARED:-../shared}/evaldata/cleargrasp
OUT=docs/examples
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
maskd() { "$PY" -m server "$@"; }

for n in 080 123 153; do
    maskd refine "$CG/cg_000000${n}_image.png" --mask "$CG/cg_000000${n}_alpha.png" \
        -o "$TMP/alpha-$n.png" --rgba-out "$TMP/cg$n.png" -q
done

# after: marketplace preset (white, soft shadow, 5% margin, square), at 600x600 for the docs
maskd finish "$TMP/cg123.png" -o "$OUT/cg123-marketplace.jpg" --preset marketplace --canvas 600x600 \
    --no-sidecar --overwrite -q
# after: studio preset (grey backdrop, drop shadow, 4:5), at 480x600
maskd finish "$TMP/cg080.png" -o "$OUT/cg080-studio.jpg" --preset studio --canvas 480x600 \
    --no-sidecar --overwrite -q
# after: the photo's own background, blurred, with a contact shadow; whole frame kept
maskd finish "$TMP/cg153.png" -o "$OUT/cg153-blur.jpg" --background blur:2% --shadow contact \
    --canvas 600x338 --crop none --overwrite -q
# after: a long drop shadow on a transparent background (WebP with alpha), cropped with margin
maskd finish "$TMP/cg123.png" -o "$OUT/cg123-drop.webp" --shadow drop,direction=30,distance=80% \
    --crop subject+shadow --margin 4% --canvas 600x300 --overwrite -q

# before: the photos themselves, 600 px wide
"$PY" - "$CG" "$OUT" <<'PYEOF'
import sys
import cv2
cg, out = sys.argv[1], sys.argv[2]
for n in ("080", "123", "153"):
    img = cv2.imread(f"{cg}/cg_000000{n}_image.png")
    small = cv2.resize(img, (600, round(img.shape[0] * 600 / img.shape[1])), interpolation=cv2.INTER_AREA)
    cv2.imwrite(f"{out}/cg{n}-before.jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 85])
PYEOF
ls -l "$OUT"
