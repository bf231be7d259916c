"""Serving: the Bento of the current champions, the jobs that move and package them, and the
sensor that rebuilds the Bento when a champion changes."""

GROUP = "serving"
OWNERS = ["team:platform"]
