"""Odam-Train for dense heads (filled in by the Odam-Train work)."""


class OdamTrainDenseMixin:
    """Adds ``loss_odam_con`` / ``loss_odam_sep`` to a dense head's losses."""
