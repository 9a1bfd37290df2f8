"""Containers: the engine (crun + overlayfs + a monitor per container), no HTTP here.

Import the engine from `toolbox_agent.containers.engine`: this package's own import stays
empty so the monitor process (shim.py) starts without loading asyncio and the engine.
"""
