"""Training a model from a Config: the loop (train.py), one epoch (step.py), the LR schedule and time
budget (schedule.py pure, lr_schedule.py applied), model and optimizer builders, weight averaging and
TensorBoard logging."""
