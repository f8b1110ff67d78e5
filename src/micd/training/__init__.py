"""Training: the one loop, its run guard (lock, signals), the runs a configuration plans, memory needs."""
