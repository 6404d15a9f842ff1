"""Writes the numpy RandomState fixture for proxima's MT19937 (common/src/env/minatar/rng.rs).

    .venv/bin/python tests/python/minatar_rng_fixture.py > common/src/env/minatar/numpy_random_state.json

For each seed: a RandomState(seed) (an int up to 2**32 - 1; larger seeds as RandomState([low 32 bits, high 32
bits]), which is how proxima maps a u64 seed beyond numpy's range) and a fixed, pseudo-random interleaving of the
calls MinAtar makes: rand(), randint(low, high) over many ranges (including 1, where numpy draws nothing, and
ranges beyond 32 bits), randint(low, high, n), and raw 32-bit draws. Floats are written with repr (exact).
"""

import json
import random
import sys

import numpy as np

SEEDS = [0, 1, 42, 5489, 12345, 2**31, 2**32 - 1, 2**32, 2**40 + 7, 2**64 - 1]
RANGES = [
    (0, 1), (5, 6), (0, 2), (0, 3), (1, 6), (1, 9), (0, 5), (0, 7), (0, 8), (0, 9), (0, 100), (-3, 4),
    (0, 1000003), (0, 2**31), (0, 2**31 + 1), (0, 2**32 - 1), (0, 2**32), (0, 2**32 + 1), (-(2**40), 2**40),
]


def state(seed: int) -> np.random.RandomState:
    if seed <= 2**32 - 1:
        return np.random.RandomState(seed)
    return np.random.RandomState([seed & 0xFFFFFFFF, seed >> 32])


def main() -> None:
    plan = random.Random(7)
    cases = []
    for seed in SEEDS:
        rs = state(seed)
        ops = []
        for _ in range(150):
            kind = plan.choice(["rand", "randint", "randint", "randint_n", "u32"])
            if kind == "rand":
                ops.append(["rand", repr(float(rs.rand()))])
            elif kind == "randint":
                lo, hi = plan.choice(RANGES)
                ops.append(["randint", lo, hi, int(rs.randint(lo, hi))])
            elif kind == "randint_n":
                lo, hi = plan.choice(RANGES[:12])
                ops.append(["randint_n", lo, hi, [int(v) for v in rs.randint(lo, hi, 8)]])
            else:
                ops.append(["u32", int(rs.randint(0, 2**32, dtype=np.uint32))])
        cases.append({"seed": seed, "ops": ops})
    json.dump({"numpy": np.__version__, "cases": cases}, sys.stdout, separators=(",", ":"))
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
