"""seem: universal promptable image segmentation (SEEM and Semantic-SAM) in clean, device-agnostic PyTorch.

Public API:
    load(model=None)        a model by registered name, directory in our format, or official checkpoint path
    SEEMModel, SemanticSAM  the model families
    REGISTRY                registered model names (``seem.hub``)
"""

from seem.hub import REGISTRY
from seem.loading import load
from seem.models.seem_model import SEEMModel
from seem.models.semantic_sam import SemanticSAM

__version__ = "0.1.0.dev0"

__all__ = ["REGISTRY", "SEEMModel", "SemanticSAM", "__version__", "load"]
