"""Use cases shared by the CLI, jobs, pages and the demo: train, gate and promote, monitor, retrain."""
