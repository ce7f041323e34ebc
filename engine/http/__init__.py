"""The HTTP front door (aiohttp): its routes, the layers its connections pass through, API keys, image URLs, /ready."""
