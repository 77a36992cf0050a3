"""vocseg: train, evaluate, compare and ship semantic-segmentation models on PASCAL VOC 2012.

The public API, importable from ``vocseg`` itself::

    import vocseg

    model = vocseg.create_model("transfer_unet", num_classes=21, aspp=True, pretrained=False)
    result = vocseg.train(vocseg.Config(model="fcn", epochs=2, out="runs/fcn"))
    logits = vocseg.predict_logits(model.eval(), images, tta="flip")

Names are loaded on first use (PEP 562), so ``vocseg --version`` and ``import vocseg`` stay fast; the
package's layers are listed in tests/test_layers.py.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .version import __version__

# Public name -> the module that defines it.
_API = {
    "Config": "vocseg.config",
    "load_config": "vocseg.config",
    "VocsegError": "vocseg.errors",
    "create_model": "vocseg.models",
    "list_models": "vocseg.models",
    "register_model": "vocseg.models",
    "ConfusionMatrix": "vocseg.metrics",
    "VOCSegmentation": "vocseg.data.voc",
    "generate_synthetic_voc": "vocseg.data.synthetic",
    "predict_logits": "vocseg.evaluation.inference",
    "evaluate_checkpoint": "vocseg.evaluation.evaluate",
    "load_model": "vocseg.checkpoint",
    "train": "vocseg.training.train",
    "TrainResult": "vocseg.training.train",
    "RunDir": "vocseg.rundir",
    "predict": "vocseg.deploy.predict",
    "export_model": "vocseg.deploy.export",
    "compare": "vocseg.study.compare",
    "reproduce": "vocseg.study.reproduce",
}
__all__ = [
    "__version__", "Config", "load_config", "VocsegError", "create_model", "list_models", "register_model",
    "ConfusionMatrix", "VOCSegmentation", "generate_synthetic_voc", "predict_logits", "evaluate_checkpoint",
    "load_model", "train", "TrainResult", "RunDir", "predict", "export_model", "compare", "reproduce",
]  # fmt: skip

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ loads the same names
    from .checkpoint import load_model
    from .config import Config, load_config
    from .data.synthetic import generate_synthetic_voc
    from .data.voc import VOCSegmentation
    from .deploy.export import export_model
    from .deploy.predict import predict
    from .errors import VocsegError
    from .evaluation.evaluate import evaluate_checkpoint
    from .evaluation.inference import predict_logits
    from .metrics import ConfusionMatrix
    from .models import create_model, list_models, register_model
    from .rundir import RunDir
    from .study.compare import compare
    from .study.reproduce import reproduce
    from .training.train import TrainResult, train


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'vocseg' has no attribute {name!r}; the public API is: {', '.join(_API)}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
