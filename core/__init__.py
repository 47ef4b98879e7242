"""maskd compute core: the BiRefNet model, the cut-out pipeline, refinement and compositing.

No sockets and no editor code live here; everything is a function of arrays.
"""
