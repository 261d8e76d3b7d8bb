"""The test data: a seeded tree of small files and a flat S3 prefix of tiny objects."""

import os
import random


def make_tree(root, n):
    rnd = random.Random(42)
    for i in range(n):
        d = os.path.join(root, f"dir-{i // 100:03d}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"file-{i:05d}.dat"), "wb") as f:
            f.write(rnd.randbytes(rnd.randint(512, 4096)))


def make_flat(root, n):
    os.makedirs(root, exist_ok=True)
    payload = b"x" * 63 + b"\n"
    for i in range(n):
        with open(os.path.join(root, f"obj-{i:06d}"), "wb") as f:
            f.write(payload)
