"""Writes viridis.csv and jet.csv (256 levels each, as matplotlib samples them) and the
uniformity statistics scikit-image's CIEDE2000 gives for them, which
crates/deepsim-metrics/tests/colormap.rs holds deepsim's `check_colormap` to.

Run with matplotlib 3.11 and scikit-image 0.26 (numpy 2):

    python3 data/colormaps/export_colormaps.py
"""
import json
import os

import matplotlib
import numpy as np
from skimage.color import deltaE_ciede2000, rgb2lab

here = os.path.dirname(os.path.abspath(__file__))
stats = {}
for name in ["viridis", "jet"]:
    rgb = matplotlib.colormaps[name](np.linspace(0.0, 1.0, 256))[:, :3]
    with open(os.path.join(here, f"{name}.csv"), "w") as f:
        f.write("r,g,b\n")
        for r, g, b in rgb:
            f.write(f"{r:.8f},{g:.8f},{b:.8f}\n")
    # Read back what was written, so the statistics are those of the file.
    rgb = np.loadtxt(os.path.join(here, f"{name}.csv"), delimiter=",", skiprows=1)
    lab = rgb2lab(rgb[None, :, :])[0]
    steps = deltaE_ciede2000(lab[:-1], lab[1:])
    dl = np.diff(lab[:, 0])
    rising = lab[-1, 0] >= lab[0, 0]
    stats[name] = {
        "mean_step": float(steps.mean()),
        "min_step": float(steps.min()),
        "max_step": float(steps.max()),
        "step_cv": float(steps.std() / steps.mean()),
        "total": float(steps.sum()),
        "lightness_reversals": int(np.sum(dl <= 0) if rising else np.sum(dl >= 0)),
    }
out = os.path.join(here, "..", "..", "crates", "deepsim-metrics", "tests", "fixtures",
                   "colormap_checks.json")
with open(out, "w") as f:
    json.dump(stats, f, indent=1, sort_keys=True)
    f.write("\n")
print(json.dumps(stats, indent=1))
