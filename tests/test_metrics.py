import numpy as np
import pytest

from tunejury_align.reward.metrics import spearman


def test_spearman_hand_computed_with_ties():
    # ranks a: [1, 2.5, 2.5, 4]; b: [1, 2, 3, 4] -> pearson of ranks = 4.5 / sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [10, 20, 30, 40]) == pytest.approx(4.5 / np.sqrt(4.5 * 5.0))
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert np.isnan(spearman([1, 1, 1], [1, 2, 3]))  # undefined for a constant side
    with pytest.raises(ValueError):
        spearman([1], [1])
