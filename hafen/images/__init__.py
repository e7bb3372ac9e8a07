"""Image builds: base images and the build graph."""
