"""Odam-Train losses (paper Sec. 3.2)."""
from .odam_train_loss import (NegativeMode, OdamTrainLoss, PairNorm,
                              ReferenceMode, odam_pair_losses,
                              odam_train_loss, select_odam_samples)

__all__ = [
    'NegativeMode', 'OdamTrainLoss', 'PairNorm', 'ReferenceMode',
    'odam_pair_losses', 'odam_train_loss', 'select_odam_samples'
]
