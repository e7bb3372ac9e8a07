"""Who may do what: organisations, their members and roles, API tokens, the audit log."""
