"""Builds data/photos/{train,val}: 144x144 JPEG tiles of public-domain and CC0 photographs from
scikit-image's sample data (Debian package python3-skimage 0.19.3-8), for the demo on trained
networks (128x128 crops). Validation tiles come from two photos that no training tile comes
from (the cat and the espresso), so a reconstruction of them shows what an inverter learned
about images in general, not about the photos it was trained on.

    apt-get download python3-skimage && dpkg -x python3-skimage_*.deb /tmp/sk
    python3 data/make_photo_set.py /tmp/sk/usr/lib/python3/dist-packages/skimage/data

Training photos are resized (Pillow, bilinear) so that the shorter side is 288 and,
separately, 432 pixels and cut into 144x144 tiles every 96 pixels from the top-left corner
(neighbouring tiles overlap by a third; training takes random 128x128 crops of them).
Validation photos are resized to 300 and 400 and cut into non-overlapping tiles (validation
takes their centred 128x128 crops). Nearly flat tiles (standard deviation of the pixel values
below 12: the black sky of the Hubble field, the retina's border) are dropped. Grayscale photos
stay grayscale (the loader converts them to RGB). Written as JPEG at quality 92. Needs numpy
and Pillow.
"""
import pathlib
import sys

import numpy as np
from PIL import Image

# file in skimage/data -> short name; licences in data/README.md
TRAIN = {
    "astronaut.png": "astronaut",
    "rocket.jpg": "rocket",
    "hubble_deep_field.jpg": "hubble",
    "retina.jpg": "retina",
    "ihc.png": "ihc",
    "camera.png": "camera",
    "brick.png": "brick",
    "grass.png": "grass",
    "gravel.png": "gravel",
    "cell.png": "cell",
    "clock_motion.png": "clock",
    "coins.png": "coins",
}
VAL = {
    "chelsea.png": "chelsea",
    "coffee.png": "coffee",
}
TILE = 144


def tiles(photo, short, step):
    w, h = photo.size
    s = short / min(w, h)
    a = np.asarray(photo.resize((round(w * s), round(h * s)), Image.BILINEAR))
    for r in range(0, a.shape[0] - TILE + 1, step):
        for c in range(0, a.shape[1] - TILE + 1, step):
            t = a[r:r + TILE, c:c + TILE]
            if t.std() >= 12:
                yield f"s{short}_y{r}_x{c}", t


src = pathlib.Path(sys.argv[1])
out = pathlib.Path(__file__).resolve().parent / "photos"
counts = {}
for split, photos, scales, step in (
    ("train", TRAIN, (288, 432), 96),
    ("val", VAL, (300, 400), TILE),
):
    (out / split).mkdir(parents=True, exist_ok=True)
    for old in (out / split).glob("*.jpg"):
        old.unlink()
    counts[split] = 0
    for fname, name in photos.items():
        photo = Image.open(src / fname)
        photo = photo.convert("L" if photo.mode in ("L", "I;16") else "RGB")
        for short in scales:
            for stem, t in tiles(photo, short, step):
                Image.fromarray(t).save(out / split / f"{name}_{stem}.jpg", quality=92)
                counts[split] += 1
print(counts)
