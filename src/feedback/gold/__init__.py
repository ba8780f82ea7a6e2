"""Gold: defect aggregates folded from silver, and the replay of late events."""
