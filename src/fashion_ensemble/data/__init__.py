"""Data sets: which reader a source needs (sources.py), Fashion-MNIST's and other IDX files (idx.py), folders of
images in class sub-folders (imagefolder.py), and the protocols' train/validation/test splits with their facts
(split.py)."""
