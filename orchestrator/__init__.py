"""labeljob: crowdsourced bounding-box labeling jobs, from a bucket of images to training-ready outputs."""

__version__ = "0.1.0"
