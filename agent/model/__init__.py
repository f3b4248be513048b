"""The learned driving model: camera encoder, perception head, truncated-diffusion planner."""
