"""Meta-learning: the Trainer's run (train), the networks, losses, module and Trainer built from config (build),
the loggers (loggers), the cluster launcher (launch)."""
