"""Model registry. Importing this package registers every architecture."""

from . import (
    fcn,  # noqa: F401  (registers "fcn", Table 1)
    torchvision_models,  # noqa: F401  (registers torchvision's fcn/deeplabv3/lraspp models)
    transfer,  # noqa: F401  (registers "transfer", Table 3)
    transfer_unet,  # noqa: F401  (registers "transfer_unet")
    unet,  # noqa: F401  (registers "unet", Table 4)
    unpool,  # noqa: F401  (registers "unpool", Table 2)
)
from .common import count_parameters
from .registry import CompileSpeed, ModelEntry, create_model, get_model_entry, list_models, register_model
from .summary import count_gflops, format_model_table, model_table
from .torchvision_models import pretrained_model

__all__ = [
    "create_model",
    "list_models",
    "register_model",
    "get_model_entry",
    "ModelEntry",
    "CompileSpeed",
    "count_parameters",
    "model_table",
    "format_model_table",
    "count_gflops",
    "pretrained_model",
]
