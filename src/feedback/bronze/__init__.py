"""Bronze: landing files parsed against the event contract, deduplicated, validated, quarantined."""
