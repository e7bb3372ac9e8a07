"""The REST API, versioned: /api/v1/ is `v1.api`."""
