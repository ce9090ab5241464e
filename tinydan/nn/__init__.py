"""Neural-network building blocks: Module/Parameter, VECs, DANs and networks of DANs."""
from .dan import SHARINGS, ConvDAN, DANNetwork, InputConvDAN, MLPDAN, vec
from .init import glorot_uniform, lecun_normal, zeros
from .module import Module, ModuleList, Parameter, functional_call

__all__ = ["Module", "ModuleList", "Parameter", "functional_call", "MLPDAN", "ConvDAN",
           "InputConvDAN", "DANNetwork", "SHARINGS", "vec", "glorot_uniform", "lecun_normal",
           "zeros"]
