"""Where images come from and how they become model input: Fashion-MNIST, folders and CSV, photo preprocessing,
training-batch transforms. Imports nothing above config and utils."""
