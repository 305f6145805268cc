"""Plain ``nn.Module`` networks of the paper; they know nothing of Lightning."""
from talkinghead.nets.discriminator import ProjectionDiscriminator
from talkinghead.nets.embedder import Embedder
from talkinghead.nets.generator import Generator

__all__ = ["Embedder", "Generator", "ProjectionDiscriminator"]
