"""Datasets: checked CrowdHuman ``.odgt`` reading."""
from .crowdhuman import OdamCrowdHumanDataset
from .odgt import OdgtError, dump_odgt, load_odgt, parse_odgt

__all__ = ['OdamCrowdHumanDataset', 'OdgtError', 'load_odgt', 'dump_odgt',
           'parse_odgt']
