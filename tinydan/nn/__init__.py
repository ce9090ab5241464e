"""Neural-network building blocks: Module/Parameter, Linear/Sequential, VECs, DANs and networks of DANs."""
from .dan import SHARINGS, ConvDAN, DANNetwork, InputConvDAN, MLPDAN, vec
from .init import glorot_uniform, lecun_normal, zeros
from .layers import Linear, PlainMLP, ReLU, Sequential, Tanh
from .module import Module, ModuleList, Parameter, functional_call

__all__ = ["Module", "ModuleList", "Parameter", "functional_call", "Linear", "Sequential", "Tanh",
           "ReLU", "PlainMLP", "MLPDAN", "ConvDAN", "InputConvDAN", "DANNetwork", "SHARINGS", "vec",
           "glorot_uniform", "lecun_normal", "zeros"]
