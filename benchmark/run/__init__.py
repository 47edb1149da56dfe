"""Running a grid: planning, exactly-once claims, cells, tuning trials, training, the probe, the MLflow store."""
