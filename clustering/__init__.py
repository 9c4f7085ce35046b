"""Clustering algorithms, apart from Lightning: k-means backends, texture descriptors, label alignment."""
