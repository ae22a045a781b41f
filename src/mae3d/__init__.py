"""mae3d: masked auto-encoder pre-training of 3D CNNs, transferred into nnU-Net v2."""

__version__ = "0.1.0"
