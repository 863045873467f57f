"""Training one member: the loop with early stopping and weight averaging (trainer.py), the LC3 learning-rate
schedule (schedule.py), augmentation early in training (augment.py), checkpoints to resume from (checkpoint.py),
and several processes or machines (distributed.py)."""
