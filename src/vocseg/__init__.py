"""vocseg: train, evaluate, compare and ship semantic-segmentation models on PASCAL VOC 2012."""

__version__ = "0.1.0"
