"""Look inside a model: response maps, kernels, Grad-CAM, saliency, top losses (arrays), metrics, and figures."""
from cnnlab.explain.maps import (
    TopLosses,
    backbone_stages,
    conv_layers,
    feature_maps,
    filters,
    grad_cam,
    saliency,
    top_losses,
)

__all__ = ["TopLosses", "backbone_stages", "conv_layers", "feature_maps", "filters", "grad_cam", "saliency", "top_losses"]
