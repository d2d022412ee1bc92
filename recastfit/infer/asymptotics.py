"""pyhf's asymptotic CLs formulas (numpy only; shared by both engines)."""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr

__all__ = ["cls_from_q", "EXPECTED_NSIGMA"]

EXPECTED_NSIGMA = np.array([2.0, 1.0, 0.0, -1.0, -2.0])  # pyhf order: CLs_exp at -2 ... +2 sigma


def cls_from_q(q, q_a, test_stat: str = "qtilde"):
    """Observed CLs and the five expected CLs from the test statistic on data and on Asimov data.

    >>> obs, exp = cls_from_q(np.array([4.0]), np.array([4.0]))
    >>> round(float(obs[0]), 4), round(float(exp[0, 2]), 4)
    (0.0455, 0.0455)
    """
    q = np.maximum(np.asarray(q, float), 0.0)
    q_a = np.maximum(np.asarray(q_a, float), 0.0)
    sq, sqa = np.sqrt(q), np.sqrt(q_a)
    if test_stat == "qtilde":
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(sq <= sqa, sq - sqa, (q - q_a) / (2.0 * np.where(sqa > 0, sqa, 1.0)))
    else:
        t = sq - sqa
    cls_obs = ndtr(-(t + sqa)) / ndtr(-t)
    n = EXPECTED_NSIGMA[None, :]
    cls_exp = ndtr(-(n + sqa[..., None])) / ndtr(-n)
    return cls_obs, cls_exp
