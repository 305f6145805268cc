"""Table 1 (evaluate) and the cross-identity protocol (crossid)."""
