"""nano-banana-bot: a Discord bot for Google's Nano Banana image models through API relays."""

__version__ = "0.1.0"
