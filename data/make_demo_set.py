"""Builds data/demo/{train,val}: 80x80 JPEG tiles of public-domain and CC0 photographs from
scikit-image's sample data (Debian package python3-skimage 0.19.3-8).

    apt-get download python3-skimage && dpkg -x python3-skimage_*.deb /tmp/sk
    python3 data/make_demo_set.py /tmp/sk/usr/lib/python3/dist-packages/skimage/data

Each photo is resized (Pillow, bilinear) so that its shorter side is 240 and, separately, 400
pixels, and cut into non-overlapping 80x80 tiles from the top-left corner. Nearly flat tiles
(standard deviation of the pixel values below 10, e.g. the black sky of the Hubble field) are
dropped. Per photo, a seeded random eighth of the tiles (at least two) goes to validation.
Written as JPEG at quality 90. Needs numpy and Pillow.
"""
import pathlib
import sys

import numpy as np
from PIL import Image

# file in skimage/data -> short name; licences in data/README.md
PHOTOS = {
    "astronaut.png": "astronaut",
    "chelsea.png": "chelsea",
    "coffee.png": "coffee",
    "rocket.jpg": "rocket",
    "hubble_deep_field.jpg": "hubble",
    "retina.jpg": "retina",
    "ihc.png": "ihc",
    "camera.png": "camera",
    "brick.png": "brick",
    "grass.png": "grass",
    "gravel.png": "gravel",
}
TILE = 80
SCALES = (240, 400)

src = pathlib.Path(sys.argv[1])
out = pathlib.Path(__file__).resolve().parent / "demo"
rng = np.random.default_rng(2015)
counts = {"train": 0, "val": 0}
for split in counts:
    (out / split).mkdir(parents=True, exist_ok=True)
    for old in (out / split).glob("*.jpg"):
        old.unlink()
for fname, name in PHOTOS.items():
    photo = Image.open(src / fname)
    photo = photo.convert("L" if photo.mode in ("L", "I;16") else "RGB")
    tiles = []
    for short in SCALES:
        w, h = photo.size
        s = short / min(w, h)
        im = photo.resize((round(w * s), round(h * s)), Image.BILINEAR)
        a = np.asarray(im)
        for r in range(a.shape[0] // TILE):
            for c in range(a.shape[1] // TILE):
                t = a[r * TILE:(r + 1) * TILE, c * TILE:(c + 1) * TILE]
                if t.std() >= 10:
                    tiles.append((f"{name}_s{short}_r{r}_c{c}", t))
    n_val = max(2, len(tiles) // 8)
    val = set(rng.choice(len(tiles), size=n_val, replace=False).tolist())
    for i, (stem, t) in enumerate(tiles):
        split = "val" if i in val else "train"
        Image.fromarray(t).save(out / split / f"{stem}.jpg", quality=90)
        counts[split] += 1
print(counts)
