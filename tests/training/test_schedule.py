import math

import pytest

from fashion_ensemble.training.schedule import lc3_factor


def factors(total=100, warmup=0.1, finetune=0.2, low=0.05):
    return [lc3_factor(s, total, warmup, finetune, low) for s in range(total)]


def test_three_phases_by_hand():
    f = factors()
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)  # linear warm-up over 10 steps
    assert all(a < b for a, b in zip(f[:9], f[1:10]))
    # cosine from step 10 (1.0) to step 80 (the low rate); halfway (step 45) is the midpoint
    assert f[10] == pytest.approx(1.0)
    assert f[45] == pytest.approx(0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert all(a >= b for a, b in zip(f[10:80], f[11:80]))
    assert f[80:] == [0.05] * 20  # constant fine-tuning phase


def test_no_finetune_phase_decays_to_the_low_rate():
    f = factors(finetune=0.0)
    assert f[-1] == pytest.approx(0.05, abs=1e-3)
