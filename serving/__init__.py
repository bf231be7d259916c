"""The BentoML service of the platform's champions, and how it is packaged."""
