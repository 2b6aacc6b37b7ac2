"""Networks: encoders, heads, and the one function that loads weights into them."""
from models.encoders import ARCHITECTURES, ResNetEncoder
from models.heads import ProjectionHead, linear_head

__all__ = ["ARCHITECTURES", "ResNetEncoder", "ProjectionHead", "linear_head"]
