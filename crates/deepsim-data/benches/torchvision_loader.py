"""The PyTorch side of deepsim-data's loader benchmark: the same pipeline with torchvision.

    ~/.torch-venv/bin/python crates/deepsim-data/benches/torchvision_loader.py DIR RESIZE CROP

Reads every file in DIR with PIL, Resize(RESIZE) (shorter side), RandomCrop(CROP),
RandomHorizontalFlip(), ToTensor(); DataLoader with batch 64, shuffling, two workers kept
alive between epochs. One warm-up epoch, then ten timed; prints the median.
"""
import glob
import statistics
import sys
import time

import torch
from PIL import Image
from torchvision import transforms as T

root, resize, crop = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
files = sorted(glob.glob(root + "/*"))
tf = T.Compose([T.Resize(resize), T.RandomCrop(crop), T.RandomHorizontalFlip(), T.ToTensor()])


class Photos(torch.utils.data.Dataset):
    def __len__(self):
        return len(files)

    def __getitem__(self, i):
        return tf(Image.open(files[i]).convert("RGB"))


loader = torch.utils.data.DataLoader(Photos(), batch_size=64, shuffle=True, drop_last=True,
                                     num_workers=2, persistent_workers=True)
n = (len(files) // 64) * 64
for _ in loader:
    pass
times = []
for _ in range(10):
    t = time.perf_counter()
    for _ in loader:
        pass
    times.append(time.perf_counter() - t)
med = statistics.median(times)
print(f"torchvision crop {crop}: median {med * 1e3:.1f} ms per epoch of {n} -> {n / med:.0f} img/s")
