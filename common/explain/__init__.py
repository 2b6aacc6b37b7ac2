"""Explanations: saliency maps of a classifier (heatmaps) and the gallery that shows them (gallery)."""
