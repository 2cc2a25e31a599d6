"""TurboVSR's scale-out: a video cut into segments (`turbovsr plan`), each segment upscaled on
whichever node of a Ray cluster is free (`turbovsr segment`), the result joined (`turbovsr
join`). The same per-segment command runs as a Kubernetes Indexed Job or a Slurm array
(farm/k8s, farm/slurm)."""

from .ray_driver import main, segment_command

__all__ = ["main", "segment_command"]
