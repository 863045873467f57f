"""A trained model and everything that uses one without training it: the soft-voting ensemble of members
(ensemble.py), their probabilities, calibration and TTA views (probabilities.py), tensors in and out and the compute
precision (inference.py), turning image files into inputs (preprocess.py), the "I don't know" flag (ood.py), and
the self-describing run folder that stores it all (runs.py: `load`, `pretrained`)."""
