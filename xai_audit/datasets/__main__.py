"""Command line: ``python -m xai_audit.datasets --out datasets/demo --seed 0``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from xai_audit.datasets.demo import DEMO_IMAGE_SIZE, DEMO_N_SAMPLES, generate_demo_dataset
from xai_audit.datasets.synthetic import make_synthetic_cxr


def main(argv: Sequence[str] | None = None) -> int:
    """Generate a synthetic data set and write it to disk; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m xai_audit.datasets",
        description="Write the seeded synthetic chest-radiograph data set (see datasets/README.md).",
    )
    parser.add_argument("--out", default="datasets/demo", help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n", type=int, default=DEMO_N_SAMPLES, help="number of images")
    parser.add_argument("--size", type=int, default=DEMO_IMAGE_SIZE, help="height and width")
    parser.add_argument("--depth", type=int, default=None, help="slices: write 3D volumes")
    parser.add_argument(
        "--fmt",
        choices=("png", "npy"),
        default=None,
        help="file format (default: png for 2D, npy for volumes)",
    )
    parser.add_argument("--control", action="store_true", help="inject no effect")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="regenerate even if an identical data set is already there",
    )
    args = parser.parse_args(argv)

    start = time.perf_counter()
    if args.depth is None and args.fmt in (None, "png"):
        manifest = generate_demo_dataset(
            args.out,
            n_samples=args.n,
            seed=args.seed,
            control=args.control,
            overwrite=args.overwrite,
            image_size=args.size,
        )
    else:
        data = make_synthetic_cxr(args.n, args.size, args.seed, args.control, args.depth)
        manifest = data.write(args.out, fmt=args.fmt)
    print(f"{manifest} ({time.perf_counter() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
