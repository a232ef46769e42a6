from .odam_atss_head import OdamATSSHead
from .odam_fcos_head import OdamFCOSHead
from .odam_retina_head import OdamRetinaHead

__all__ = ['OdamFCOSHead', 'OdamRetinaHead', 'OdamATSSHead']
