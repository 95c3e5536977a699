"""The layer types kept as one unit each (spec, torch builder, Keras conversion, compact token in one module);
every registry takes them from `UNITS`. See `cnnlab.spec.units_base`."""
from cnnlab.spec.units import conv_transpose, upsampling
from cnnlab.spec.units_base import Unit

UNITS: tuple[Unit, ...] = (conv_transpose.UNIT, upsampling.UNIT)

__all__ = ["UNITS", "Unit"]
