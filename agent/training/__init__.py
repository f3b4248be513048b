"""Training of the driving model: typed config, stages, resume, TensorBoard, checkpoints."""
