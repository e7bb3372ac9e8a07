"""Instances: models, validation, naming, stack rendering and the service layer."""
