"""Tiled: reduced runs published to a Tiled server, and curve stacks served by one."""
