"""The layer types kept as one unit each (spec, torch builder, Keras conversion, compact token in one module);
every registry takes them from `UNITS`. See `cnnlab.spec.units_base`. Layer types not yet moved here live in
`spec.layers`, `spec.build`, `runs.keras_layers` and `spec.compact`."""
from cnnlab.spec.units import conv_transpose, dropout, flatten, global_pooling, upsampling
from cnnlab.spec.units_base import Unit

UNITS: tuple[Unit, ...] = (global_pooling.UNIT, flatten.UNIT, dropout.UNIT, conv_transpose.UNIT, upsampling.UNIT)
BY_TYPE: dict[str, Unit] = {unit.spec.__name__: unit for unit in UNITS}

__all__ = ["BY_TYPE", "UNITS", "Unit"]
