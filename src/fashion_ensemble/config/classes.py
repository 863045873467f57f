"""Fashion-MNIST's ten classes, in label order, and the upper-body garments the paper says get confused."""

CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
SIMILAR_CLASSES = ("T-shirt/top", "Pullover", "Coat", "Shirt")
