"""Odam-Train for RoI heads (filled in by the Odam-Train work)."""


class OdamTrainRoIMixin:
    """Adds ``loss_odam_con`` / ``loss_odam_sep`` to a RoI head's losses."""
