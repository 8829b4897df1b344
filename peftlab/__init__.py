"""peftlab: compare parameter-efficient fine-tuning methods against full fine-tuning."""

__version__ = "0.1.0"
