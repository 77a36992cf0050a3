"""Runtime helpers every layer above may use: device and precision, loader workers, seeding,
model wrappers (DDP, channels-last, compile), torch.distributed, and file writes that fail cleanly."""
