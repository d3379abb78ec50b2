"""Training: the three-stage CSDN recipe."""
